"""The client library against a real server over TLS: discovery, typed results, the exception
tree, the asyncio twin, and failures (wrong CA, server down, wrong token)."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time

import copy_offload.client as co
import pytest
from copy_offload.client import discover

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_exports_are_pinned():
    assert sorted(co.__all__) == sorted([
        "AsyncClient", "BadRequest", "Client", "ConfigurationError", "Conflict", "ConnectError",
        "CopyOffloadError", "NotAcceptable", "NotFound", "ServerConfig", "ServerError", "Status",
        "TLSError", "Timeout", "TransportError", "Unauthorized", "WaitTimeout", "discover",
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
    with pytest.raises(co.ConfigurationError, match="1 to 65535, not 99999"):
        discover(env={"NNF_CONTAINER_LAUNCHER": "h", "NNF_CONTAINER_PORTS": "99999"})
    for token in ("abc\r\nX-Injected: 1", "tok\x00", "t\u00e9t", "a b"):
        with pytest.raises(co.ConfigurationError, match="characters no token has") as info:
            co.Client(host="h", port=1, tls=False, token=token, env={})
        assert token not in str(info.value)
    with co.Client(host="a..b", port=1, tls=False, env={}) as client, \
            pytest.raises(co.ConnectError, match="'a..b' is not a valid host name"):
        client.hello()


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


def test_kept_alive_connection_with_a_descriptor_above_1023(mock_server):
    """An application with many files open: the reused connection's descriptor is >= 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("the hard limit on open files (%d) is below 1200" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = []
    try:
        while not filler or filler[-1] < 1030:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        with co.Client(**mock_server.client_kwargs()) as client:
            assert client.hello() == "hello back at ya"
            assert client.list() == []  # over the kept-alive connection, checked idle first
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


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
    with co.Client(**{**kwargs, "token": None}) as client, pytest.raises(co.Unauthorized, match="unauthorized") as info:
        client.hello()
    assert info.value.message == "unauthorized" and "no token was set" in info.value.hint
    assert "DW_WORKFLOW_TOKEN" in str(info.value)


