"""The reference server's own tests (nnf-dm server_test.go), against our -mock server
over real HTTPS with real tokens, plus the HTTP details they rely on."""

from __future__ import annotations

import json
import time

import httpx
import jwt
import pytest
from copy_offload.client import wire
from copy_offload.server import pki

V = {wire.VERSION_HEADER: wire.API_VERSION}
DRY = {"computeName": "rabbit-compute-1", "sourcePath": "/mnt/src", "destinationPath": "/lus/dst", "dryrun": True}
NAME0 = "mock-rabbit-01--nnf-copy-offload-node-0"


@pytest.fixture
def http(mock_server):
    with httpx.Client(base_url=mock_server.url, verify=mock_server.material.context(), timeout=30,
                      headers={**V, "Authorization": "Bearer " + mock_server.material.token}) as client:
        yield client


def test_a_hello(http):
    r = http.get("/hello")
    assert (r.status_code, r.text) == (200, "hello back at ya\n")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"


def test_b_trial(http):
    r = http.post("/trial", content=json.dumps(DRY))
    assert (r.status_code, r.text) == (200, "name=%s\n" % NAME0)
    r = http.post("/trial", content='{"unknown":1}')
    assert (r.status_code, r.text) == (400, "compute name must be supplied\n")


@pytest.mark.parametrize("body, text", [
    ("", "unable to decode data movement request body: EOF\n"),
    ('{"computeName": "c"}', "source path must be supplied\n"),
    ('{"computeName": "c", "sourcePath": "s"}', "destination path must be supplied\n"),
    ('{"computeName": "c", "sourcePath": "s", "destinationPath": "d", "slots": -2}',
     "slots must be -1 (defer to profile), 0 (disable), or a positive integer\n"),
    ('{"computeName": "c", "sourcePath": "s", "destinationPath": "d", "maxSlots": -5}',
     "maxSlots must be -1 (defer to profile), 0 (disable), or a positive integer\n"),
    ('{"computeName": 7}',
     "unable to decode data movement request body: json: cannot unmarshal number into Go struct field "
     "DMRequest.computeName of type string\n"),
    ("[1,2]", "unable to decode data movement request body: json: cannot unmarshal array into Go value of "
     "type driver.DMRequest\n"),
    ("{bad", "unable to decode data movement request body: invalid character 'b' looking for beginning of "
     "object key string\n"),
])
def test_b_trial_bad_bodies(http, body, text):
    r = http.post("/trial", content=body)
    assert (r.status_code, r.text) == (400, text)


def test_b_trial_go_json_rules(http):
    # Keys match case-insensitively, unknown keys are ignored, only the first JSON value counts.
    body = '{"COMPUTENAME": "c", "sourcepath": "s", "DestinationPath": "d", "dryrun": true, "x": [1]} trailing'
    r = http.post("/trial", content=body)
    assert r.status_code == 200 and r.text.startswith("name=mock-rabbit-01--")


def test_c_list(http):
    r = http.get("/list")
    assert (r.status_code, r.content) == (200, b"")
    name = http.post("/trial", content=json.dumps(DRY)).text.split("=", 1)[1]
    r = http.get("/list")
    assert (r.status_code, r.text) == (200, name)


def test_d_status(http):
    http.post("/trial", content=json.dumps(DRY))
    r = http.get("/status/%s?maxWaitSecs=10" % NAME0)
    assert r.status_code == 200
    assert r.text == ('{"state":"running","status":"unknown status","commandStatus":{"command":"/bin/bash -c true"},'
                      '"startTime":"2025-04-01 11:46:36.535519 -0500 CDT"}\n')
    r = http.get("/status/nope?maxWaitSecs=0")
    assert (r.status_code, r.text) == (404, "request not found\n")
    r = http.get("/status/%s" % NAME0)
    assert (r.status_code, r.text) == (400, 'unable to parse maxWaitSecs: strconv.Atoi: parsing "": invalid syntax\n')
    r = http.get("/status/%s?maxWaitSecs=1&extra=1" % NAME0)
    assert (r.status_code, r.text) == (400, "unexpected query parameters: extra=1\n")
    r = http.get("/status/%s?maxWaitSecs=ten" % NAME0)
    assert (r.status_code, r.text) == (400, 'unable to parse maxWaitSecs: strconv.Atoi: parsing "ten": invalid syntax\n')


