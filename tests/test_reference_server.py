"""The differential tier: the reference Go server (nnf-dm's copy-offload, built by whoever runs
this) and ours, both in mock mode with the same TLS material and token, get the same raw
requests; their answers (status, Content-Type/Location, body) must be identical except for the
named differences in ``DELIBERATE`` (each explained in docs/compatibility.md).

Skipped unless ``COPY_OFFLOAD_REFERENCE_SERVER`` names that binary: the project ships no copy of
the reference and no recipe for building it. ``COPY_OFFLOAD_REFERENCE_REPORT=FILE`` writes every
request's pair of answers there (JSON) for a look at what differs.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
from typing import Dict, Iterator, List, Tuple

import pytest
import reference_cases as rc
from copy_offload.server import pki
from hardening_support import exchange, start_server
from support import HOST

GO_SERVER = os.environ.get("COPY_OFFLOAD_REFERENCE_SERVER", "")
REPORT = os.environ.get("COPY_OFFLOAD_REFERENCE_REPORT", "")
pytestmark = [
    pytest.mark.reference,
    pytest.mark.skipif(not (GO_SERVER and os.access(GO_SERVER, os.X_OK)),
                       reason="set COPY_OFFLOAD_REFERENCE_SERVER to a built nnf-dm copy-offload server binary"),
]

# Case name -> why our answer differs on purpose (docs/compatibility.md says the same). Empty:
# no request of the differential set is answered differently; the named differences (HTTP/2,
# the body limit, the request timeout) have their own tests below and in test_hardening_http.py.
DELIBERATE: Dict[str, str] = {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class GoServer:
    """The reference server in mock mode on loopback, with the material's certificate and token key."""

    def __init__(self, material, log_path: str) -> None:
        self.port = _free_port()
        env = dict(os.environ, DW_WORKFLOW_NAME="wf", DW_WORKFLOW_NAMESPACE="default",
                   NNF_NODE_NAME="mock-rabbit-01", ENVIRONMENT="test")
        self.log = open(log_path, "w")  # noqa: SIM115 - the server writes to it until stop()
        self.process = subprocess.Popen(
            [GO_SERVER, "-addr", "%s:%d" % (HOST, self.port), "-cert", material.cert, "-cakey", material.key,
             "-tokenkey", material.token_key, "-mock"],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the reference server exited; see %s" % log_path
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the reference server did not listen on %d" % self.port)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def pair(material, tmp_path_factory) -> Iterator[Tuple[GoServer, object]]:
    go = GoServer(material, str(tmp_path_factory.mktemp("go") / "go.log"))
    ours = start_server(material, "mock")
    try:
        yield go, ours
    finally:
        go.stop()
        ours.stop()


@pytest.fixture(scope="module")
def results() -> Iterator[List[dict]]:
    collected: List[dict] = []
    yield collected
    if os.environ.get("COPY_OFFLOAD_REFERENCE_RECORD"):
        golden = {item["name"]: item["record"] for item in collected if "record" in item
                  and not item["name"].startswith("life ")}
        with open(os.path.join(os.path.dirname(__file__), rc.GOLDEN), "w") as handle:
            json.dump(golden, handle, indent=0, sort_keys=True)
            handle.write("\n")
    if REPORT:
        with open(REPORT, "w") as handle:
            json.dump(collected, handle, indent=1)


def _compare(pair, results, cases: List[rc.Case]) -> List[str]:
    """Each case to both servers; the differing ones described. With
    ``COPY_OFFLOAD_REFERENCE_RECORD=1`` the reference's answers are also kept in
    tests/reference_answers.json, which the normal suite (test_conformance.py) replays against
    ours without the reference."""
    go, ours = pair
    context = ssl.create_default_context(cafile=ours.material.cert)
    context.set_alpn_protocols(["http/1.1"])
    differing = []
    for name, data in cases:
        theirs = rc.Answer(exchange(go.port, context, data, 20.0))
        mine = rc.Answer(exchange(ours.port, context, data, 20.0))
        same = theirs.key() == mine.key()
        results.append({"name": name, "same": same, "go": repr(theirs), "ours": repr(mine),
                        "status_same": theirs.status == mine.status, "record": theirs.record()})
        if not same:
            differing.append("%s\n    go:   %r\n    ours: %r" % (name, theirs, mine))
    return differing


def _check(pair, results, cases: List[rc.Case]) -> None:
    differing = _compare(pair, results, cases)
    unexpected = [text for text in differing if text.split("\n")[0] not in DELIBERATE]
    assert not unexpected, "%d of %d answers differ:\n%s" % (len(unexpected), len(cases), "\n".join(unexpected))


def _secret(material) -> bytes:
    with open(material.token_key, "rb") as handle:
        return pki.pem_der(handle.read())


@pytest.mark.parametrize("group", rc.GROUPS)
def test_group(pair, results, material, group):
    _check(pair, results, rc.group_cases(group, material.token, _secret(material)))


def test_plain_http_on_the_tls_port(pair, results, material):
    go, ours = pair
    differing = []
    for name, data in [("plain GET", rc.request("GET", "/hello", material.token)),
                       ("plain POST", rc.request("POST", "/trial", material.token, body=b"{}")),
                       ("plain DELETE", rc.request("DELETE", "/cancel/x", material.token))]:
        theirs = exchange(go.port, None, data)
        mine = exchange(ours.port, None, data)
        results.append({"name": name, "same": theirs == mine, "go": repr(theirs), "ours": repr(mine),
                        "status_same": theirs[:12] == mine[:12]})
        if theirs != mine:
            differing.append("%s: go %r ours %r" % (name, theirs, mine))
    assert not differing, differing


def test_http2_is_a_named_difference(pair, material):
    """Go's server negotiates HTTP/2 through ALPN; ours speaks HTTP/1.1 only (docs/compatibility.md)."""
    go, ours = pair
    chosen = []
    for port in (go.port, ours.port):
        context = ssl.create_default_context(cafile=material.cert)
        context.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection((HOST, port), timeout=10) as sock, \
                context.wrap_socket(sock, server_hostname=HOST) as conn:
            chosen.append(conn.selected_alpn_protocol())
    assert chosen == ["h2", "http/1.1"]


def test_body_limit_is_a_named_difference(pair, material):
    """Go reads any body; ours answers 413 past 1 MiB (docs/compatibility.md)."""
    go, ours = pair
    body = b'{"computeName":""' + b" " * (2 << 20) + b"}"
    data = rc.request("POST", "/trial", material.token, body=body)
    context = ssl.create_default_context(cafile=material.cert)
    theirs = rc.Answer(exchange(go.port, context, data, 60.0))
    mine = rc.Answer(exchange(ours.port, context, data, 60.0))
    assert (theirs.status, theirs.body) == (400, b"compute name must be supplied\n")
    assert (mine.status, mine.body) == (413, b"request body too large\n")


def test_lifecycle(pair, results, material):
    """Last: it shuts both servers down."""
    _check(pair, results, rc.lifecycle_cases(material.token))
    go, ours = pair
    assert go.process.wait(15) == 0
    assert ours.wait(15) == 0
