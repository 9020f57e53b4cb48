"""The reference C ``tester`` (built from nnf-dm's lib-copy-offload by whoever runs this) against
our server. Skipped unless ``COPY_OFFLOAD_REFERENCE_TESTER`` names that binary: the project ships
no copy of the reference and no recipe for building it."""

from __future__ import annotations

import os
import subprocess

import pytest

TESTER = os.environ.get("COPY_OFFLOAD_REFERENCE_TESTER", "")
pytestmark = [
    pytest.mark.reference,
    pytest.mark.skipif(not (TESTER and os.access(TESTER, os.X_OK)),
                       reason="set COPY_OFFLOAD_REFERENCE_TESTER to a built nnf-dm tester binary"),
]


def ref(server, *args, token=True):
    common = ["-x", server.material.cert] if server.tls else ["-s"]
    return subprocess.run([TESTER, *common, *args], env=server.client_env(token=token), capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("tls, token", [(False, False), (False, True), (True, False), (True, True)])
def test_reference_tester_e2e(server_factory, tls, token):
    server = server_factory("mock", tls=tls, token=token)
    assert ref(server, "-H").stdout == "hello back at ya\n"
    assert ref(server, "-l").stdout == ""
    r = ref(server, "-c", "nnf-copy-offload-node-2")
    assert r.returncode == 1 and r.stdout == "unable to cancel request: request not found\n"
    r = ref(server, "-o", "-S", "/mnt/nnf/ooo", "-D", "/lus/foo")
    assert (r.returncode, r.stdout) == (0, "mock-rabbit-01--nnf-copy-offload-node-0\n")
    r = ref(server, "-q", "-j", "mock-rabbit-01--nnf-copy-offload-node-0")
    assert r.returncode == 0 and r.stdout.startswith("state: running\nstatus: unknown status\n")
    assert ref(server, "-c", "mock-rabbit-01--nnf-copy-offload-node-0").returncode == 0
    assert ref(server, "-l").stdout == ""
    assert ref(server, "-R", "-S", "/mnt/nnf/ooo", "-D", "/lus/foo").returncode == 0
    assert ref(server, "-X").returncode == 0
    assert server.wait(10) == 0


def test_reference_and_our_tester_print_the_same(mock_server):
    from support import run_tool

    for args in (["-H"], ["-l"], ["-c", "nope"], ["-q", "-j", "nope"], ["-v", "-o", "-S", "/a", "-D", "/b"],
                 ["-q", "-j", "mock-rabbit-01--nnf-copy-offload-node-0"], ["-o", "-S", "/a", "-D", "/b", "-m", "-4"]):
        theirs = ref(mock_server, *args)
        ours = run_tool("copy_offload.client.tester", ["-x", mock_server.material.cert, *args],
                        mock_server.client_env())
        if args[:2] == ["-v", "-o"]:
            # Each copy makes the next name; compare shape, then move on.
            assert theirs.stdout.replace("node-0", "node-N") == ours.stdout.replace("node-1", "node-N")
            continue
        assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr), args


def test_client_side_failures_print_the_same(mock_server, tmp_path):
    from support import client_failure_cases, run_tool

    listener, cases = client_failure_cases(mock_server, tmp_path)
    try:
        for args, env, _ in cases:
            theirs = subprocess.run([TESTER, *args], env=env, capture_output=True, text=True, timeout=60)
            ours = run_tool("copy_offload.client.tester", args, env)
            assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr), args
    finally:
        listener.close()