def test_d_status_mock_never_waits(http):
    http.post("/trial", content=json.dumps({**DRY, "dryrun": False}))
    started = time.monotonic()
    r = http.get("/status/%s?maxWaitSecs=300" % NAME0)
    assert r.status_code == 200 and time.monotonic() - started < 5
    assert json.loads(r.text)["commandStatus"]["command"] == "/bin/bash -c sleep 300"
    assert http.delete("/cancel/" + NAME0).status_code == 200


def test_e_cancel(http):
    r = http.delete("/cancel/nope")
    assert (r.status_code, r.text) == (404, "unable to cancel request: request not found\n")
    http.post("/trial", content=json.dumps({**DRY, "dryrun": False}))
    r = http.delete("/cancel/" + NAME0)
    assert (r.status_code, r.content) == (200, b"")
    assert http.get("/list").content == b""
    # Cancel after completion is a success (nnf-dm PR #352).
    assert http.delete("/cancel/" + NAME0).status_code == 200


@pytest.mark.parametrize("method, path", [
    ("POST", "/hello"), ("PUT", "/hello"), ("GET", "/trial"), ("PUT", "/trial"), ("POST", "/list"),
    ("DELETE", "/list"), ("POST", "/status/x?maxWaitSecs=0"), ("PUT", "/status/x"), ("GET", "/cancel/x"),
    ("POST", "/cancel/x"), ("GET", "/shutdown"), ("PATCH", "/hello"), ("OPTIONS", "/list"), ("FOO", "/hello"),
])
def test_wrong_methods_501(http, method, path):
    r = http.request(method, path)
    assert (r.status_code, r.text) == (501, "method not supported\n")


def test_method_checked_before_auth_and_version(mock_server):
    with httpx.Client(verify=mock_server.material.context()) as bare:
        r = bare.put(mock_server.url + "/hello")
    assert (r.status_code, r.text) == (501, "method not supported\n")


def test_f_lifecycle(http):
    names = [http.post("/trial", content=json.dumps({**DRY, "dryrun": False})).text for _ in range(3)]
    assert names == ["name=mock-rabbit-01--nnf-copy-offload-node-%d\n" % i for i in range(3)]
    listed = set(http.get("/list").text.strip().split(","))
    assert listed <= {n[5:].strip() for n in names}
    assert http.delete("/cancel/" + NAME0).content == b""
    for name in listed - {NAME0}:
        http.delete("/cancel/" + name)
    deadline = time.monotonic() + 5
    while http.get("/list").content and time.monotonic() < deadline:
        time.sleep(0.1)
    assert http.get("/list").content == b""


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/hello", None), ("GET", "/list", None), ("DELETE", "/cancel/x", None),
    ("POST", "/trial", json.dumps(DRY)), ("GET", "/status/x?maxWaitSecs=0", None), ("POST", "/shutdown", None),
])
@pytest.mark.parametrize("version", [None, "0.0", "1.1", "1.00", "v1.0"])
def test_g_bad_api_version(mock_server, method, path, body, version):
    headers = {"Authorization": "Bearer " + mock_server.material.token}
    if version is not None:
        headers[wire.VERSION_HEADER] = version
    with httpx.Client(verify=mock_server.material.context()) as c:
        r = c.request(method, mock_server.url + path, content=body, headers=headers)
    assert r.status_code == 406 and r.text == "Valid versions: 1.0\n"


def test_h_bearer_token(mock_server):
    with httpx.Client(verify=mock_server.material.context()) as c:
        for header in ("Bearer " + mock_server.material.token, mock_server.material.token,
                       "Bearer    %s" % mock_server.material.token):
            r = c.get(mock_server.url + "/hello", headers={**V, "Authorization": header})
            assert r.status_code == 200, header


def _other_token(extra: bytes = b"") -> str:
    return pki.mint_token(pki.pem_der(pki.generate_token_key_pem()) + extra)


