"""Secrets stay secret: file modes, TLS 1.3 only, no token or key in any log, answer or output.

Every server here runs at ``debug`` log level and has its whole log scanned at the end for the
token, its signature, and the token key's and TLS key's base64 and hex (hardening_support).
"""

from __future__ import annotations

import ast
import json
import os
import socket
import ssl
import stat
import subprocess
import sys

import httpx
import pytest
from copy_offload.client import wire
from copy_offload.server import pki
from hardening_support import (
    assert_clean_log,
    auth_headers,
    http_client,
    leaked,
    running_server,
    start_server,
)
from support import HOST, Material, run_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def hostile_umask():
    """Run a child with umask 000, so only the program's own modes protect its files."""
    os.umask(0)


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("writer, expected", [(pki.write_secret, 0o600), (pki.write_public, 0o644)])
def test_writes_never_follow_a_planted_file(tmp_path, writer, expected):
    """A symlink or file planted beside the target (a shared directory) never receives the data."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"")
    target = tmp_path / "token.key"
    for planted in ("%s.tmp-%d" % (target, os.getpid()), "%s.tmp" % target):
        os.symlink(victim, planted)
    writer(str(target), b"SECRET")
    assert victim.read_bytes() == b""
    assert not target.is_symlink() and target.read_bytes() == b"SECRET"
    assert mode(target) == expected
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("token.key.tmp")) == ["token.key",
                                                                                                    "victim"]


def test_admin_files_modes_under_umask_000(tmp_path):
    env = dict(os.environ)
    admin = [sys.executable, "-m", "copy_offload.server.admin"]

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([*admin, *args], env=env, capture_output=True, text=True, timeout=60,
                                preexec_fn=hostile_umask)
        assert result.returncode == 0, result.stderr
        return result

    key = tmp_path / "token.key"
    run("token-key", "--out", str(key))
    token_file = tmp_path / "token"
    run("token", "--key", str(key), "--out", str(token_file))
    tls_dir = tmp_path / "tls" / "new"
    run("tls", "--host", "localhost", "--out", str(tls_dir))
    assert mode(key) == 0o600
    assert mode(token_file) == 0o600
    assert mode(tls_dir / "tls.key") == 0o600
    assert mode(tls_dir / "tls.crt") == 0o644
    assert mode(tls_dir) == 0o700
    # --force over world-readable files: the new secret is 0600 all the same.
    for path in (key, token_file):
        os.chmod(path, 0o666)
    run("token-key", "--out", str(key), "--force")
    run("token", "--key", str(key), "--out", str(token_file), "--force")
    assert mode(key) == 0o600 and mode(token_file) == 0o600
    # The printed token is the only output; no key material on stdout or stderr.
    printed = run("token", "--key", str(key))
    secret = pki.read_token_key(str(key))
    assert printed.stderr == "" and secret.hex() not in printed.stdout
    assert printed.stdout.strip().count(".") == 2


def test_local_state_dir_is_private(tmp_path, material):
    pytest.importorskip("copy_offload.server.local.driver")
    root = tmp_path / "root"
    root.mkdir()
    (root / "f").write_bytes(b"x" * 1000)
    state = tmp_path / "state" / "deep"
    old = os.umask(0)
    try:
        server = start_server(material, "local", ["--allow-root", str(root), "--state-dir", str(state)])
    finally:
        os.umask(old)
    try:
        with http_client(server) as client:
            client.headers.update(auth_headers(material))
            body = {"computeName": "c", "sourcePath": str(root / "f"), "destinationPath": str(root / "g")}
            response = client.post(wire.TRIAL, content=json.dumps(body))
            assert response.status_code == 200, response.text
            name = wire.parse_trial_body(response.text)
            final = client.get(wire.status_path(name, 30), timeout=60)
            assert final.status_code == 200 and '"completed"' in final.text, final.text
        assert mode(state) == 0o700
        files = [os.path.join(base, f) for base, _, names in os.walk(state) for f in names]
        assert files, "no state written"
        for path in files:
            assert mode(path) & 0o077 == 0, (path, oct(mode(path)))
    finally:
        server.stop()
    assert_clean_log(server)


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def server(material):
    with running_server(material) as proc:
        yield proc


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1],
                         ids=["TLSv1.2", "TLSv1.1", "TLSv1.0"])
def test_tls_below_13_is_refused(server, version):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(server.material.cert)
    try:
        context.minimum_version = version
        context.maximum_version = version
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer %s" % version.name)
    with socket.create_connection((HOST, server.port), timeout=5) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname=HOST)


def test_tls_13_with_http11(server):
    context = server.material.context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection((HOST, server.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=HOST) as tls:
        assert tls.version() == "TLSv1.3"
        assert tls.selected_alpn_protocol() == "http/1.1"
        assert tls.compression() is None


def test_plain_http_and_garbage_on_the_tls_port(server):
    for junk in (b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\x05hello", os.urandom(4096)):
        with socket.create_connection((HOST, server.port), timeout=5) as raw:
            raw.sendall(junk)
            raw.settimeout(5)
            try:
                raw.recv(4096)
            except (ConnectionResetError, socket.timeout):
                pass
    with http_client(server) as client:
        assert client.get(wire.HELLO, headers=auth_headers(server.material)).status_code == 200


# --------------------------------------------------------------------------- secrets in texts


def test_token_never_echoed(server):
    """Bad wrappings of the real token are refused without repeating it, in answers and log."""
    token = server.material.token
    wrappings = ["bearer " + token, "Bearer " + token + "x", "Bearer " + token[:-3], "Bearer x" + token,
                 "Basic " + token, "Bearer %s %s" % (token, token), "Bearer " + token.replace(".", "..")]
    with http_client(server) as client:
        for header in wrappings:
            response = client.get(wire.HELLO, headers={wire.AUTH_HEADER: header, wire.VERSION_HEADER: "1.0"})
            assert response.status_code == 401, header[:12]
            assert not leaked(response.text, server.material), header[:12]
            assert token[-12:] not in response.text and token[:40] not in response.text


def test_client_tools_never_print_the_token(server, tmp_path):
    env = server.client_env()
    stranger = Material(str(tmp_path))
    for token in (server.material.token, stranger.token):
        env["DW_WORKFLOW_TOKEN"] = token
        outputs = [
            run_tool("copy_offload.client.cli", ["--ca", server.material.cert, "hello"], env),
            run_tool("copy_offload.client.cli", ["--ca", server.material.cert, "--json", "status", "x--y"], env),
            run_tool("copy_offload.client.tester", ["-v", "-V", "-C", server.material.cert, "-H"], env),
            run_tool("copy_offload.client.cli", ["--ca", str(tmp_path / "tls.crt"), "hello"], env),  # TLS failure
        ]
        for result in outputs:
            text = result.stdout + result.stderr
            assert token not in text and token.rsplit(".", 1)[1] not in text, text[:300]


def test_startup_errors_name_files_not_contents(tmp_path, material):
    bogus = tmp_path / "token.key"
    bogus.write_text("this is not a PEM block but a very secret line 0123456789\n")
    wrong_key = tmp_path / "other.key"
    pki.write_secret(str(wrong_key), pki.generate_tls(["x"])[1])
    for args, needle in [
        (["-cert", material.cert, "-cakey", material.key, "-tokenkey", str(bogus)], "very secret line"),
        (["-cert", material.cert, "-cakey", str(wrong_key), "-tokenkey", material.token_key], None),
    ]:
        result = subprocess.run([sys.executable, "-m", "copy_offload.server", "-addr", "%s:0" % HOST,
                                 "--driver", "mock", *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 1, result.stderr
        assert not leaked(result.stderr, material)
        if needle:
            assert needle not in result.stderr
        with open(wrong_key, "rb") as handle:
            assert all(line.decode() not in result.stderr for line in handle.read().splitlines()
                       if len(line) >= 32 and b"-----" not in line)


def test_auth_module_compares_no_secret_itself():
    """server/auth.py leaves the signature check to pyjwt (hmac.compare_digest, see
    test_hardening_auth): no ``==``/``!=``/``in`` on a token, secret or signature of its own,
    except the cache lookup by SHA-256 digest (its timing reveals nothing about a valid token)."""
    with open(os.path.join(ROOT, "server", "auth.py"), encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    suspicious = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            if names & {"token", "secret", "_secret", "signature", "sig"}:
                suspicious.append(ast.unparse(node))
    assert not suspicious, suspicious


def test_every_server_log_here_is_clean(server):
    """The module's server has now seen valid and invalid tokens; its log is scanned at teardown
    (assert_clean_log); here, once more, while it runs."""
    with http_client(server) as client:
        for _ in range(3):
            assert client.get(wire.HELLO, headers=auth_headers(server.material)).status_code == 200
        client.get(wire.HELLO, headers={wire.AUTH_HEADER: "Bearer " + server.material.token + "!",
                                        wire.VERSION_HEADER: "1.0"})
    assert not leaked(server.log, server.material)


def test_httpx_is_not_asked_to_trust_anything_else(server):
    """A client with the default trust store refuses the self-signed server (no silent verify=False)."""
    with httpx.Client(base_url=server.url, trust_env=False) as client, pytest.raises(httpx.ConnectError):
        client.get(wire.HELLO)
