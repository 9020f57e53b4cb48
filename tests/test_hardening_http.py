"""The bad-input matrix against one live server: whatever a client sends, a clear answer.

One ``copy-offload-server -mock`` (TLS, token, debug log) serves the whole module. Hypothesis
throws random and hostile bodies, headers, query strings, path names and tokens at it; every
answer must be a 2xx or a 4xx whose body is one line of text ending in ``\\n`` and never holds
the token. At the end the server must still be running, its log must hold no traceback and no
secret.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import string
import time
import urllib.parse
from typing import Iterator, List, Sequence, Tuple

import httpx
import jwt
import pytest
from copy_offload.client import wire
from copy_offload.server import pki
from copy_offload.server.auth import TokenRejected, TokenVerifier
from hardening_support import (
    auth_headers,
    check_answer,
    check_error_answer,
    http_client,
    leaked,
    parse_response,
    raw_exchange,
    request_bytes,
    running_server,
    start_server,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import HOST

EXAMPLES = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(EXAMPLES, max_examples=60)
FIELDS = list(wire.CopyRequest().__dict__)
VALID = {"computeName": "c", "sourcePath": "/s", "destinationPath": "/d", "dryrun": True}


@pytest.fixture(scope="module")
def server(material):
    with running_server(material) as proc:
        yield proc


@pytest.fixture(scope="module")
def http(server) -> Iterator[httpx.Client]:
    with http_client(server) as client:
        client.headers.update(auth_headers(server.material))
        yield client


def cancel_if_started(http: httpx.Client, response: httpx.Response) -> None:
    """Valid bodies start a mock ``sleep 300``: stop it at once."""
    if response.status_code == 200:
        name = wire.parse_trial_body(response.text)
        assert http.delete(wire.cancel_path(name)).status_code == 200


# --------------------------------------------------------------------------- bodies

json_leaf = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_value = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=4)
                          | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=16)
field_name = st.sampled_from(FIELDS) | st.sampled_from(FIELDS).map(str.upper) | st.text(max_size=12)
field_value = (json_value | st.integers(min_value=-(2**31) - 2, max_value=-(2**31) + 2)
               | st.integers(min_value=2**31 - 2, max_value=2**31 + 2) | st.just(-1) | st.just(-2))
request_object = st.dictionaries(field_name, field_value, max_size=12)


def _mangle(data: st.DataObject, body: bytes) -> bytes:
    """Insert NULs, invalid UTF-8 or control bytes, or cut the body short."""
    how = data.draw(st.sampled_from(["keep", "cut", "insert", "append"]))
    if how == "keep" or not body:
        return body
    at = data.draw(st.integers(min_value=0, max_value=len(body)))
    if how == "cut":
        return body[:at]
    junk = data.draw(st.sampled_from([b"\x00", b"\xff\xfe", b"\xc3", b"\n", b"\x0b", b"\\", b'"', b"\xed\xa0\x80"])
                     | st.binary(min_size=1, max_size=8))
    return body[:at] + junk + body[at:] if how == "insert" else body + junk


@given(data=st.data())
@EXAMPLES
def test_trial_random_bodies(http, server, data):
    kind = data.draw(st.sampled_from(["object", "value", "bytes", "valid-plus"]))
    if kind == "object":
        body = json.dumps(data.draw(request_object)).encode()
    elif kind == "value":
        body = json.dumps(data.draw(json_value)).encode()
    elif kind == "bytes":
        body = data.draw(st.binary(max_size=512))
    else:
        body = json.dumps({**VALID, **data.draw(request_object)}).encode()
    body = _mangle(data, body)
    response = http.post(wire.TRIAL, content=body)
    check_answer(response, server.material, {200, 400})
    if response.status_code == 400:
        assert response.text.startswith((wire.ERR_DECODE_PREFIX, "compute", "source", "destination",
                                         "slots", "maxSlots")), response.text
    cancel_if_started(http, response)


@pytest.mark.parametrize("body, expect", [
    (b"[" * 100_000, "exceeded max depth"),
    (b'{"computeName":' * 20_000, "exceeded max depth"),
    # Go nests 10000 deep (Python's parser alone about 1000): 5000 is parsed, and is not an object.
    (b"[" * 5_000 + b"]" * 5_000, "cannot unmarshal array into Go value of type driver.DMRequest"),
    (b'{"computeName":"c","sourcePath":"/s","destinationPath":"/d","x":' + b"[" * 300 + b"]" * 300 + b"}",
     "name="),
], ids=["array-100k", "object-20k", "array-5k-closed", "deep-unknown-key"])
def test_trial_deep_nesting(http, server, body, expect):
    response = http.post(wire.TRIAL, content=body)
    check_answer(response, server.material, {200, 400})
    assert expect in response.text
    cancel_if_started(http, response)


@pytest.mark.parametrize("body, expect", [
    (json.dumps({**VALID, "sourcePath": "/s" + "x" * 900_000}).encode(), 200),
    (json.dumps({**VALID, "computeName": "a\x00b"}).encode(), 200),
    (b'{"computeName":"c\x00d","sourcePath":"/s","destinationPath":"/d"}', 400),  # a raw NUL in a string
    (b'{"computeName":"\xff\xfe","sourcePath":"/s","destinationPath":"/d","dryrun":true}', 200),  # U+FFFD, as Go
    (json.dumps({**VALID, "slots": 2**31}).encode(), 400),
    (json.dumps({**VALID, "maxSlots": -(2**31) - 1}).encode(), 400),
    (json.dumps({**VALID, "slots": 2**31 - 1, "maxSlots": -1}).encode(), 200),
    (json.dumps({**VALID, "slots": 1.5}).encode(), 400),
    (json.dumps({**VALID, "slots": "1"}).encode(), 400),
    (json.dumps({**VALID, "dryrun": "true"}).encode(), 400),
    (json.dumps({**VALID, "computeName": ["c"]}).encode(), 400),
    (b'{"computeName":"c","slots":NaN}', 400),
    (b'{"computeName":"c","slots":Infinity}', 400),
    (b"\xef\xbb\xbf" + json.dumps(VALID).encode(), 400),  # a BOM: Go's decoder refuses it too
], ids=["huge-string", "escaped-nul", "raw-nul", "invalid-utf8", "slots-2^31", "maxslots-under-int32",
        "int32-edges", "float-slots", "string-slots", "string-bool", "array-name", "nan", "infinity", "bom"])
def test_trial_hostile_values(http, server, body, expect):
    response = http.post(wire.TRIAL, content=body)
    check_answer(response, server.material, {expect})
    cancel_if_started(http, response)


@pytest.mark.parametrize("field", ["sourcePath", "destinationPath"])
def test_client_text_cannot_forge_log_lines(http, server, field):
    forged = "/x\n2030-01-01 00:00:00,000 INFO copy_offload.server: forged\x1b[2J\r"
    response = http.post(wire.TRIAL, content=json.dumps({**VALID, field: forged}))
    check_answer(response, server.material, {200})
    assert not any(line.startswith("2030-") for line in server.log_lines)
    raw = request_bytes("GET", "/status/a\x1b[31mred?maxWaitSecs=0", server.material)
    status, _, _ = parse_response(raw_exchange(server, raw))
    assert status in (400, 404)


def test_trial_decode_errors_are_one_line(http, server):
    """Go quotes the offending byte (``'\\n'``, ``'\\x00'``), so an error text is one line."""
    for body in (b'{"computeName":"a\nb"}', b"\x00", b'{"computeName":"\\q"}', b"\x0b", b"{\x01}"):
        response = http.post(wire.TRIAL, content=body)
        check_answer(response, server.material, {400})


# --------------------------------------------------------------------------- oversized bodies

LIMIT = 1 << 20


@pytest.mark.parametrize("size, status", [
    (LIMIT, 400), (LIMIT + 1, 413), (8 << 20, 413), ((8 << 20) + 1, 413), (20 << 20, 413),
], ids=["1MiB", "1MiB+1", "8MiB", "8MiB+1", "20MiB"])
def test_oversized_body_413(http, server, size, status):
    response = http.post(wire.TRIAL, content=b" " * size)
    check_answer(response, server.material, {status})
    if status == 413:
        assert response.text == "request body too large\n"
    # The connection pool still works afterwards.
    assert http.get(wire.HELLO).status_code == 200


@pytest.mark.parametrize("size", [LIMIT + 1, 9 << 20], ids=["1MiB+1", "9MiB"])
def test_oversized_chunked_body_413(server, size):
    head = request_bytes("POST", wire.TRIAL, server.material, headers=[("Transfer-Encoding", "chunked")])
    head = head.replace(b"Content-Length: 0\r\n", b"")
    piece = 1 << 20
    chunks = []
    left = size
    while left > 0:
        n = min(piece, left)
        chunks.append(b"%x\r\n" % n + b" " * n + b"\r\n")
        left -= n
    chunks.append(b"0\r\n\r\n")
    status, headers, body = parse_response(raw_exchange(server, head, chunks=chunks))
    check_error_answer(status, body, headers.get("content-type", ""), server.material)
    assert (status, body) == (413, b"request body too large\n")


def test_oversized_declared_length_answers_before_the_body(server):
    """A client that waits for ``100 Continue`` (curl does above 1 MiB) gets the 413 at once."""
    head = request_bytes("POST", wire.TRIAL, server.material, headers=[("Expect", "100-continue")])
    head = head.replace(b"Content-Length: 0", b"Content-Length: %d" % (64 << 20))
    raw = raw_exchange(server, head, timeout=10)
    assert not raw.startswith(b"HTTP/1.1 100"), raw[:100]
    status, headers, body = parse_response(raw)
    assert (status, body) == (413, b"request body too large\n")


def test_oversized_body_needs_a_token_first(server):
    """An unauthenticated client gets its 401 before any size check, at once: a large body that
    failed the checks is not read (the connection closes after the answer)."""
    head = request_bytes("POST", wire.TRIAL, server.material, auth=False)
    head = head.replace(b"Content-Length: 0", b"Content-Length: %d" % (LIMIT + 10))
    status, headers, body = parse_response(raw_exchange(server, head, first_response=True))
    assert (status, body) == (401, b"unauthorized\n")


@pytest.mark.parametrize("content_type, body", [
    ("multipart/form-data; boundary=xyz", json.dumps(VALID)),
    ("multipart/form-data", json.dumps(VALID)),
    ('multipart/form-data; boundary="', json.dumps(VALID)),
    ("application/x-www-form-urlencoded", json.dumps({**VALID, "sourcePath": "/s" + "&" * 2000})),
    ("application/x-www-form-urlencoded; charset=utf-16", json.dumps(VALID)),
    ("text/plain", json.dumps(VALID)),
], ids=["multipart", "multipart-no-boundary", "multipart-bad-boundary", "form-2000-fields", "form-utf16", "text"])
def test_content_type_is_ignored(http, server, content_type, body):
    """As in the reference (libcopyoffload posts JSON as a form): no form parsing, no 'Bad Request'."""
    response = http.post(wire.TRIAL, content=body, headers={"Content-Type": content_type})
    check_answer(response, server.material, {200})
    cancel_if_started(http, response)


def test_checks_come_before_the_body(server):
    """A hostile body or content type never overtakes the method, token and version checks."""
    with http_client(server) as client:
        response = client.post(wire.TRIAL, content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"})
        assert (response.status_code, response.text) == (401, "unauthorized\n")
        response = client.post(wire.TRIAL, content=b"&" * 5000, headers={
            "Content-Type": "application/x-www-form-urlencoded", wire.AUTH_HEADER: "Bearer " + server.material.token})
        assert (response.status_code, response.text) == (406, "Valid versions: 1.0\n")
        response = client.put(wire.TRIAL, content=b" " * (LIMIT + 1))
        assert (response.status_code, response.text) == (501, "method not supported\n")


def test_refusals_keep_the_connection_open(server):
    """A 401/406/501/404 answers after the (small) body, so keep-alive clients can go on."""
    token = server.material.token
    with http_client(server) as client:
        for _ in range(3):
            for method, route, headers, status in [
                ("GET", wire.HELLO, {wire.AUTH_HEADER: "Bearer junk"}, 401),
                ("GET", wire.HELLO, {wire.AUTH_HEADER: "Bearer " + token}, 406),
                ("PUT", wire.HELLO, {}, 501),
                ("POST", wire.TRIAL, {wire.AUTH_HEADER: "Bearer junk"}, 401),
                ("GET", "/nothing", {}, 404),
                ("GET", "/status", {}, 307),
                ("GET", wire.HELLO, auth_headers(server.material), 200),
            ]:
                response = client.request(method, route, headers=headers, content=b"{}" if method != "GET" else None)
                assert response.status_code == status, (method, route, response.text)


# --------------------------------------------------------------------------- headers

header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\t\x80\xa0\xff"),
                      max_size=60)


T = "\x00TOKEN\x00"  # replaced by the real token: the strategies stay fixed objects
auth_variants = st.one_of(
    st.sampled_from(["", "Bearer", "Bearer ", "bearer " + T, "BEARER " + T, "Basic dXNlcjpwYXNz", "Bearer %s x" % T,
                     "Bearer Bearer " + T, T + " Bearer", "Bearer\t" + T, "Bearer %s=" % T, T, "Bearer " + T,
                     "Bearer   %s  " % T, "Bearer %s\t" % T]),
    header_text, header_text.map(lambda t: "Bearer " + t),
    st.builds(lambda a, b: a + "Bearer " + T + b, header_text, header_text),
)


def token_accepted(candidate: str, token: str) -> bool:
    """Whether the server takes ``candidate`` for ``token``: the signed part must be the same text;
    the signature only the same bytes (pyjwt's base64 decoder, unlike Go's, skips stray
    characters and padding: lenient, but never a forgery)."""
    head, _, sig = candidate.rpartition(".")
    token_head, _, token_sig = token.rpartition(".")
    if head != token_head:
        return False
    try:
        return jwt.utils.base64url_decode(sig) == jwt.utils.base64url_decode(token_sig)
    except Exception:
        return False


def expected_auth(value: str, token: str, secret: bytes) -> bool:
    """Whether the server's verifier takes the header as HTTP delivers it (ends trimmed of SP and
    HTAB). The verifier's own rules against Go's are tested in test_hardening_auth.py; here the
    question is only what HTTP answer follows."""
    try:
        TokenVerifier(secret).check_header(value.strip(" \t"))
    except TokenRejected:
        return False
    return True


def raw_get(server, target: str, headers) -> tuple:
    """GET with exactly these header bytes (httpx refuses e.g. a value ending in a space)."""
    status, got, body = parse_response(raw_exchange(server, request_bytes("GET", target, server.material,
                                                                          headers=headers, auth=False)))
    return status, got, body


versions = st.none() | st.sampled_from(["1.0", " 1.0 ", "1.0\t", "1.00", "1", "v1.0", "1.0,1.0", "", "1.0 1.0",
                                        "1.0\xa0"]) | header_text
extra_headers = st.lists(st.tuples(st.sampled_from(["X-A", "Accept-Version", "Accept", "Content-Type",
                                                    "X-Forwarded-For", "Cookie"]), header_text), max_size=3)


@given(auth=st.none() | auth_variants, version=versions, extra=extra_headers,
       route=st.sampled_from([wire.HELLO, wire.LIST, wire.STATUS_PREFIX + "a--b?maxWaitSecs=0"]))
@EXAMPLES
def test_header_variants(server, auth, version, extra, route):
    token = server.material.token
    auth = None if auth is None else auth.replace(T, token)
    headers = [] if auth is None else [(wire.AUTH_HEADER, auth)]
    if version is not None:
        headers.append((wire.VERSION_HEADER, version))
    headers += extra
    status, got, body = raw_get(server, route, headers)
    text = body.decode()
    if not auth or not auth.strip(" \t"):  # HTTP trims SP and HTAB; an empty header is no header
        assert (status, text) == (401, "unauthorized\n")
    elif not expected_auth(auth, token, pki.read_token_key(server.material.token_key)):
        check_error_answer(status, body, got["content-type"], server.material)
        assert status == 401 and text.startswith(wire.ERR_TOKEN_PREFIX), text
    elif version is None or version.strip(" \t") != wire.API_VERSION:  # HTTP trims only SP and HTAB
        assert (status, text) == (406, "Valid versions: 1.0\n")
    else:
        assert status in (200, 404), (status, text)


def test_token_with_a_trailing_unicode_space(server):
    """Go's TrimSpace drops a UTF-8 no-break space (bytes C2 A0) after the token; so do we."""
    header = "Bearer %s\xc2\xa0" % server.material.token  # sent as latin-1: the bytes C2 A0
    status, _, body = raw_get(server, wire.HELLO, [(wire.AUTH_HEADER, header), (wire.VERSION_HEADER, "1.0")])
    assert (status, body) == (200, b"hello back at ya\n")


