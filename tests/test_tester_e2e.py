"""The reference e2e script (nnf-dm e2e-mocked.sh) through ``copy-offload-tester``, in its four
modes: no TLS/no token, token only, TLS only, both."""

from __future__ import annotations

import pytest
from support import run_tool

TESTER = "copy_offload.client.tester"
MODES = [(False, False), (False, True), (True, False), (True, True)]


@pytest.mark.parametrize("tls, token", MODES, ids=["plain", "token", "tls", "tls+token"])
def test_reference_e2e(server_factory, tls, token):
    server = server_factory("mock", tls=tls, token=token)
    env = server.client_env(token=token)
    common = ["-x", server.material.cert] if tls else ["-s"]

    def tester(*args):
        return run_tool(TESTER, [*common, *args], env)

    r = tester("-H")
    assert (r.returncode, r.stdout) == (0, "hello back at ya\n")
    r = tester("-l")
    assert (r.returncode, r.stdout) == (0, "")
    r = tester("-c", "nnf-copy-offload-node-2")
    assert r.returncode == 1
    assert r.stdout == "unable to cancel request: request not found\n"
    r = tester("-o", "-S", "/mnt/nnf/ooo", "-D", "/lus/foo")
    assert (r.returncode, r.stdout) == (0, "mock-rabbit-01--nnf-copy-offload-node-0\n")
    job1 = r.stdout.strip()
    r = tester("-q", "-j", job1)
    assert r.returncode == 0
    assert r.stdout == ("state: running\nstatus: unknown status\nmessage: (null)\ncommand: /bin/bash -c sleep 300\n"
                        "progress: 0\nelapsed time: (null)\nlast message: (null)\nlast message time: (null)\n"
                        "start time: 2025-04-01 11:46:36.535519 -0500 CDT\nend time: (null)\n")
    r = tester("-l")
    assert r.returncode == 0 and r.stdout.count("\n") == 1
    r = tester("-c", job1)
    assert (r.returncode, r.stdout) == (0, "")
    r = tester("-l")
    assert (r.returncode, r.stdout) == (0, "")
    r = tester("-R", "-S", "/mnt/nnf/ooo", "-D", "/lus/foo")
    assert r.returncode == 0, r.stderr
    assert "sticky-test: PASS" in r.stderr
    if tls:
        # Without the CA the client must refuse the server.
        r = run_tool(TESTER, ["-x", "/nonexistent/cert.pem", "-H"], env)
        assert r.returncode == 1
        r = run_tool(TESTER, ["-H"], env)  # default /etc/nnf-dm-usercontainer/cert.pem: absent here
        assert r.returncode == 1
    # Shutdown: the server exits 0.
    r = tester("-X")
    assert r.returncode == 0, r.stderr
    assert server.wait(10) == 0


def test_tester_usage_and_errors(mock_server):
    env = mock_server.client_env()
    r = run_tool(TESTER, ["-Z"], env)
    assert r.returncode == 1 and r.stderr.startswith("Usage: ")
    r = run_tool(TESTER, ["-o", "-S", "/a"], env)
    assert r.returncode == 1 and "Usage: " in r.stderr
    r = run_tool(TESTER, ["-x", mock_server.material.cert], env)
    assert (r.returncode, r.stderr) == (1, "What action?\n")
    r = run_tool(TESTER, ["-q"], env)
    assert r.returncode == 1 and "Usage: " in r.stderr
    no_port = {k: v for k, v in env.items() if k != "NNF_CONTAINER_PORTS"}
    r = run_tool(TESTER, ["-H"], no_port)
    assert (r.returncode, r.stderr) == (1, "Unable to get server port from environment variable NNF_CONTAINER_PORTS\n")


def test_tester_verbose_and_status_404(mock_server):
    env = mock_server.client_env()
    common = ["-x", mock_server.material.cert]
    r = run_tool(TESTER, [*common, "-v", "-H"], env)
    assert r.stdout == "hello back at ya\nret 0, http_code 200\n"
    r = run_tool(TESTER, [*common, "-v", "-q", "-j", "nope"], env)
    assert r.returncode == 1
    assert r.stdout == "The response object is empty.\nret 1, http_code 404\n"
    assert r.stderr == "\n"


def test_tester_copy_error_goes_to_stderr(mock_server):
    env = mock_server.client_env()
    r = run_tool(TESTER, ["-x", mock_server.material.cert, "-o", "-S", "/a", "-D", "/b", "-m", "-7"], env)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "slots must be -1 (defer to profile), 0 (disable), or a positive integer\n\n"


def test_tester_bad_token_and_shutdown_refused(mock_server, tmp_path):
    env = mock_server.client_env()
    bad = tmp_path / "bad-token"
    bad.write_text("not.a.token\n")
    r = run_tool(TESTER, ["-x", mock_server.material.cert, "-t", str(bad), "-H"], env)
    assert r.returncode == 1 and r.stdout.startswith("token parse failed: token is malformed")
    run_tool(TESTER, ["-x", mock_server.material.cert, "-o", "-S", "/a", "-D", "/b"], env)
    r = run_tool(TESTER, ["-x", mock_server.material.cert, "-X"], env)
    assert (r.returncode, r.stderr) == (1, "Cannot shutdown: active copy-offload requests are still running.\n")


def test_tester_server_down(mock_server):
    env = mock_server.client_env()
    mock_server.stop()
    r = run_tool(TESTER, ["-x", mock_server.material.cert, "-v", "-H"], env)
    assert r.returncode == 1
    assert r.stdout == "ret 1, http_code -1\n"
    assert r.stderr.startswith("libcurl: (7) ")


def test_client_side_failures_in_the_reference_words(mock_server, tmp_path):
    """The C tester's texts for a CA file missing or wrong, a token file it cannot stat or read,
    and a connection reset (libcurl 35 in the handshake, 56 after), so scripts that grep them
    work (checked against the real C tester in the reference tier)."""
    from support import client_failure_cases, run_tool

    listener, cases = client_failure_cases(mock_server, tmp_path)
    try:
        for args, env, stderr in cases:
            ours = run_tool("copy_offload.client.tester", args, env)
            assert (ours.returncode, ours.stdout, ours.stderr) == (1, "", stderr), args
    finally:
        listener.close()