def test_tls_failures_are_transport_errors(mock_server, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    from support import Material

    stranger = Material(str(other))
    with co.Client(**{**mock_server.client_kwargs(), "ca_file": stranger.cert}) as client, \
            pytest.raises(co.TLSError) as info:
        client.hello()
    assert "the CA file used was %s" % stranger.cert in str(info.value) and "--ca" in str(info.value)
    with pytest.raises(co.ConfigurationError, match="CA certificate"):
        co.Client(**{**mock_server.client_kwargs(), "ca_file": str(tmp_path / "missing.pem")})


def test_tls_versus_plain_says_which(server_factory):
    plain = server_factory("mock", tls=False)
    # A plain server waits for a request head the TLS hello never completes: the handshake times out.
    with co.Client(**{**plain.client_kwargs(), "tls": True, "ca_file": plain.material.cert}, timeout=2) as client, \
            pytest.raises(co.Timeout, match="did not answer the TLS handshake.*--no-tls"):
        client.hello()
    tls = server_factory("mock")
    with co.Client(**{**tls.client_kwargs(), "tls": False}) as client, \
            pytest.raises(co.TransportError, match="leave out --no-tls"):
        client.hello()


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
    assert r.returncode == 3 and "CA certificate" in r.stderr and "Traceback" not in r.stderr


class FakeTime:
    """A clock and sleeps for wait(): time passes only when the client sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def status_requests(server, name: str, client) -> int:
    """How many status requests for ``name`` the server logged (all of them: a later hello's
    line comes after every earlier request's)."""
    client.hello()
    deadline = time.monotonic() + 30
    while "GET /hello" not in server.log.split("/status/" + name)[-1]:
        assert time.monotonic() < deadline, server.log
        time.sleep(0.05)
    return sum(1 for line in server.log_lines if "GET /status/%s " % name in line)


def test_wait_on_a_server_that_answers_at_once_polls_once_a_second(server_factory):
    """The reference mock answers status at once whatever maxWaitSecs says: wait() must not spin."""
    server = server_factory("mock", extra=["--log-level", "debug"])
    fake = FakeTime()
    with co.Client(**server.client_kwargs(), clock=fake.clock, sleep=fake.sleep) as client:
        name = client.copy("/a", "/b")
        with pytest.raises(co.WaitTimeout) as info:
            client.wait(name, timeout=10)
        assert info.value.status.state == "running" and not info.value.status.done
        assert info.value.name == name and isinstance(info.value, co.Timeout)
        assert fake.now == pytest.approx(10.0) and max(fake.slept) <= 1.0
        assert status_requests(server, name, client) == 11  # t = 0, 1, ..., 10
        client.cancel(name)


def test_async_wait_polls_once_a_second_too(server_factory):
    server = server_factory("mock", extra=["--log-level", "debug"])
    fake = FakeTime()

    async def go():
        async with co.AsyncClient(**server.client_kwargs(), clock=fake.clock, sleep=fake.async_sleep) as client:
            name = await client.copy("/a", "/b")
            with pytest.raises(co.WaitTimeout) as info:
                await client.wait(name, timeout=5, on_progress=seen.append)
            return name, info.value

    seen = []
    name, error = asyncio.run(go())
    assert error.status.state == "running" and len(seen) == 6 and fake.now == pytest.approx(5.0)
    with co.Client(**server.client_kwargs()) as client:
        assert status_requests(server, name, client) == 6
        client.cancel(name)


def test_a_dry_run_can_be_waited_for(mock_server):
    """Both mocks forget a finished request at once (404): right after our own dry run, that is done."""
    with co.Client(**mock_server.client_kwargs()) as client:
        name = client.copy("/a", "/b", dryrun=True)
        final = client.wait(name, timeout=60)
        assert final.ok and "dry run" in final.message
        with pytest.raises(co.NotFound):
            client.wait("mock-rabbit-01--nnf-copy-offload-node-99")  # not ours: still an error


def test_a_hand_made_config_sends_the_host_name(mock_server):
    config = co.ServerConfig(host=mock_server.client_kwargs()["host"], port=mock_server.port,
                             token=mock_server.material.token, ca_file=mock_server.material.cert)
    assert config.compute_name == socket.gethostname()
    with co.Client(config) as client:
        client.cancel(client.copy("/a", "/b"))


class RecordingServer:
    """Plain HTTP/1.1 on loopback that keeps every request's body and names each copy ``rec--0``.

    Connections are kept alive (``connections`` counts them) unless ``hang_up``: then it closes
    each one after its answer without saying so, as a server that timed out an idle one does.
    """

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nname=rec--0\n"

    def __init__(self, hang_up: bool = False) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.hang_up = hang_up
        self.requests = []
        self.connections = 0
        self.hung_up = threading.Semaphore(0)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        return
                    data += piece
                head, _, data = data.partition(b"\r\n\r\n")
                match = re.search(rb"Content-Length: (\d+)", head)
                length = int(match.group(1)) if match else 0
                while len(data) < length:
                    data += conn.recv(65536)
                body, data = data[:length], data[length:]
                self.requests.append(json.loads(body) if body else head.split(b" ")[1].decode())
                conn.sendall(self.ANSWER)
                if self.hang_up:
                    conn.close()
                    self.hung_up.release()
                    return

    def close(self) -> None:
        self.sock.close()


def test_verify_asks_for_the_verify_profile():
    recorder = RecordingServer()
    with co.Client(host="127.0.0.1", port=recorder.port, tls=False, env={}) as client:
        assert client.copy("/a", "/b", verify=True) == "rec--0"
        assert client.copy("/a", "/b") == "rec--0"
        with pytest.raises(ValueError, match="cannot be combined with profile 'fast'"):
            client.copy("/a", "/b", verify=True, profile="fast")
    assert [r["dmProfile"] for r in recorder.requests] == ["verify", ""]
    r = subprocess.run([sys.executable, "-m", "copy_offload.client.cli", "--no-tls", "--host", "127.0.0.1", "--port",
                        str(recorder.port), "copy", "/a", "/b", "--verify"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "DW_WORKFLOW_TOKEN": "t"})
    assert (r.returncode, r.stdout) == (0, "rec--0\n") and recorder.requests[-1]["dmProfile"] == "verify"
    recorder.close()


@pytest.mark.parametrize("hang_up", [False, True])
def test_one_kept_alive_connection_and_a_new_one_when_the_server_hung_up(hang_up):
    recorder = RecordingServer(hang_up=hang_up)
    with co.Client(host="127.0.0.1", port=recorder.port, tls=False, env={}) as client:
        for _ in range(3):
            assert client.copy("/a", "/b") == "rec--0"
            assert not hang_up or recorder.hung_up.acquire(timeout=30)  # closed while idle
        client.cancel("rec--0 x/y")  # a name with a space cannot break the request line
    assert recorder.connections == (4 if hang_up else 1) and len(recorder.requests) == 4
    assert recorder.requests[-1] == "/cancel/rec--0%20x/y"
    recorder.close()


@pytest.mark.parametrize("module", ["copy_offload.client", "copy_offload.client.wire", "copy_offload.client.cli"])
def test_importing_the_client_loads_no_heavy_library(module):
    """Start-up cost: a job step that calls the client once pays for every import."""
    code = "import sys, %s; print(sorted(m for m in ('httpx', 'tqdm', 'asyncio') if m in sys.modules))" % module
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "[]\n"


REFERENCE_SERVER = os.environ.get("COPY_OFFLOAD_REFERENCE_SERVER", "")


@pytest.mark.reference
@pytest.mark.skipif(not (REFERENCE_SERVER and os.access(REFERENCE_SERVER, os.X_OK)),
                    reason="set COPY_OFFLOAD_REFERENCE_SERVER to a built nnf-dm copy-offload server binary")
def test_wait_against_the_reference_mock(material, tmp_path):
    """The reference Go server's mock answers every status at once and forgets a dry run at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "NNF_NODE_NAME": "mock-rabbit-01", "ENVIRONMENT": "test", "DW_WORKFLOW_NAME": "wf",
           "DW_WORKFLOW_NAMESPACE": "default"}
    with open(tmp_path / "reference.log", "w") as log:
        proc = subprocess.Popen([REFERENCE_SERVER, "-mock", "-addr", "127.0.0.1:%d" % port, "-cert", material.cert,
                                 "-cakey", material.key, "-tokenkey", material.token_key], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(tmp_path))
    try:
        deadline = time.monotonic() + 30
        while "Ready" not in (tmp_path / "reference.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "reference.log").read_text()
            time.sleep(0.05)
        fake = FakeTime()
        kwargs = dict(host="127.0.0.1", port=port, ca_file=material.cert, token=material.token, env={})
        with co.Client(**kwargs, clock=fake.clock, sleep=fake.sleep) as client:
            name = client.copy("/a", "/b")
            seen = []
            with pytest.raises(co.WaitTimeout):
                client.wait(name, timeout=3, on_progress=seen.append)
            assert len(seen) == 4 and fake.now == pytest.approx(3.0)  # t = 0, 1, 2, 3: one request each
            assert client.wait(client.copy("/a", "/b", dryrun=True)).ok
            client.cancel(name)
    finally:
        proc.terminate()
        proc.wait(10)