def test_huge_headers_within_the_limit(server):
    """60 KiB of headers (Tornado's limit is 64 KiB): a clear answer, no crash."""
    with http_client(server) as client:
        response = client.get(wire.HELLO, headers={**auth_headers(server.material), "X-Big": "a" * 60_000})
        assert response.status_code == 200
        response = client.get(wire.HELLO, headers={wire.AUTH_HEADER: "Bearer " + "a" * 60_000,
                                                   wire.VERSION_HEADER: "1.0"})
        check_answer(response, server.material, {401})


def test_repeated_headers(server):
    """Go's ``Header.Get``: the first Authorization and the first Accepts-version count."""
    material = server.material
    raw = request_bytes("GET", wire.HELLO, material, headers=[(wire.AUTH_HEADER, "Bearer junk")])
    assert parse_response(raw_exchange(server, raw))[::2] == (200, b"hello back at ya\n")
    raw = request_bytes("GET", wire.HELLO, material, auth=False,
                        headers=[(wire.AUTH_HEADER, "Bearer junk"), (wire.AUTH_HEADER, "Bearer " + material.token),
                                 (wire.VERSION_HEADER, "1.0")])
    status, _, body = parse_response(raw_exchange(server, raw))
    assert (status, body) == (401, b"token parse failed: token is malformed: token contains an invalid number of "
                                   b"segments\n")
    raw = request_bytes("GET", wire.HELLO, material, headers=[(wire.VERSION_HEADER, "2.0")])
    assert parse_response(raw_exchange(server, raw))[::2] == (200, b"hello back at ya\n")
    raw = request_bytes("GET", wire.HELLO, material, auth=False,
                        headers=[(wire.AUTH_HEADER, "Bearer " + material.token), (wire.VERSION_HEADER, "2.0"),
                                 (wire.VERSION_HEADER, "1.0")])
    assert parse_response(raw_exchange(server, raw))[::2] == (406, b"Valid versions: 1.0\n")


