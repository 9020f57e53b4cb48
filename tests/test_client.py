"""The client library against a real server over TLS: discovery, typed results, the exception
tree, the asyncio twin, and failures (wrong CA, server down, wrong token)."""

from __future__ import annotations

import ast
import asyncio
import pathlib

import copy_offload.client as co
import pytest
from copy_offload.client import discover

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_exports_are_pinned():
    assert sorted(co.__all__) == sorted([
        "AsyncClient", "BadRequest", "Client", "ConfigurationError", "Conflict", "ConnectError",
        "CopyOffloadError", "NotAcceptable", "NotFound", "ServerConfig", "ServerError", "Status",
        "TLSError", "Timeout", "TransportError", "Unauthorized", "discover",
    ])


def test_discovery_like_libcopyoffload(tmp_path):
    conf = tmp_path / "local-rabbit.conf"
    conf.write_text("rabbit-node-1\n")
    token = tmp_path / "token"
    token.write_text("tok\n")
    env = {"NNF_CONTAINER_PORTS": "5000,5001"}
    config = discover(env=env, local_rabbit_conf=str(conf))
    assert (config.host, config.port, config.token) == ("rabbit-node-1", 5000, None)
    assert config.ca_file == "/etc/nnf-dm-usercontainer/cert.pem" and config.base_url == "https://rabbit-node-1:5000"
    env.update(NNF_CONTAINER_LAUNCHER="rabbit-launcher", DW_WORKFLOW_TOKEN="secret")
    config = discover(env=env, local_rabbit_conf=str(conf))
    assert (config.host, config.token) == ("rabbit-launcher", "secret")
    assert "secret" not in repr(config)
    assert discover(env=env, token_file=str(token)).token == "tok"
    assert discover(env=env, host="h", port=1, tls=False).base_url == "http://h:1"
    with pytest.raises(co.ConfigurationError, match="NNF_CONTAINER_LAUNCHER or local file"):
        discover(env={"NNF_CONTAINER_PORTS": "1"}, local_rabbit_conf=str(tmp_path / "absent"))
    with pytest.raises(co.ConfigurationError, match="environment variable NNF_CONTAINER_PORTS"):
        discover(env={"NNF_CONTAINER_LAUNCHER": "h"})
    with pytest.raises(co.ConfigurationError, match="port number"):
        discover(env={"NNF_CONTAINER_LAUNCHER": "h", "NNF_CONTAINER_PORTS": "http"})


def test_blocking_client_round_trip(mock_server):
    with co.Client(**mock_server.client_kwargs()) as client:
        assert client.hello() == "hello back at ya"
        assert client.list() == []
        name = client.copy("/mnt/nnf/a", "/lus/b", dryrun=False)
        assert name == "mock-rabbit-01--nnf-copy-offload-node-0"
        assert client.list() == [name]
        status = client.status(name)
        assert isinstance(status, co.Status)
        assert (status.state, status.status, status.command) == ("running", "unknown status", "/bin/bash -c sleep 300")
        assert not status.done
        client.cancel(name)
        assert client.list() == []
        with pytest.raises(co.NotFound) as info:
            client.status("nope")
        assert (info.value.status, info.value.message) == (404, "request not found")
        with pytest.raises(co.BadRequest, match="slots must be"):
            client.copy("/a", "/b", slots=-3)
        assert client.shutdown() == "Server shutting down"
    assert mock_server.wait() == 0


def test_conflict_on_busy_shutdown(mock_server):
    with co.Client(**mock_server.client_kwargs()) as client:
        client.copy("/a", "/b")
        with pytest.raises(co.Conflict, match="requests in progress"):
            client.shutdown()


def test_async_client(mock_server):
    async def go():
        async with co.AsyncClient(**mock_server.client_kwargs()) as client:
            assert await client.hello() == "hello back at ya"
            names = await asyncio.gather(*(client.copy("/a", "/b/%d" % i) for i in range(5)))
            assert sorted(await client.list()) == sorted(names)
            for name in names:
                await client.cancel(name)
            assert await client.list() == []

    asyncio.run(go())


def test_wrong_token_and_no_token(mock_server):
    kwargs = mock_server.client_kwargs()
    with co.Client(**{**kwargs, "token": "abc.def.ghi"}) as client, pytest.raises(co.Unauthorized) as info:
        client.hello()
    assert "token parse failed" in info.value.message
    with co.Client(**{**kwargs, "token": None}) as client, pytest.raises(co.Unauthorized, match="unauthorized"):
        client.hello()


def test_tls_failures_are_transport_errors(mock_server, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    from support import Material

    stranger = Material(str(other))
    with co.Client(**{**mock_server.client_kwargs(), "ca_file": stranger.cert}) as client, \
            pytest.raises(co.TLSError):
        client.hello()
    with pytest.raises(co.ConfigurationError, match="CA certificate"):
        co.Client(**{**mock_server.client_kwargs(), "ca_file": str(tmp_path / "missing.pem")})


def test_server_down_is_connect_error(mock_server):
    kwargs = mock_server.client_kwargs()
    mock_server.stop()
    with co.Client(**kwargs, timeout=5) as client, pytest.raises(co.ConnectError) as info:
        client.hello()
    assert isinstance(info.value.__cause__, Exception)
    assert not type(info.value).__module__.startswith("httpx")


@pytest.mark.parametrize("folder", ["client", "flux_plugin"])
def test_importable_on_python_39(folder):
    """The client and the Flux side run on site Pythons (3.9 on RHEL 9): no newer syntax."""
    for path in (ROOT / folder).rglob("*.py"):
        source = path.read_text()
        ast.parse(source, filename=str(path), feature_version=(3, 9))
        if " | " in source and "->" in source:
            assert "from __future__ import annotations" in source, path


def test_cli_json_round_trip(mock_server):
    from support import run_tool

    env = mock_server.client_env()
    base = ["--ca", mock_server.material.cert, "--json"]
    r = run_tool("copy_offload.client.cli", [*base, "hello"], env)
    assert (r.returncode, r.stdout) == (0, '{"hello": "hello back at ya"}\n')
    r = run_tool("copy_offload.client.cli", [*base, "copy", "/a", "/b"], env)
    assert r.returncode == 0 and '"name": "mock-rabbit-01--' in r.stdout
    r = run_tool("copy_offload.client.cli", [*base, "status", "nope"], env)
    assert r.returncode == 1 and '"http_status": 404' in r.stdout
    assert r.stderr == "copy-offload: request not found (HTTP 404)\n"
    r = run_tool("copy_offload.client.cli", ["--ca", "/absent.pem", "hello"], env)
    assert r.returncode == 1 and "CA certificate" in r.stderr and "Traceback" not in r.stderr
