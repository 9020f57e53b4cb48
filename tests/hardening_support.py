"""Shared parts of the hardening suites: one long-lived server per module, raw HTTP, secret scans.

The hostile matrix talks to a real ``copy-offload-server`` (TLS, token) over loopback, either
through httpx (well-formed HTTP with hostile contents) or through a raw TLS socket (bytes httpx
refuses to send). Every server started here has its log scanned for secrets when it stops.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import socket
import ssl
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import httpx
from copy_offload.client import wire
from copy_offload.server import pki
from support import HOST, Material, ServerProcess, server_args


class QuietServer(ServerProcess):
    """A ServerProcess whose repr stays short: Hypothesis prints its test arguments, and the
    default dataclass repr would carry the whole (growing) log."""

    def __repr__(self) -> str:
        return "<server %s pid %s>" % (self.url, self.process.pid if self.process else None)

    def _repr_pretty_(self, printer, cycle) -> None:  # Hypothesis's pretty printer
        printer.text(repr(self))


def start_server(material: Material, driver: str = "mock", extra: Sequence[str] = (),
                 log_level: str = "debug") -> ServerProcess:
    """A server at ``debug`` log level, so the secret scan sees everything the server can log."""
    args = server_args(material, extra=["--driver", driver, "--log-level", log_level, *extra])
    return QuietServer(args=args, env=dict(os.environ), tls=True, material=material).start()


@contextlib.contextmanager
def running_server(material: Material, driver: str = "mock", extra: Sequence[str] = ()) -> Iterator[ServerProcess]:
    """A server for a whole test module that must survive it: alive at the end, a clean log."""
    proc = start_server(material, driver, extra)
    try:
        yield proc
    finally:
        alive = proc.process.poll() is None
        proc.stop()
    assert alive, "the server died:\n" + proc.log[-3000:]
    assert_clean_log(proc)


def auth_headers(material: Material) -> Dict[str, str]:
    return {wire.AUTH_HEADER: "%s %s" % (wire.BEARER, material.token), wire.VERSION_HEADER: wire.API_VERSION}


def http_client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, verify=server.material.context(), timeout=30.0, trust_env=False)


# --------------------------------------------------------------------------- secrets


def secret_needles(material: Material) -> List[str]:
    """Strings that must never appear in a log or an error body.

    The token and its signature; the token key's and the TLS key's base64 (each PEM line and
    the whole body) and the HMAC secret in hex.
    """
    needles = [material.token, material.token.rsplit(".", 1)[1]]
    for path in (material.token_key, material.key):
        with open(path, "rb") as handle:
            pem = handle.read()
        der = pki.pem_der(pem)
        needles.append(base64.b64encode(der).decode())
        needles.append(der.hex())
        needles += [line.decode() for line in pem.splitlines() if len(line) >= 32 and b"-----" not in line]
    return needles


def leaked(text: str, material: Material) -> List[str]:
    """The needles found in ``text`` (shortened, so a failing assert does not print a secret)."""
    return [needle[:6] + "..." for needle in secret_needles(material) if needle in text]


def assert_no_secrets(server: ServerProcess) -> None:
    found = leaked(server.log, server.material)
    assert not found, "secret material in the server log: %s" % found


LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING) [\w.]+: [^\x00-\x1f\x7f]*\n")


def assert_clean_log(server: ServerProcess) -> None:
    """No secret, no traceback or error, and every line a whole log record: nothing a client sent
    (a newline, an escape sequence) can forge or break a line."""
    assert_no_secrets(server)
    bad = [line for line in server.log_lines if not LOG_LINE.fullmatch(line)]
    assert not bad, "malformed or error log lines: %r" % [line[:300] for line in bad[:5]]


# --------------------------------------------------------------------------- answers


def check_error_answer(status: int, body: bytes, content_type: str, material: Material) -> None:
    """A client's mistake: a 4xx (or the reference's 501 for a wrong method) with one line of text."""
    assert 400 <= status < 500 or status == 501, (status, body[:200])
    assert content_type.startswith("text/plain"), content_type
    text = body.decode("utf-8")
    assert text.endswith("\n") and text.count("\n") == 1, repr(text[:300])
    assert text.strip(), repr(text)
    assert not leaked(text, material), "secret in an error body"


def check_answer(response: httpx.Response, material: Material, allowed: Iterable[int]) -> None:
    """Any answer: never a 5xx, an expected code, and a clear text when it is an error."""
    allowed = set(allowed)
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        check_error_answer(response.status_code, response.content, response.headers.get("content-type", ""),
                           material)


# --------------------------------------------------------------------------- raw HTTP


def raw_exchange(server: ServerProcess, data: bytes, timeout: float = 15.0,
                 chunks: Optional[Iterable[bytes]] = None, first_response: bool = False) -> bytes:
    """Send ``data`` (then ``chunks``) on a fresh TLS connection; return all bytes until close,
    or (``first_response``) until one whole response has arrived."""
    return exchange(server.port, server.material.context(), data, timeout, chunks, first_response)


def exchange(port: int, context: Optional[ssl.SSLContext], data: bytes, timeout: float = 15.0,
             chunks: Optional[Iterable[bytes]] = None, first_response: bool = False) -> bytes:
    """``raw_exchange`` on any port, over TLS with ``context`` or plain without one; a server
    that closes while we still send (a refused request) is not an error."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        conn = context.wrap_socket(sock, server_hostname=HOST) if context is not None else sock
        try:
            try:
                conn.sendall(data)
                for chunk in chunks or ():
                    conn.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            received = bytearray()
            while not (first_response and _complete(bytes(received))):
                try:
                    piece = conn.recv(65536)
                except (ConnectionResetError, ssl.SSLError):
                    break
                if not piece:
                    break
                received += piece
            return bytes(received)
        finally:
            if conn is not sock:
                conn.close()


def _complete(raw: bytes) -> bool:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return len(rest) >= (int(match.group(1)) if match else 0)


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[^\r\n]*\r\n")


def parse_response(raw: bytes) -> Tuple[int, Dict[str, str], bytes]:
    """The first response in ``raw``: (status, lower-cased headers, body by Content-Length)."""
    match = _STATUS_LINE.match(raw)
    assert match, "no HTTP response: %r" % raw[:200]
    head, _, rest = raw.partition(b"\r\n\r\n")
    headers: Dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    if "content-length" not in headers and headers.get("connection", "").lower() == "close":
        return int(match.group(1)), headers, rest  # Go's framing answers: the body runs to the close
    length = int(headers.get("content-length", "0"))
    return int(match.group(1)), headers, rest[:length]


def request_bytes(method: str, target: str, material: Material, body: bytes = b"",
                  headers: Sequence[Tuple[str, str]] = (), auth: bool = True) -> bytes:
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: %s" % HOST, "Connection: close"]
    if auth:
        lines += ["%s: %s" % item for item in auth_headers(material).items()]
    lines += ["%s: %s" % item for item in headers]
    if body or method in ("POST", "PUT"):
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