# --------------------------------------------------------------------------- query strings

query_piece = st.text(alphabet=string.ascii_letters + string.digits + "%+-=&;.~_ \u00e9\u2603\x00", max_size=30)


@given(data=st.data())
@EXAMPLES
def test_status_query_strings(http, server, data):
    kind = data.draw(st.sampled_from(["random", "encoded", "repeated", "numbers"]))
    if kind == "random":
        query = urllib.parse.quote(data.draw(query_piece), safe="=&%+;")
    elif kind == "encoded":
        pairs = data.draw(st.lists(st.tuples(st.sampled_from([wire.MAX_WAIT_PARAM, "maxwaitsecs", "x", "", "\u00e9"]),
                                             st.text(max_size=12)), max_size=4))
        query = urllib.parse.urlencode(pairs)
    elif kind == "repeated":
        values = data.draw(st.lists(st.integers(min_value=-(2**65), max_value=2**65).map(str), min_size=2, max_size=5))
        query = "&".join("%s=%s" % (wire.MAX_WAIT_PARAM, v) for v in values)
    else:
        value = data.draw(st.sampled_from(["0", "-0", "+0", "00", "-1", "1e3", "0x10", " 1", "1 ", "9" * 30,
                                           "-9223372036854775808", "9223372036854775807", "9223372036854775808",
                                           "%2B1", "%00", "%ff", "\u0661"]))
        query = "%s=%s" % (wire.MAX_WAIT_PARAM, urllib.parse.quote(value, safe="%+"))
    target = "%sno--such?%s" % (wire.STATUS_PREFIX, query)
    response = http.get(httpx.URL(server.url + target))
    check_answer(response, server.material, {400, 404})
    if response.status_code == 400:
        assert response.text.startswith((wire.ERR_PARSE_WAIT_PREFIX, wire.ERR_QUERY_PREFIX)), response.text


