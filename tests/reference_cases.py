"""The differential request set: raw HTTP/1.1 requests sent byte for byte to the reference Go
server and to ours (both in mock mode, same TLS material and token), and how to read the answers.

Each case is ``(name, data)``; ``data`` is the whole request as bytes, so framing, repeated
headers and odd targets reach each server exactly as written. ``lifecycle_cases`` depends on
the servers' mock state (request names are counted from 0 on both), so it runs in order.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from typing import Dict, List, Optional, Sequence, Tuple

Case = Tuple[str, bytes]
HOST = "127.0.0.1"
DRY = {"computeName": "rabbit-compute-1", "sourcePath": "/mnt/src", "destinationPath": "/lus/dst", "dryrun": True}
REAL = {"computeName": "rabbit-compute-1", "sourcePath": "/mnt/src", "destinationPath": "/lus/dst"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(header: object, claims: object, secret: bytes, raw_header: Optional[str] = None,
         raw_claims: Optional[str] = None, pad: bool = False) -> str:
    """A JWT made by hand, so malformed shapes can be made too."""
    head = raw_header if raw_header is not None else b64(json.dumps(header).encode())
    body = raw_claims if raw_claims is not None else b64(json.dumps(claims).encode())
    if pad:
        head += "=" * (-len(head) % 4)
        body += "=" * (-len(body) % 4)
    signature = b64(hmac.new(secret, ("%s.%s" % (head, body)).encode(), hashlib.sha256).digest())
    return "%s.%s.%s" % (head, body, signature)


def request(method: str, target: str, token: Optional[str], *, version: Optional[str] = "1.0",
            headers: Sequence[Tuple[str, str]] = (), body: bytes = b"", host: Optional[str] = HOST,
            proto: str = "HTTP/1.1", length: bool = True) -> bytes:
    lines = ["%s %s %s" % (method, target, proto)]
    if host is not None:
        lines.append("Host: %s" % host)
    lines.append("Connection: close")
    if token is not None:
        lines.append("Authorization: Bearer %s" % token)
    if version is not None:
        lines.append("Accepts-version: %s" % version)
    lines += ["%s: %s" % item for item in headers]
    if length and (body or method in ("POST", "PUT")):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def token_cases(token: str, secret: bytes) -> List[Case]:
    """Token shapes on GET /hello: what golang-jwt v5 accepts and its words for what it does not."""
    head, claims, sig = token.split(".")
    hs = {"alg": "HS256", "typ": "JWT"}
    now = int(time.time())
    shapes: Dict[str, Optional[str]] = {
        "valid": token,
        "none": None,
        "empty": "",
        "two segments": "%s.%s" % (head, claims),
        "four segments": token + ".x",
        "one segment": head,
        "padded claims": sign(hs, {"sub": "u"}, secret, pad=True),
        "padded signature": token + "=",
        "bad signature": "%s.%s.%s" % (head, claims, b64(b"\0" * 32)),
        "bad base64 header": "!!!.%s.%s" % (claims, sig),
        "bad base64 claims": "%s.!!!.%s" % (head, sig),
        "bad base64 signature": "%s.%s.!!!" % (head, claims),
        "header not json": sign(None, {"sub": "u"}, secret, raw_header=b64(b"not json")),
        "claims not json": sign(hs, None, secret, raw_claims=b64(b"not json")),
        "claims array": sign(hs, None, secret, raw_claims=b64(b"[1,2]")),
        "claims string": sign(hs, None, secret, raw_claims=b64(b'"x"')),
        "header array": sign(None, {"sub": "u"}, secret, raw_header=b64(b"[1]")),
        "alg missing": sign({"typ": "JWT"}, {"sub": "u"}, secret),
        "alg unknown": sign({"alg": "XX999"}, {"sub": "u"}, secret),
        "alg none": "%s.%s." % (b64(b'{"alg":"none"}'), claims),
        "alg HS512": sign({"alg": "HS512"}, {"sub": "u"}, secret),
        "alg RS256": sign({"alg": "RS256"}, {"sub": "u"}, secret),
        "alg number": sign({"alg": 5}, {"sub": "u"}, secret),
        "exp past": sign(hs, {"exp": now - 3600}, secret),
        "exp future": sign(hs, {"exp": now + 3600}, secret),
        "exp string": sign(hs, {"exp": "soon"}, secret),
        "exp float": sign(hs, {"exp": now + 3600.5}, secret),
        "exp bool": sign(hs, {"exp": True}, secret),
        "nbf future": sign(hs, {"nbf": now + 3600}, secret),
        "nbf string": sign(hs, {"nbf": "x"}, secret),
        "iat future": sign(hs, {"iat": now + 3600}, secret),
        "iat string": sign(hs, {"iat": "x"}, secret),
        "aud number": sign(hs, {"aud": 5}, secret),
        "iss number": sign(hs, {"iss": 5}, secret),
        "sub number": sign(hs, {"sub": 5}, secret),
        "empty claims": sign(hs, {}, secret),
        "null claims": sign(hs, None, secret, raw_claims=b64(b"null")),
        "garbage": "garbage",
        "dots": "..",
    }
    cases = [("token " + name, request("GET", "/hello", value)) for name, value in shapes.items()]
    for name, header in [("lower bearer", "bearer " + token), ("no bearer", token), ("bearer only", "Bearer"),
                         ("double bearer", "Bearer Bearer " + token), ("tab", "Bearer\t" + token),
                         ("trailing space", "Bearer " + token + "   "), ("basic", "Basic dXNlcjpwYXNz"),
                         ("bearer suffix", token + " Bearer"), ("nbsp", "Bearer\xa0" + token)]:
        cases.append(("auth " + name, request("GET", "/hello", None, headers=[("Authorization", header)])))
    cases += [
        ("auth repeated good first", request("GET", "/hello", token, headers=[("Authorization", "Bearer x")])),
        ("auth repeated bad first", request("GET", "/hello", "x", headers=[("Authorization", "Bearer " + token)])),
        ("auth repeated empty first", request("GET", "/hello", None,
                                              headers=[("Authorization", ""), ("Authorization", "Bearer " + token)])),
        ("auth lower-case name", request("GET", "/hello", None, headers=[("authorization", "Bearer " + token)])),
    ]
    return cases


def version_cases(token: str) -> List[Case]:
    cases = []
    for name, value in [("missing", None), ("1.1", "1.1"), ("2.0", "2.0"), ("empty", ""), ("spaced", "  1.0  "),
                        ("1.00", "1.00"), ("v1.0", "v1.0")]:
        cases.append(("version " + name, request("GET", "/hello", token, version=value)))
    cases += [
        ("version repeated good first", request("GET", "/hello", token, headers=[("Accepts-version", "2.0")])),
        ("version repeated bad first", request("GET", "/hello", token, version="2.0",
                                               headers=[("Accepts-version", "1.0")])),
        ("version lower-case name", request("GET", "/hello", token, version=None,
                                            headers=[("accepts-version", "1.0")])),
        ("version Accept-Version", request("GET", "/hello", token, version=None,
                                           headers=[("Accept-Version", "1.0")])),
        ("version and no token", request("GET", "/hello", None, version="2.0")),
    ]
    return cases


ROUTES = ["/hello", "/trial", "/list", "/status/nope", "/cancel/nope", "/", "/nope", "/hello/", "/statusx",
          "/status", "/cancel", "/shutdown/", "/HELLO", "/status/", "/cancel/"]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"]


def route_cases(token: str) -> List[Case]:
    """Every route and method (the valid POSTs get an empty body: no copy starts)."""
    cases = []
    for route in ROUTES:
        for method in METHODS:
            target = route + ("?maxWaitSecs=0" if route.startswith("/status/") else "")
            cases.append(("route %s %s" % (method, target), request(method, target, token)))
    for method in METHODS:  # shutdown: only wrong methods here; the POST is in the lifecycle
        if method != "POST":
            cases.append(("route %s /shutdown" % method, request(method, "/shutdown", token)))
    cases.append(("route GET / no token", request("GET", "/", None)))
    cases.append(("route PUT /hello no token", request("PUT", "/hello", None)))
    return cases


def path_cases(token: str) -> List[Case]:
    targets = ["//hello", "/./hello", "/hello/..", "/../hello", "/hello/.", "/status//x?maxWaitSecs=0",
               "/status/a/b?maxWaitSecs=0", "/status/../hello", "/%68ello", "/hello%2F", "/status/%2e%2e/x",
               "/cancel/..%2Fshutdown", "/hello?x=1", "/hello#frag", "/hello;x", "/status/x%00y?maxWaitSecs=0",
               "/status/%zz?maxWaitSecs=0", "/%", "/hello%20", "/status/..?maxWaitSecs=0", "/status/.?maxWaitSecs=0",
               "http://localhost/hello", "https://localhost/hello", "http://other.example:99/hello",
               "HTTP://LOCALHOST/hello", "http://localhost", "http://localhost?x=1", "hello", "*",
               "/status?maxWaitSecs=0", "/cancel?x=1", "//status/x?maxWaitSecs=0", "/hello/../list"]
    cases = [("path %s" % target, request("DELETE" if "/cancel" in target else "GET", target, token))
             for target in targets]
    cases += [("path OPTIONS *", request("OPTIONS", "*", token)), ("path OPTIONS * no token", request("OPTIONS", "*", None)),
              ("path POST *", request("POST", "*", token))]
    return cases


def query_cases(token: str) -> List[Case]:
    queries = ["", "?maxWaitSecs=0", "?maxWaitSecs=", "?maxWaitSecs", "?maxWaitSecs=x", "?maxWaitSecs=-1",
               "?maxWaitSecs=+1", "?maxWaitSecs=0&x=1", "?x=1&maxWaitSecs=0", "?maxWaitSecs=0;x=1", "?%zz",
               "?maxWaitSecs=0&%zz", "?maxWaitSecs=%30", "?maxWaitSecs=0&maxWaitSecs=x", "?maxWaitSecs=x&maxWaitSecs=0",
               "?maxWaitSecs=99999999999999999999", "?maxWaitSecs=0&b=2&a=1", "?maxWaitSecs=0&a=%20+b",
               "?maxWaitSecs=0&&", "?=1&maxWaitSecs=0", "?MAXWAITSECS=0", "?maxWaitSecs=0x10", "?maxWaitSecs=1_0",
               "?maxWaitSecs=0&a=<b>", "?maxWaitSecs=0&k=%e2%82%ac"]
    return [("query %s" % q, request("GET", "/status/nope" + q, token)) for q in queries]


def body_cases(token: str) -> List[Case]:
    """POST /trial bodies that never start a copy (each fails validation or decoding)."""
    bodies = {
        "empty": b"", "not json": b"not json", "nul": b"nul", "null": b"null", "array": b"[]", "number": b"1",
        "string": b'"x"', "true": b"true", "bom": b"\xef\xbb\xbf{}", "open": b"{", "bad key": b"{bad",
        "no colon": b'{"a" 1}', "trailing comma": b'{"a":1,}', "unknown only": b'{"unknown":1}',
        "compute only": b'{"computeName":"c"}', "no dest": b'{"computeName":"c","sourcePath":"s"}',
        "slots -2": b'{"computeName":"c","sourcePath":"s","destinationPath":"d","slots":-2}',
        "maxSlots -5": b'{"computeName":"c","sourcePath":"s","destinationPath":"d","maxSlots":-5}',
        "compute number": b'{"computeName":7}', "slots string": b'{"slots":"1"}', "slots float": b'{"slots":1.5}',
        "slots exp": b'{"slots":1e3}', "slots big": b'{"slots":2147483648}', "dryrun string": b'{"dryrun":"yes"}',
        "invalid utf8": b'{"computeName":"\xff"}', "control char": b'{"computeName":"a\x01"}',
        "bad escape": b'{"computeName":"\\q"}', "bad u escape": b'{"computeName":"\\u12x4"}',
        "surrogate": b'{"computeName":"\\ud800"}', "low surrogate": b'{"sourcePath":"\\udc80","computeName":"c"}',
        "surrogate key": b'{"\\ud800":1}', "nested 100": b"[" * 100 + b"]" * 100,
        "nested 5000": b"[" * 5000 + b"]" * 5000, "nested 10001": b"[" * 10001 + b"]" * 10001,
        "nested 10001 open": b"[" * 10001, "deep object": b'{"a":' * 6000 + b"1" + b"}" * 6000,
        "NaN": b'{"slots":NaN}', "Infinity": b'{"slots":Infinity}', "neg zero": b'{"slots":-0}',
        "leading zero": b'{"slots":01}', "case keys": b'{"COMPUTENAME":"c","SourcePath":"s"}',
        "whitespace": b" \t\r\n", "trailing garbage": b'{"computeName":""} x', "two values": b"{} {}",
        "null fields": b'{"computeName":null,"sourcePath":"s"}', "escape newline": b'{"a":"\\\n"}',
        "escape short u": b'{"a":"\\u"}', "escape u eof": b'{"a":"\\u12', "escape bad byte": b'{"a":"\\\xff"}',
        "top-level e acute": "\u00e9".encode(), "top-level c280": b"\xc2\x80", "top-level ff": b"\xff",
        "literal false": b'{"a":fals}', "literal eof": b"tru", "dup keys": b'{"computeName":"c","computeName":""}',
    }
    cases = [("body %s" % name, request("POST", "/trial", token, body=body)) for name, body in bodies.items()]
    cases.append(("body chunked bad", request("POST", "/trial", token, length=False,
                                              headers=[("Transfer-Encoding", "chunked")], body=b"2\r\n{}\r\n0\r\n\r\n")))
    cases.append(("body json content-type", request("POST", "/trial", token, body=b"{}",
                                                    headers=[("Content-Type", "application/json")])))
    cases.append(("body form content-type", request("POST", "/trial", token, body=b"computeName=c",
                                                    headers=[("Content-Type", "application/x-www-form-urlencoded")])))
    return cases


def framing_cases(token: str) -> List[Case]:
    good = request("GET", "/hello", token).decode("latin-1")
    return [
        ("frame no host", request("GET", "/hello", token, host=None)),
        ("frame no host HTTP/1.0", request("GET", "/hello", token, host=None, proto="HTTP/1.0")),
        ("frame two hosts", request("GET", "/hello", token, headers=[("Host", "x")])),
        ("frame bad host", request("GET", "/hello", token, host="a b")),
        ("frame garbage line", b"garbage\r\n\r\n"),
        ("frame two words", b"GET /hello\r\nHost: x\r\n\r\n"),
        ("frame bad version", request("GET", "/hello", token, proto="HTTP/x.y")),
        ("frame HTTP/1.2", request("GET", "/hello", token, proto="HTTP/1.2")),
        ("frame HTTP/2.0", request("GET", "/hello", token, proto="HTTP/2.0")),
        ("frame HTTP/0.9", request("GET", "/hello", token, proto="HTTP/0.9")),
        ("frame lower-case version", request("GET", "/hello", token, proto="http/1.1")),
        ("frame bad method", request("G(T", "/hello", token)),
        ("frame lower method", request("get", "/hello", token)),
        ("frame header no colon", request("GET", "/hello", token, headers=[("X-A", "b")]).replace(b"X-A: b", b"X-A b")),
        ("frame header space name", request("GET", "/hello", token, headers=[("X A", "b")])),
        ("frame header space before colon", request("GET", "/hello", token, headers=[("X-A ", "b")])),
        ("frame header ctl value", request("GET", "/hello", token, headers=[("X-A", "a\x01b")])),
        ("frame token then vtab", good.replace(token, token + "\x0b").encode("latin-1")),
        ("frame obs-fold", good.replace("Connection: close", "Connection: close\r\n X-Fold").encode("latin-1")),
        ("frame bare LF", good.replace("\r\n", "\n").encode("latin-1")),
        ("frame leading CRLF", b"\r\n" + good.encode("latin-1")),
        ("frame TE gzip", request("POST", "/trial", token, length=False, headers=[("Transfer-Encoding", "gzip")])),
        ("frame TE twice", request("POST", "/trial", token, length=False,
                                   headers=[("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")])
         + b"0\r\n\r\n"),
        ("frame CL bad", request("POST", "/trial", token, length=False, headers=[("Content-Length", "x")])),
        ("frame CL negative", request("POST", "/trial", token, length=False, headers=[("Content-Length", "-1")])),
        ("frame CL two different", request("POST", "/trial", token, length=False,
                                           headers=[("Content-Length", "1"), ("Content-Length", "2")]) + b"{}"),
        ("frame CL two same", request("POST", "/trial", token, length=False,
                                      headers=[("Content-Length", "2"), ("Content-Length", "2")]) + b"{}"),
        ("frame expect other", request("GET", "/hello", token, headers=[("Expect", "fancy")])),
        ("frame expect continue", request("POST", "/trial", token, body=b"{}", headers=[("Expect", "100-continue")])),
        ("frame big header", request("GET", "/hello", token, headers=[("X-Big", "a" * 100000)])),
        ("frame many headers", request("GET", "/hello", token, headers=[("X-%d" % i, "v") for i in range(500)])),
        ("frame nul in target", b"GET /hel\x00lo HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("frame space in target", b"GET /hel lo HTTP/1.1\r\nHost: x\r\n\r\n"),
    ]


def edge_cases(token: str) -> List[Case]:
    """Odd corners found probing both servers: CONNECT, HEAD, bodies where none is read, Host
    forms, chunked and Content-Length edges, query bytes, absolute and opaque targets."""
    return [
        ("CONNECT path", request("CONNECT", "/hello", token)), ("CONNECT authority", request("CONNECT", "localhost:443", token)),
        ("HEAD hello", request("HEAD", "/hello", token)), ("HEAD status", request("HEAD", "/status/x?maxWaitSecs=0", token)),
        ("GET hello body", request("GET", "/hello", token, body=b"xyz")), ("DELETE cancel body", request("DELETE", "/cancel/x", token, body=b"{}")),
        ("HTTP/1.0 hello", request("GET", "/hello", token, proto="HTTP/1.0")), ("HTTP/1.0 no host", request("GET", "/hello", token, proto="HTTP/1.0", host=None)),
        ("host with port", request("GET", "/hello", token, host="localhost:4000")), ("host ipv6", request("GET", "/hello", token, host="[::1]:4000")),
        ("host empty", request("GET", "/hello", token, host="")), ("host utf8", request("GET", "/hello", token, host="h\xe9")),
        ("status query only ?", request("GET", "/status/x?", token)), ("status name encoded slash", request("GET", "/status/a%2Fb?maxWaitSecs=0", token)),
        ("status name dotdot enc", request("GET", "/status/%2e%2e?maxWaitSecs=0", token)), ("status trailing slash", request("GET", "/status/x/?maxWaitSecs=0", token)),
        ("cancel trailing slash", request("DELETE", "/cancel/x/", token)), ("cancel root", request("DELETE", "/cancel/", token)),
        ("status root", request("GET", "/status/?maxWaitSecs=0", token)), ("status wait 1", request("GET", "/status/nope?maxWaitSecs=1", token)),
        ("status wait neg", request("GET", "/status/nope?maxWaitSecs=-5", token)), ("list query", request("GET", "/list?x=1", token)),
        ("hello query", request("GET", "/hello?maxWaitSecs=x", token)), ("trial query", request("POST", "/trial?x=1", token, body=b"{}")),
        ("trial chunked ok", request("POST", "/trial", token, length=False, headers=[("Transfer-Encoding", "chunked")], body=b"2\r\n{}\r\n0\r\n\r\n")),
        ("trial chunked bad size", request("POST", "/trial", token, length=False, headers=[("Transfer-Encoding", "chunked")], body=b"zz\r\n{}\r\n0\r\n\r\n")),
        ("trial TE Chunked", request("POST", "/trial", token, length=False, headers=[("Transfer-Encoding", "Chunked")], body=b"2\r\n{}\r\n0\r\n\r\n")),
        ("trial CL and TE", request("POST", "/trial", token, headers=[("Transfer-Encoding", "chunked")], body=b"2\r\n{}\r\n0\r\n\r\n")),
        ("trial CL short", request("POST", "/trial", token, length=False, headers=[("Content-Length", "2")]) + b"{}garbage"),
        ("trial CL +1", request("POST", "/trial", token, length=False, headers=[("Content-Length", "+1")]) + b"{"),
        ("trial CL spaces", request("POST", "/trial", token, length=False, headers=[("Content-Length", " 2 ")]) + b"{}"),
        ("trial CL 1,1", request("POST", "/trial", token, length=False, headers=[("Content-Length", "2, 2")]) + b"{}"),
        ("trial CL empty", request("POST", "/trial", token, length=False, headers=[("Content-Length", "")])),
        ("auth bearer colon", request("GET", "/hello", None, headers=[("Authorization", "Bearer: " + token)])),
        ("auth bearer in middle", request("GET", "/hello", None, headers=[("Authorization", token[:10] + "Bearer" + token[10:])])),
        ("version tab", request("GET", "/hello", token, version="\t1.0")), ("version 1.0 trailing tab", request("GET", "/hello", token, version="1.0\t")),
        ("expect 100 GET", request("GET", "/hello", token, headers=[("Expect", "100-continue")])),
        ("expect 100 upper", request("POST", "/trial", token, body=b"{}", headers=[("Expect", "100-CONTINUE")])),
        ("header underscore", request("GET", "/hello", token, headers=[("X_A", "b")])), ("header utf8 value", request("GET", "/hello", token, headers=[("X-A", "\xe9")])),
        ("header empty value", request("GET", "/hello", token, headers=[("X-A", "")])), ("header colon name", b"GET /hello HTTP/1.1\r\nHost: x\r\n: v\r\nConnection: close\r\n\r\n"),
        ("tab in request line", b"GET\t/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("double space request line", b"GET  /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("trailing space request line", b"GET /hello HTTP/1.1 \r\nHost: x\r\nConnection: close\r\n\r\n"),
        ("query semicolon only", request("GET", "/status/x?;", token)), ("query plus", request("GET", "/status/x?maxWaitSecs=+0", token)),
        ("query encoded key", request("GET", "/status/x?max%57aitSecs=0", token)), ("query unicode", request("GET", "/status/x?maxWaitSecs=0&\xe9=1", token)),
        ("query space", request("GET", "/status/x?maxWaitSecs=0&a b", token)), ("path unicode", request("GET", "/h\xe9llo", token)),
        ("path encoded unicode", request("GET", "/status/%C3%A9?maxWaitSecs=0", token)), ("path bad utf8 enc", request("GET", "/status/%ff?maxWaitSecs=0", token)),
        ("path backslash", request("GET", "/hello\\", token)), ("path dot only", request("GET", "/.", token)), ("path dotdot only", request("GET", "/..", token)),
        ("path double dot middle", request("GET", "/status/a/../b?maxWaitSecs=0", token)), ("path many slashes", request("GET", "///hello", token)),
        ("path /./", request("GET", "/./", token)), ("abs https port", request("GET", "https://127.0.0.1:4000/hello", token)),
        ("abs userinfo", request("GET", "http://u@h/hello", token)), ("abs no slash query", request("GET", "http://h?a", token)),
        ("abs path dots", request("GET", "http://h/a/../hello", token)), ("abs ftp", request("GET", "ftp://h/hello", token)),
        ("abs weird scheme", request("GET", "a+b://h/hello", token)), ("opaque", request("GET", "mailto:x", token)),
        ("relative", request("GET", "hello/x", token)), ("star GET", request("GET", "*", token)), ("OPTIONS * body", request("OPTIONS", "*", None, body=b"abc")),
        ("OPTIONS * 1.0", request("OPTIONS", "*", None, proto="HTTP/1.0", host=None)),
        ("token with space inside", request("GET", "/hello", None, headers=[("Authorization", "Bearer " + token[:20] + " " + token[20:])])),
        ("token utf8", request("GET", "/hello", None, headers=[("Authorization", "Bearer \xc3\xa9" + token)])),
        ("token newline in b64", request("GET", "/hello", None, headers=[("Authorization", "Bearer " + token)])),
        ("method lowercase post", request("post", "/trial", token, body=b"{}")), ("method long", request("X" * 300, "/hello", token)),
        ("shutdown with body", request("PUT", "/shutdown", token, body=b"x")),
    ]


def more_edge_cases(token: str) -> List[Case]:
    """A second probe: pipelining, JSON number and type corners, query bytes, redirects of odd
    paths, headers the reference ignores, chunk extensions and trailers."""
    return [
        ("pipelined two", (request("GET", "/hello", token).replace(b"Connection: close\r\n", b"") + request("GET", "/list", token))),
        ("pipelined bad second", (request("GET", "/hello", token).replace(b"Connection: close\r\n", b"") + b"garbage\r\n\r\n")),
        ("trial options", request("POST", "/trial", token, body=json.dumps(dict(DRY, sourcePath="", dcpOptions="-x", logStdout=True, storeStdout=True, slots=3, maxSlots=5, dmProfile="p", mpirunOptions="-n 2")).encode())),
        ("trial slots -1", request("POST", "/trial", token, body=json.dumps(dict(DRY, sourcePath="", slots=-1, maxSlots=-1)).encode())),
        ("trial huge string", request("POST", "/trial", token, body=json.dumps(dict(computeName="c"*5000)).encode())),
        ("trial unicode fields", request("POST", "/trial", token, body=json.dumps({"computeName":"\u00e9","sourcePath":""}).encode())),
        ("trial number exp", request("POST", "/trial", token, body=b'{"slots":1E2}')),
        ("trial number neg exp", request("POST", "/trial", token, body=b'{"slots":-1e-2}')),
        ("trial big int", request("POST", "/trial", token, body=b'{"slots":99999999999999999999999}')),
        ("trial dryrun null", request("POST", "/trial", token, body=b'{"dryrun":null,"computeName":"c"}')),
        ("trial array field", request("POST", "/trial", token, body=b'{"computeName":["a"]}')),
        ("trial object field", request("POST", "/trial", token, body=b'{"computeName":{}}')),
        ("trial bool to string", request("POST", "/trial", token, body=b'{"computeName":true}')),
        ("trial string to bool", request("POST", "/trial", token, body=b'{"dryrun":"true"}')),
        ("trial number to bool", request("POST", "/trial", token, body=b'{"dryrun":1}')),
        ("trial nested unknown", request("POST", "/trial", token, body=b'{"x":{"y":[1,2,{"z":null}]},"computeName":""}')),
        ("trial unterminated obj", request("POST", "/trial", token, body=b'{"computeName":"c"')),
        ("trial colon missing value", request("POST", "/trial", token, body=b'{"computeName":}')),
        ("trial single quote", request("POST", "/trial", token, body=b"{'a':1}")),
        ("trial comment", request("POST", "/trial", token, body=b'{/*x*/}')),
        ("trial key not string", request("POST", "/trial", token, body=b'{1:2}')),
        ("trial NUL", request("POST", "/trial", token, body=b'\x00')),
        ("trial spaces then value", request("POST", "/trial", token, body=b'   \n {}')),
        ("trial minus", request("POST", "/trial", token, body=b'{"slots":-}')),
        ("trial dot", request("POST", "/trial", token, body=b'{"slots":1.}')),
        ("trial plus num", request("POST", "/trial", token, body=b'{"slots":+1}')),
        ("trial hex", request("POST", "/trial", token, body=b'{"slots":0x1}')),
        ("trial escaped key", request("POST", "/trial", token, body=b'{"\\u0063omputeName":""}')),
        ("trial utf16 pair", request("POST", "/trial", token, body=b'{"computeName":"\\ud83d\\ude00","sourcePath":""}')),
        ("trial U+2028", request("POST", "/trial", token, body='{"computeName":"a\u2028"}'.encode())),
        ("trial tab in json", request("POST", "/trial", token, body=b'{\t"computeName"\t:\t""}')),
        ("status many params", request("GET", "/status/x?a=1&b=2&c=3&maxWaitSecs=0", token)),
        ("status repeated other", request("GET", "/status/x?a=2&a=1&maxWaitSecs=0", token)),
        ("status encoded amp", request("GET", "/status/x?maxWaitSecs=0&a=%26", token)),
        ("status value with =", request("GET", "/status/x?maxWaitSecs=0&a=b=c", token)),
        ("status encoded chars", request("GET", "/status/x?maxWaitSecs=0&a=%21%2A%27%28%29", token)),
        ("status tilde", request("GET", "/status/x?maxWaitSecs=0&a=~", token)),
        ("status wait huge", request("GET", "/status/x?maxWaitSecs=9223372036854775808", token)),
        ("status wait max", request("GET", "/status/x?maxWaitSecs=9223372036854775807", token)),
        ("status wait spaces", request("GET", "/status/x?maxWaitSecs=%201", token)),
        ("status name with --", request("GET", "/status/a--b?maxWaitSecs=0", token)),
        ("status name mock like", request("GET", "/status/mock-rabbit-01--nnf-copy-offload-node-999?maxWaitSecs=0", token)),
        ("cancel name mock like", request("DELETE", "/cancel/mock-rabbit-01--nnf-copy-offload-node-999", token)),
        ("cancel query", request("DELETE", "/cancel/x?y=1", token)),
        ("cancel encoded", request("DELETE", "/cancel/%78", token)),
        ("list wrong version", request("GET", "/list", token, version="0.9")),
        ("shutdown GET", request("GET", "/shutdown", token)),
        ("shutdown no token", request("POST", "/shutdown", None)),
        ("shutdown bad version", request("POST", "/shutdown", token, version="2")),
        ("hello HEAD no token", request("HEAD", "/hello", None)),
        ("nope HEAD", request("HEAD", "/nope", token)),
        ("redirect HEAD", request("HEAD", "//hello", token)),
        ("redirect POST", request("POST", "//trial", token, body=b"{}")),
        ("redirect with html chars", request("GET", "//x<y>?a=\"&'", token)),
        ("redirect encoded", request("GET", "//a%20b", token)),
        ("redirect unicode", request("GET", "//\xe9", token)),
        ("token huge", request("GET", "/hello", "a"*60000)),
        ("auth only spaces", request("GET", "/hello", None, headers=[("Authorization", "   ")])),
        ("auth Bearer tab only", request("GET", "/hello", None, headers=[("Authorization", "Bearer\t")])),
        ("version twice same", request("GET", "/hello", token, headers=[("Accepts-version", "1.0")])),
        ("content-type json", request("GET", "/hello", token, headers=[("Content-Type", "application/json")])),
        ("accept header", request("GET", "/hello", token, headers=[("Accept", "application/json")])),
        ("accept-encoding gzip", request("GET", "/status/x?maxWaitSecs=0", token, headers=[("Accept-Encoding", "gzip")])),
        ("content-encoding gzip body", request("POST", "/trial", token, body=b"\x1f\x8b\x08\x00", headers=[("Content-Encoding", "gzip")])),
        ("upgrade h2c", request("GET", "/hello", token, headers=[("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")])),
        ("upgrade websocket", request("GET", "/hello", token, headers=[("Upgrade", "websocket")])),
        ("x-forwarded", request("GET", "/hello", token, headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Real-Ip", "1.2.3.4")])),
        ("trailer chunked", request("POST", "/trial", token, length=False, headers=[("Transfer-Encoding", "chunked")], body=b"2\r\n{}\r\n0\r\nX-T: 1\r\n\r\n")),
        ("chunk ext", request("POST", "/trial", token, length=False, headers=[("Transfer-Encoding", "chunked")], body=b"2;x=y\r\n{}\r\n0\r\n\r\n")),
    ]


GROUPS = ("edges", "more", "tokens", "versions", "routes", "paths", "queries", "bodies", "framing")
GOLDEN = "reference_answers.json"  # the reference's answers to GROUPS, recorded by the reference tier


def group_cases(group: str, token: str, secret: bytes) -> List[Case]:
    if group == "tokens":
        return token_cases(token, secret)
    return {"edges": edge_cases, "more": more_edge_cases, "versions": version_cases, "routes": route_cases, "paths": path_cases, "queries": query_cases,
            "bodies": body_cases, "framing": framing_cases}[group](token)


def lifecycle_cases(token: str) -> List[Case]:
    """In order: copies made, listed, polled, cancelled; a busy shutdown refused, then shut down."""
    name0 = "mock-rabbit-01--nnf-copy-offload-node-0"
    name1 = "mock-rabbit-01--nnf-copy-offload-node-1"
    return [
        ("life list empty", request("GET", "/list", token)),
        ("life trial", request("POST", "/trial", token, body=json.dumps(REAL).encode())),
        ("life trial surrogate path", request("POST", "/trial", token,
                                              body=b'{"computeName":"c","sourcePath":"/a\\ud800","destinationPath":"/b"}')),
        ("life list two", request("GET", "/list", token)),
        ("life shutdown busy", request("POST", "/shutdown", token)),
        ("life status first", request("GET", "/status/%s?maxWaitSecs=0" % name0, token)),
        ("life status other workflow name", request("GET", "/status/other--x?maxWaitSecs=0", token)),
        ("life cancel first", request("DELETE", "/cancel/" + name0, token)),
        ("life cancel first again", request("DELETE", "/cancel/" + name0, token)),
        ("life status cancelled", request("GET", "/status/%s?maxWaitSecs=0" % name0, token)),
        ("life cancel second", request("DELETE", "/cancel/" + name1, token)),
        ("life list after", request("GET", "/list", token)),
        ("life shutdown", request("POST", "/shutdown", token)),
    ]


# --------------------------------------------------------------------------- exchange

_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")


class Answer:
    """One response as the comparison sees it: status, the headers that carry meaning, body."""

    KEPT = ("content-type", "location", "allow")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        while re.match(rb"HTTP/1\.[01] 1\d\d", raw):  # an interim answer (100 Continue): the next one
            raw = raw.partition(b"\r\n\r\n")[2]
        match = _STATUS.match(raw)
        self.status = int(match.group(1)) if match else 0
        head, _, rest = raw.partition(b"\r\n\r\n")
        headers: Dict[str, str] = {}
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        self.headers = {k: v for k, v in headers.items() if k in self.KEPT}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            rest = _dechunk(rest)
        elif "content-length" in headers:
            rest = rest[: int(headers["content-length"])]
        self.body = rest if match else raw

    def key(self) -> Tuple[int, Tuple[Tuple[str, str], ...], bytes]:
        return self.status, tuple(sorted(self.headers.items())), self.body

    def record(self) -> Dict[str, object]:
        """The comparable part as JSON (the body as latin-1 text, byte for byte)."""
        return {"status": self.status, "headers": self.headers, "body": self.body.decode("latin-1")}

    @staticmethod
    def from_record(record: Dict[str, object]) -> Tuple[int, Tuple[Tuple[str, str], ...], bytes]:
        headers = record["headers"]
        assert isinstance(headers, dict)
        return (int(record["status"]), tuple(sorted(headers.items())),  # type: ignore[call-overload]
                str(record["body"]).encode("latin-1"))

    def __repr__(self) -> str:
        return "%d %s %r" % (self.status, self.headers, self.body[:300])


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return bytes(out)
