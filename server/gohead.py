"""Go net/http's rules for an HTTP/1.x request head, and the bytes Go answers a broken one with.

The reference server is Go's ``http.Server``: a request head it refuses never reaches a handler,
and the client gets one of a few fixed answers (``400 Bad Request``, ``400 Bad Request: missing
required Host header``, ``505``, ``501 Unsupported transfer encoding``...). Tornado refuses other
things and answers them with an empty 400, so the connection layer runs this check first and
sends Go's answer. Pure: bytes in, bytes or ``GoAnswer`` out.
"""

from __future__ import annotations

import http
import re
from typing import Dict, List, Optional, Tuple

_ERROR_HEADERS = b"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_KEY = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z ]+")  # a token, or with spaces (Go keeps those as-is)
_BAD_VALUE_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # all but HTAB, SP, VCHAR and obs-text
_HOST_BYTES = re.compile(rb"[0-9A-Za-z!$%&()*+,\-.:;=\[\]'_~]*")
_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*:")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


class GoAnswer(Exception):
    """A request head Go refuses: ``answer`` is the whole response Go writes before it closes."""

    def __init__(self, answer: bytes, reason: str) -> None:
        super().__init__(reason)
        self.answer = answer
        self.reason = reason


def status_answer(code: int, text: str = "") -> GoAnswer:
    """Go's ``statusError`` answer (or its bare ``400 Bad Request`` when ``text`` is empty)."""
    head = "%d %s" % (code, http.HTTPStatus(code).phrase) + (": " + text if text else "")
    data = head.encode()
    return GoAnswer(b"HTTP/1.1 " + data + _ERROR_HEADERS + data, text or head)


def bad_request(reason: str) -> GoAnswer:
    """Go's plain ``400 Bad Request`` (the ``reason`` is only for our log)."""
    answer = status_answer(400)
    answer.reason = reason
    return answer


UNSUPPORTED_TE = GoAnswer(b"HTTP/1.1 501 Not Implemented" + _ERROR_HEADERS + b"Unsupported transfer encoding",
                          "unsupported transfer encoding")
HEADERS_TOO_LARGE = status_answer(431)
REQUEST_TIMEOUT = status_answer(408)
EXPECTATION_FAILED = GoAnswer(b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                              "unsupported Expect")
MAX_HEADER_COUNT = 500  # Go's DefaultMaxHeaderValueCount
STAR_BAD_REQUEST = GoAnswer(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                            "PRI * HTTP/2.0 on HTTP/1")
PLAIN_HTTP_ON_TLS = GoAnswer(b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
                             "client sent an HTTP request to an HTTPS server")


def looks_like_http(first: bytes) -> bool:
    """Go's ``tlsRecordHeaderLooksLikeHTTP``: the first five bytes on a TLS port."""
    return first in (b"GET /", b"HEAD ", b"POST ", b"PUT /", b"OPTIO")


def _value_ok(value: bytes) -> bool:
    """textproto's ``validHeaderValueByte``: HTAB, SP, VCHAR and obs-text."""
    return _BAD_VALUE_BYTE.search(value) is None


def _version(proto: bytes) -> Optional[Tuple[int, int]]:
    """Go's ``ParseHTTPVersion``: ``HTTP/X.Y`` with one digit each."""
    if proto == b"HTTP/1.1":
        return 1, 1
    if proto == b"HTTP/1.0":
        return 1, 0
    if len(proto) != 8 or not proto.startswith(b"HTTP/") or proto[6:7] != b"." \
            or not proto[5:6].isdigit() or not proto[7:8].isdigit():
        return None
    return int(proto[5:6]), int(proto[7:8])


def _origin_form(target: bytes) -> bytes:
    """The origin-form of a request target as Go's ``url.ParseRequestURI`` reads it.

    Absolute-form (``http://host/path?q``) becomes ``/path?q``; a target Go cannot parse
    raises its plain 400.
    """
    if not target or any(byte < 0x20 or byte == 0x7F for byte in target):
        raise bad_request("invalid request target")
    if target == b"*":
        return target
    path = target.split(b"?", 1)[0]
    scheme = _SCHEME.match(target)
    if target.startswith(b"/"):
        rest = target
    elif scheme:
        hier = target[scheme.end():]
        if not hier.startswith(b"//"):  # opaque ("mailto:x"): an empty path, its query kept
            _, question, query = hier.partition(b"?")
            return b"/." + question + query
        hier = hier[2:]
        cut = min([i for i in (hier.find(b"/"), hier.find(b"?")) if i >= 0] or [len(hier)])
        authority, rest = hier[:cut], hier[cut:]
        if not _HOST_BYTES.fullmatch(authority.rpartition(b"@")[2]):
            raise bad_request("invalid host in request target")
        if not rest.startswith(b"/"):
            rest = b"/." + rest  # Go's empty path: its mux redirects it to "/", as it does "/."
        path = rest.split(b"?", 1)[0]
    else:
        raise bad_request("invalid URI for request")
    if _BAD_ESCAPE.search(path):
        raise bad_request("invalid URL escape")
    return rest