def test_status_query_edges(http, server):
    cases = {
        "maxWaitSecs=0&maxWaitSecs=x": 404,  # Go reads the first value, then drops them all
        "maxWaitSecs=x&maxWaitSecs=0": 400,
        "maxWaitSecs=99999999999999999999": 400,
        "maxWaitSecs=-1&extra=%0A": 400,
        "maxWaitSecs=%": 400,
        "": 400,
    }
    for query, status in cases.items():
        response = http.get(httpx.URL(server.url + wire.STATUS_PREFIX + "no--such?" + query))
        check_answer(response, server.material, {status})


# --------------------------------------------------------------------------- path names

name_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


def _path_target(data: st.DataObject) -> str:
    kind = data.draw(st.sampled_from(["quoted", "hostile", "long", "segments"]))
    if kind == "quoted":
        return urllib.parse.quote(data.draw(name_text), safe="")
    if kind == "hostile":
        return data.draw(st.sampled_from([
            "..", "../..", "%2e%2e", "a%2F..%2F..%2Fetc%2Fpasswd", "%2F", "%00", "a%00b", "%ff%fe", "%c0%af",
            "a/b/c", "a//b", "./", "~", "a--b", "--", "a--", "--b", "%", "%zz", "a%2Db", "\u00e9".encode().hex(),
        ]))
    if kind == "long":
        return "a" * data.draw(st.integers(min_value=1000, max_value=30_000))
    return "/".join(urllib.parse.quote(part, safe="") for part in data.draw(st.lists(name_text, max_size=5)))