def test_i_bearer_token_negatives(mock_server):
    secret = pki.read_token_key(mock_server.material.token_key)
    cases = [
        ("Bearer " + _other_token(), 401, "signature is invalid"),
        ("Bearer " + pki.mint_token(secret + b"x"), 401, "signature is invalid"),
        ("Bearer " + jwt.encode({"sub": "user-container", "iat": 1}, secret, algorithm="HS512"), 401,
         "unexpected signing method"),
        ("Bearer " + jwt.encode({"sub": "user-container"}, None, algorithm="none"), 401, "unexpected signing method"),
        ("Bearer abc.def", 401, "token is malformed"),
        ("Bearer " + "a" * 5000, 401, "token is malformed"),
        ("Bearer " + jwt.encode({"exp": 1}, secret, algorithm="HS256"), 401, "token is expired"),
    ]
    with httpx.Client(verify=mock_server.material.context()) as c:
        for header, code, text in cases:
            r = c.get(mock_server.url + "/hello", headers={**V, "Authorization": header})
            assert r.status_code == code and text in r.text, (header[:20], r.text)
            assert r.text.startswith("token parse failed: ") and r.text.endswith("\n")
            assert mock_server.material.token not in r.text
        r = c.get(mock_server.url + "/hello", headers=V)
        assert (r.status_code, r.text) == (401, "unauthorized\n")
        # Auth is checked before the version.
        r = c.get(mock_server.url + "/hello")
        assert (r.status_code, r.text) == (401, "unauthorized\n")
    assert mock_server.material.token not in mock_server.log


def test_j_shutdown(mock_server, http):
    http.post("/trial", content=json.dumps({**DRY, "dryrun": False}))
    r = http.post("/shutdown")
    assert (r.status_code, r.text) == (409, "unable to shutdown server: requests in progress\n")
    http.delete("/cancel/" + NAME0)
    r = http.post("/shutdown", content='{"message": "shutdown"}', headers={"Content-Type": "application/json"})
    assert (r.status_code, r.text) == (200, "Server shutting down\n")
    assert mock_server.wait(10) == 0
    assert "the server is closed" in mock_server.log


def test_unknown_route_404(http):
    r = http.get("/nothing")
    assert (r.status_code, r.text) == (404, "404 page not found\n")


def test_tls_13_only(mock_server):
    import socket
    import ssl

    context = ssl.create_default_context(cafile=mock_server.material.cert)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", mock_server.port), timeout=5) as raw, \
            pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_plain_http_and_no_token(server_factory):
    server = server_factory("mock", tls=False, token=False)
    r = httpx.get(server.url + "/hello", headers=V)
    assert (r.status_code, r.text) == (200, "hello back at ya\n")


# --------------------------------------------------------------------------- the reference's own answers

def _golden():
    import os

    import reference_cases as rc

    with open(os.path.join(os.path.dirname(__file__), rc.GOLDEN)) as handle:
        return json.load(handle)


@pytest.fixture(scope="module")
def replay_server(material):
    from hardening_support import running_server

    with running_server(material) as proc:
        yield proc


@pytest.mark.parametrize("group", ["edges", "more", "tokens", "versions", "routes", "paths", "queries", "bodies", "framing"])
def test_answers_recorded_from_the_reference(replay_server, material, group):
    """Every request of the differential tier, answered as the reference Go server answered it
    when tests/reference_answers.json was recorded (pytest -m reference with
    COPY_OFFLOAD_REFERENCE_RECORD=1): token texts, first-value headers, ServeMux redirects,
    framing answers, JSON and query errors. Pins them where the reference is not built."""
    import reference_cases as rc
    from hardening_support import exchange

    golden = _golden()
    secret = pki.read_token_key(material.token_key)
    cases = rc.group_cases(group, material.token, secret)
    context = material.context()
    differing = []
    for name, data in cases:
        assert name in golden, "no recorded answer for %r: record again" % name
        ours = rc.Answer(exchange(replay_server.port, context, data, 20.0))
        if ours.key() != rc.Answer.from_record(golden[name]):
            differing.append("%s\n  reference: %r\n  ours:      %r" % (name, golden[name], ours))
    assert not differing, "\n".join(differing)


def test_plain_http_on_the_tls_port_and_options_star(replay_server, material):
    import reference_cases as rc
    from hardening_support import exchange

    answer = exchange(replay_server.port, None, rc.request("GET", "/hello", material.token))
    assert answer == b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
    answer = exchange(replay_server.port, None, rc.request("DELETE", "/cancel/x", material.token))
    assert answer == b""  # "DELET" is not one of the five-byte starts Go recognises: it just closes
    star = rc.Answer(exchange(replay_server.port, material.context(), rc.request("OPTIONS", "*", None)))
    assert (star.status, star.headers, star.body) == (200, {}, b"")