class RequestHead:
    """A request head that passed Go's checks: its method, origin-form target and raw bytes to
    hand on (the start line rewritten when the target was absolute-form)."""

    def __init__(self, method: str, target: bytes, data: bytes, headers: Dict[str, List[bytes]]) -> None:
        self.method = method
        self.target = target
        self.data = data
        self.headers = headers


def check_request_head(data: bytes, after_post: bool = False) -> RequestHead:
    """Run Go's request-head checks on ``data`` (start line through the blank line), in Go's order.

    ``after_post``: the previous request on this connection was a POST, so Go skips up to
    four CR/LF bytes before this one (RFC 7230 section 3 tolerance).
    """
    if after_post:
        skip = len(data[:4]) - len(data[:4].lstrip(b"\r\n"))
        data = data[skip:]
    lines = [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")]
    method, sp1, rest = lines[0].partition(b" ")
    target, sp2, proto = rest.partition(b" ")
    if not sp1 or not sp2:
        raise bad_request("malformed HTTP request")
    if not _TOKEN.fullmatch(method):
        raise bad_request("invalid method")
    version = _version(proto)
    if version is None:
        raise bad_request("malformed HTTP version")
    origin = target if method == b"CONNECT" and not target.startswith(b"/") else _origin_form(target)
    headers: Dict[str, List[bytes]] = {}
    fields: List[Tuple[bytes, bytes]] = []
    folded = False
    body_lines = lines[1:]
    if body_lines and body_lines[0][:1] in (b" ", b"\t"):
        raise bad_request("malformed MIME header initial line")
    for line in body_lines:
        if not line:
            break
        if line[:1] in (b" ", b"\t") and fields:  # obs-fold: Go joins it with one space
            key, value = fields[-1]
            fields[-1] = (key, (value.rstrip(b" \t") + b" " + line.strip(b" \t")).strip(b" \t"))
            folded = True
            continue
        key, colon, value = line.partition(b":")
        if not colon or not _KEY.fullmatch(key):
            raise bad_request("malformed MIME header line")
        if not _value_ok(value):
            raise bad_request("malformed MIME header line")
        if len(fields) >= MAX_HEADER_COUNT:
            raise HEADERS_TOO_LARGE
        fields.append((key, value.strip(b" \t")))
    for key, value in fields:
        name = key.decode("latin-1")
        if b" " not in key:
            name = "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))
        headers.setdefault(name, []).append(value)
    hosts = headers.get("Host", [])
    if len(hosts) > 1:
        raise bad_request("too many Host headers")
    _check_transfer(headers)
    if version == (2, 0) and method == b"PRI" and target == b"*":
        raise STAR_BAD_REQUEST  # Go lets the h2 preface through to its mux, which refuses "*"
    if version[0] != 1:
        raise status_answer(505, "unsupported protocol version")
    if version >= (1, 1) and not hosts and method != b"CONNECT":
        raise status_answer(400, "missing required Host header")
    if len(hosts) == 1 and not _HOST_BYTES.fullmatch(hosts[0]):
        raise status_answer(400, "malformed Host header")
    if any(not _TOKEN.fullmatch(name.encode("latin-1")) for name in headers):
        raise status_answer(400, "invalid header name")
    expect = headers.get("Expect", [b""])[0]
    if expect and expect.lower() != b"100-continue":
        raise EXPECTATION_FAILED
    if "Transfer-Encoding" in headers and "Content-Length" in headers:
        # Go: chunked wins and Content-Length is dropped (Tornado would refuse the pair).
        fields = [field for field in fields if field[0].lower() != b"content-length"]
        del headers["Content-Length"]
        folded = True
    if origin != target or folded:
        # Tornado gets the origin-form target and the folded lines joined, as Go read them.
        head = [b"%s %s %s" % (method, origin, proto)] + [b"%s: %s" % field for field in fields]
        data = b"\r\n".join(head) + b"\r\n\r\n"
    return RequestHead(method.decode("latin-1"), origin, data, headers)


def _check_transfer(headers: Dict[str, List[bytes]]) -> None:
    """Go's ``readTransfer`` checks: one Transfer-Encoding, ``chunked`` only; a Content-Length of
    digits, the same in every copy."""
    codings = headers.get("Transfer-Encoding")
    if codings is not None:
        if len(codings) != 1 or codings[0].lower() != b"chunked":
            raise UNSUPPORTED_TE
        return
    lengths = headers.get("Content-Length")
    if lengths is None:
        return
    first = lengths[0].strip(b" \t")
    if any(value.strip(b" \t") != first for value in lengths[1:]):
        raise bad_request("multiple Content-Length headers")
    if not first.isdigit() or len(first) > 19 or int(first) >= 1 << 63:
        raise bad_request("bad Content-Length")