@given(data=st.data())
@EXAMPLES
def test_status_and_cancel_paths(server, data):
    name = _path_target(data)
    prefix, method, query = data.draw(st.sampled_from([
        (wire.STATUS_PREFIX, "GET", "?maxWaitSecs=0"), (wire.CANCEL_PREFIX, "DELETE", ""),
        ("/", "GET", ""), ("/hello/", "GET", ""), ("/trial/", "POST", ""),
    ]))
    raw = request_bytes(method, prefix + name + query, server.material)
    status, headers, body = parse_response(raw_exchange(server, raw))
    assert status < 500 or (status, body) == (501, b"method not supported\n"), (status, body)  # "/cancel/" by GET
    if status == 307:  # Go's mux cleaning the path ("." and ".." segments, "//")
        assert headers["location"].startswith("/") and b"Temporary Redirect" in body + b"Temporary Redirect"
    elif status >= 400 and body != b"400 Bad Request":  # that one: Go's answer to a bad %-escape
        check_error_answer(status, body, headers["content-type"], server.material)
        assert body in (b"request not found\n", b"unable to cancel request: request not found\n",
                        b"404 page not found\n", b"method not supported\n"), body


def test_paths_are_cleaned_by_redirect_as_go_does(server):
    """``/status/../hello`` is never served as a status request nor as hello: Go's mux answers
    307 to the clean path (the client must ask again, with its checks); an escaped ``..``
    (``%2e%2e``, ``..%2F``) is a segment, not a step up, and stays a request name."""
    for target, location in (("/status/../hello?maxWaitSecs=0", "/hello?maxWaitSecs=0"),
                             ("//hello", "/hello"), ("/hello/.", "/hello"), ("/status", "/status/"),
                             ("/cancel?x=1", "/cancel/?x=1")):
        method = "DELETE" if target.startswith("/cancel") else "GET"
        status, headers, body = parse_response(raw_exchange(server, request_bytes(method, target, server.material)))
        assert (status, headers["location"]) == (307, location), (target, body)
    for target in ("/status/%2e%2e/hello?maxWaitSecs=0", "/cancel/..%2Fshutdown"):
        method = "DELETE" if target.startswith("/cancel") else "GET"
        status, _, body = parse_response(raw_exchange(server, request_bytes(method, target, server.material)))
        assert status == 404 and b"request not found" in body, (target, body)


# --------------------------------------------------------------------------- tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hostile_tokens(material) -> List[tuple]:
    secret = pki.read_token_key(material.token_key)
    claims = {"sub": "user-container", "iat": 1}
    header, payload, sig = material.token.split(".")
    return [
        ("alg-none", jwt.encode(claims, None, algorithm="none"), "unexpected signing method"),
        ("alg-none-upper", "%s.%s." % (_b64(b'{"alg":"NONE","typ":"JWT"}'), payload), "token"),
        ("hs512", jwt.encode(claims, secret, algorithm="HS512"), "unexpected signing method"),
        ("hs384", jwt.encode(claims, secret, algorithm="HS384"), "unexpected signing method"),
        ("rs256-header", "%s.%s.%s" % (_b64(b'{"alg":"RS256","typ":"JWT"}'), payload, sig), "unexpected signing method"),
        ("es512-header", "%s.%s.%s" % (_b64(b'{"alg":"ES512"}'), payload, sig), "unexpected signing method"),
        ("wrong-key", pki.mint_token(pki.pem_der(pki.generate_token_key_pem())), "signature is invalid"),
        ("key-prefix", pki.mint_token(secret[:32]), "signature is invalid"),
        ("swapped-payload", "%s.%s.%s" % (header, _b64(b'{"sub":"admin","iat":1}'), sig), "signature is invalid"),
        ("truncated", material.token[: len(material.token) // 2], "token is malformed"),
        ("no-signature", "%s.%s" % (header, payload), "token is malformed"),
        ("four-parts", material.token + ".x", "token is malformed"),
        ("garbage-b64", "%%%%.$$$$.!!!!", "token is malformed"),
        ("not-json-header", "%s.%s.%s" % (_b64(b"\xff\x00junk"), payload, sig), "token is malformed"),
        ("array-payload", jwt.api_jws.encode(b"[1,2]", secret, algorithm="HS256"), "token"),
        ("expired", jwt.encode({**claims, "exp": 1}, secret, algorithm="HS256"), "token is expired"),
        ("not-yet", jwt.encode({**claims, "nbf": 2**40}, secret, algorithm="HS256"), "not valid yet"),
        ("exp-string", jwt.encode({**claims, "exp": "soon"}, secret, algorithm="HS256"), "token"),
        ("huge", "a" * 50_000, "token is malformed"),
        ("huge-parts", ".".join(["A" * 16_000] * 3), "token"),
        ("kid-injection", jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "../../etc/passwd"}), None),
        ("crit", jwt.encode(claims, secret, algorithm="HS256", headers={"crit": ["exp"]}), None),
    ]


@pytest.mark.parametrize("index", range(22))
def test_hostile_tokens(server, index):
    cases = _hostile_tokens(server.material)
    assert len(cases) == 22
    label, token, words = cases[index]
    with http_client(server) as client:
        response = client.get(wire.HELLO, headers={wire.AUTH_HEADER: "Bearer " + token,
                                                   wire.VERSION_HEADER: wire.API_VERSION})
    if words is None:  # extra header fields the reference ignores: the signature is what counts
        assert response.status_code in (200, 401), (label, response.text)
        if response.status_code == 200:
            return
    check_answer(response, server.material, {401})
    assert response.text.startswith(wire.ERR_TOKEN_PREFIX), (label, response.text)
    if words:
        assert words in response.text, (label, response.text)
    assert token not in response.text and not (len(token) > 20 and token[-20:] in response.text), label


@given(kind=st.sampled_from(["truncate", "replace", "insert"]), where=st.integers(min_value=0, max_value=10_000),
       char=st.sampled_from(string.ascii_letters + string.digits + "-_.=+/ \t"))
@FEW
def test_token_mutations(server, kind, where, char):
    token = server.material.token
    at = where % len(token)
    if kind == "truncate":
        mutated = token[:at]
    else:
        mutated = token[:at] + char + token[at + (1 if kind == "replace" else 0):]
    status, got, body = raw_get(server, wire.HELLO, [(wire.AUTH_HEADER, "Bearer " + mutated),
                                                     (wire.VERSION_HEADER, wire.API_VERSION)])
    if status == 200:
        assert token_accepted(mutated.strip(), token), mutated
        return
    assert status == 401, (status, body)
    check_error_answer(status, body, got["content-type"], server.material)


# --------------------------------------------------------------------------- methods and framing


@pytest.mark.parametrize("raw", [
    b"POST /trial HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /trial HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
    b"POST /trial HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /hello HTTP/1.1\r\n\r\n",
    b"GET /hello HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET /hello HTTP/9.9\r\nHost: x\r\n\r\n",
    b"\r\n\r\n",
    b"G\x00T / HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["bad-length", "two-lengths", "bad-chunk", "no-host", "nul-header", "100k-header", "h2-preface",
        "http-9.9", "empty", "nul-method"])
def test_framing_errors_leave_the_server_well(server, raw):
    """Broken HTTP framing gets Go's answer (a 4xx, 501 for a transfer coding, 505 for a
    version); 100 KiB of headers is within Go's 1 MiB. Never a crash: the next client is served."""
    answer = raw_exchange(server, raw, timeout=10)
    if answer:
        status, _, _ = parse_response(answer)
        assert 400 <= status < 500 or status in (501, 505) or (status == 200 and b"X-Big" in raw), answer[:200]
    with http_client(server) as client:
        assert client.get(wire.HELLO, headers=auth_headers(server.material)).status_code == 200


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "FOO", "PROPFIND"])
@pytest.mark.parametrize("route", [wire.HELLO, wire.TRIAL, wire.LIST, wire.SHUTDOWN, "/status/x", "/cancel/x",
                                   "/nothing"])
def test_every_method_on_every_route(server, method, route):
    raw = request_bytes(method, route + ("?maxWaitSecs=0" if route.startswith("/status") else ""), server.material,
                        body=b"{}" if method in ("POST", "PUT", "PATCH") else b"")
    status, headers, body = parse_response(raw_exchange(server, raw))
    assert status < 500 or status == 501, (status, body)
    if status >= 400:
        check_error_answer(status, body, headers["content-type"], server.material)
    if status == 200 and route == wire.SHUTDOWN:
        pytest.fail("the test server must stay up")  # never happens: a mock request keeps it busy


@pytest.fixture(scope="module", autouse=True)
def keep_server_busy(http):
    """One running mock request, so no test's POST /shutdown can stop the module's server."""
    response = http.post(wire.TRIAL, content=json.dumps({**VALID, "dryrun": False}))
    assert response.status_code == 200
    name = wire.parse_trial_body(response.text)
    yield
    http.delete(wire.cancel_path(name))


# --------------------------------------------------------------------------- the token in the log (10.4)


def test_token_never_reaches_the_log(material):
    """Requests that make Tornado, the router or our handlers log what they got, each carrying
    the valid token somewhere; the debug-level log must not hold it (nor its signature)."""
    token = material.token
    requests = [
        request_bytes("GET", wire.HELLO, material, auth=False,
                      headers=[(wire.AUTH_HEADER, "Bearer %s\x0b" % token), (wire.VERSION_HEADER, "1.0")]),
        request_bytes("GET", wire.HELLO, material, auth=False,
                      headers=[(wire.AUTH_HEADER, "Bearer %s\x00" % token), (wire.VERSION_HEADER, "1.0")]),
        request_bytes("GET", "/status/%s?maxWaitSecs=0" % token, material),
        request_bytes("GET", "/nothing/%s" % token, material),
        request_bytes("GET", "/status/x?maxWaitSecs=%s" % token, material),
        ("GET /%s HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n" % token).encode(),
        ("GET /hello HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % token).encode(),
        request_bytes("POST", wire.TRIAL, material, body=json.dumps({**VALID, "sourcePath": token}).encode()),
    ]
    proc = start_server(material, "mock")
    try:
        for raw in requests:
            raw_exchange(proc, raw, timeout=10)
    finally:
        proc.stop()
    assert "Malformed HTTP message" not in proc.log or "[redacted]" in proc.log
    found = leaked(proc.log, material)
    assert not found, "token in the log: %s" % found


def test_redaction_covers_every_logger_args_and_tracebacks(material):
    import logging

    from copy_offload.server import redact

    records: List[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    root = logging.getLogger("redact-test")
    root.addHandler(handler)
    root.propagate = False
    redact.install(root)
    redact.install(root)  # idempotent
    assert len(handler.filters) == 1
    token = material.token
    root.warning("Invalid header value %r", "Bearer %s\x0b" % token)
    root.warning("plain %s in a sentence", token)
    try:
        raise ValueError("bad value " + token)
    except ValueError:
        root.exception("failed")
    root.removeHandler(handler)
    text = "\n".join(records)
    assert token not in text and token.rsplit(".", 1)[1] not in text, text
    assert text.count(redact.REDACTED) >= 3


# --------------------------------------------------------------------------- lone surrogates (10.5)


@pytest.mark.parametrize("field", ["computeName", "sourcePath", "destinationPath", "dcpOptions", "dmProfile",
                                   "mpirunOptions"])
@pytest.mark.parametrize("escape", ["\\ud800", "\\udc80", "\\udbff\\u0041", "\\udfff\\ud800"])
def test_lone_surrogates_become_u_fffd_as_in_go(field, escape):
    body = json.dumps({**VALID, field: "x"}).replace('"x"', '"a%sb"' % escape).encode()
    request = wire.decode_copy_request(body)
    value = getattr(request, field)
    assert value.startswith("a\ufffd") and value.endswith("b"), repr(value)
    value.encode("utf-8")  # encodable: a path, a log line, a JSON answer
    assert wire.decode_copy_request(b'{"\\ud800computeName":"c"}').computeName == ""


def test_lone_surrogates_on_a_live_server(server, http):
    """In every string field, on the mock and on the local driver: a 200 (as Go's mock) or a
    4xx with one line of text; never a 500 or an empty body."""
    for field in ("computeName", "sourcePath", "destinationPath", "dcpOptions", "dmProfile"):
        body = json.dumps({**VALID, field: "q"}).replace('"q"', '"/\\ud800x\\udc80"').encode()
        response = http.post(wire.TRIAL, content=body)
        check_answer(response, server.material, {200, 400})
        cancel_if_started(http, response)


def test_lone_surrogates_on_the_local_driver(material, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "src").write_text("x")
    proc = start_server(material, "local", extra=["--allow-root", str(root), "--state-dir", str(tmp_path / "state")])
    try:
        with http_client(proc) as client:
            client.headers.update(auth_headers(material))
            for field, value in (("sourcePath", "%s/src\\ud800" % root), ("destinationPath", "%s/d\\udc80" % root),
                                 ("dmProfile", "\\ud800"), ("dcpOptions", "\\ud800")):
                body = json.dumps({"computeName": "c", "sourcePath": "%s/src" % root, "destinationPath":
                                   "%s/dst" % root, field: "q"}).replace('"q"', '"%s"' % value).encode()
                response = client.post(wire.TRIAL, content=body)
                assert response.status_code != 500 and response.text.strip(), (field, response.text)
                if response.status_code >= 400:
                    check_answer(response, material, {400, 404, 409, 422})
    finally:
        proc.stop()
    assert "Traceback" not in proc.log, proc.log[-2000:]


# --------------------------------------------------------------------------- slow and oversized (10.6)


@pytest.fixture(scope="module")
def quick_server(material):
    """A server whose requests must arrive within one second."""
    with running_server(material, extra=["--request-timeout", "1"]) as proc:
        yield proc


def _timed_answer(server, first: bytes, then: Sequence[bytes] = (), gap: float = 0.0) -> Tuple[bytes, float]:
    """Send ``first``, then ``then`` one piece per ``gap`` seconds while the connection is open;
    return what came back and how long the server took to close."""
    context = server.material.context()
    started = time.monotonic()
    with socket.create_connection((HOST, server.port), timeout=30) as sock, \
            context.wrap_socket(sock, server_hostname=HOST) as tls:
        tls.sendall(first)
        received = bytearray()
        pieces = list(then)
        tls.settimeout(gap or 30)
        while True:
            try:
                piece = tls.recv(65536)
            except (socket.timeout, TimeoutError):
                if pieces:
                    try:
                        tls.sendall(pieces.pop(0))
                    except OSError:
                        break
                    continue
                tls.settimeout(30)
                continue
            except (ConnectionResetError, ssl.SSLError):
                break
            if not piece:
                break
            received += piece
            if time.monotonic() - started > 60:
                break
        return bytes(received), time.monotonic() - started


TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" \
              b"408 Request Timeout"


@pytest.mark.parametrize("part", ["head", "head-trickle", "body", "body-trickle", "chunked-body"])
def test_slow_requests_get_408(quick_server, part):
    head = b"GET /hello HTTP/1.1\r\nHost: x\r\n"
    post = ("POST /trial HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nAccepts-version: 1.0\r\n"
            % quick_server.material.token).encode()
    first, then = {
        "head": (head, []),
        "head-trickle": (head, [b"X-A: b\r\n"] * 40),
        "body": (post + b"Content-Length: 100\r\n\r\n{", []),
        "body-trickle": (post + b"Content-Length: 100\r\n\r\n{", [b" "] * 40),
        "chunked-body": (post + b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n", []),
    }[part]
    answer, took = _timed_answer(quick_server, first, then, gap=0.2 if then else 0.0)
    assert answer == TIMEOUT_408, answer[:300]
    assert took < 30, took  # one second, on a loaded machine


def test_a_prompt_request_and_an_idle_keep_alive_are_not_timed_out(quick_server):
    """Only a request under way is bounded: a connection that waits between requests longer
    than the request timeout is still served."""
    material = quick_server.material
    keep = request_bytes("GET", wire.HELLO, material).replace(b"Connection: close\r\n", b"")
    context = material.context()
    with socket.create_connection((HOST, quick_server.port), timeout=30) as sock, \
            context.wrap_socket(sock, server_hostname=HOST) as tls:
        for _ in range(2):
            tls.sendall(keep)
            received = b""
            while not received.endswith(b"hello back at ya\n"):
                piece = tls.recv(65536)
                assert piece, received
                received += piece
            assert received.startswith(b"HTTP/1.1 200 OK"), received
            deadline = time.monotonic() + 2.5  # well past the 1 s request timeout
            while time.monotonic() < deadline:
                time.sleep(0.1)


def test_request_timeout_flag_is_checked():
    from copy_offload.server.settings import SettingsError, parse_settings

    assert parse_settings(["--request-timeout", "2.5"], env={}).request_timeout == 2.5
    assert parse_settings([], env={}).request_timeout == 60.0
    for bad in ("0", "-1", "nan"):
        with pytest.raises(SettingsError, match="request-timeout"):
            parse_settings(["--request-timeout", bad], env={})


def test_header_block_over_the_limit_gets_431(server):
    """Go's limit (1 MiB + 4 KiB of head) and its answer; just under it is served."""
    material = server.material
    under = request_bytes("GET", wire.HELLO, material, headers=[("X-Big", "a" * 1_000_000)])
    status, _, body = parse_response(raw_exchange(server, under))
    assert (status, body) == (200, b"hello back at ya\n")
    over = request_bytes("GET", wire.HELLO, material, headers=[("X-Big", "a" * 1_100_000)])
    answer, _ = _timed_answer(server, over)
    assert answer == (b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
                      b"Connection: close\r\n\r\n431 Request Header Fields Too Large"), answer[:300]


def test_write_error_never_raises():
    """An error whose text cannot be worded still gets a one-line answer (a 500), never an
    empty body: write_error catches its own failures."""
    import asyncio

    import tornado.httpserver
    import tornado.netutil
    import tornado.web
    from copy_offload.server.app import ApiError, BaseHandler

    class Unwordable(BaseHandler):
        def check(self) -> None:
            pass

        async def serve(self) -> None:
            raise ApiError(400, None)  # type: ignore[arg-type]

    deps = {"driver": None, "verifier": None, "on_shutdown": lambda: None}
    app = tornado.web.Application([("/x", Unwordable, deps)])

    async def ask() -> httpx.Response:
        sockets = tornado.netutil.bind_sockets(0, HOST)
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        try:
            async with httpx.AsyncClient(trust_env=False) as client:
                return await client.get("http://%s:%d/x" % (HOST, sockets[0].getsockname()[1]))
        finally:
            server.stop()

    response = asyncio.run(ask())
    assert (response.status_code, response.text) == (500, "internal server error\n")
