"""HTTP/1.1 for the client on the standard library alone: the request bytes, a sans-I/O answer
parser, and keep-alive connections over ``socket`` + ``ssl`` for the blocking client.

Why not httpx: importing it costs about 100 ms, several times what a job step's one call to its
server should cost in all. The copy-offload API needs little: small bodies with a length,
keep-alive, TLS. The asyncio twin of :class:`Pool` is in ``transport_async``.
"""

from __future__ import annotations

import re
import select
import socket
import ssl
import threading
import urllib.parse
from typing import Dict, List, Optional, Tuple

#: An answer's head (status line and headers) may not be longer than this.
MAX_HEAD_BYTES = 64 * 1024
#: Nor its body: the largest real one (a status with stored stdout) is far smaller.
MAX_BODY_BYTES = 64 * 1024 * 1024
READ_SIZE = 65536
#: Methods resent once when a kept-alive connection turns out closed before any answer.
RETRY_METHODS = ("GET", "DELETE")

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: |$)")
_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")
_PATH_SAFE = "!$&'()*+,/:;=?@~%"


class AnswerError(Exception):
    """The peer's bytes are not a well-formed HTTP/1.1 answer (``empty``: it sent none at all)."""

    def __init__(self, text: str, empty: bool = False) -> None:
        super().__init__(text)
        self.empty = empty


class HandshakeTimeout(socket.timeout):
    """The TCP connection opened but no TLS handshake followed: most often a plain-HTTP server."""


def request_bytes(method: str, host_header: str, path: str, headers: Dict[str, str],
                  body: Optional[bytes]) -> bytes:
    """One request; the path is percent-encoded, so a name cannot break out of the request line."""
    lines = ["%s %s HTTP/1.1" % (method, urllib.parse.quote(path, safe=_PATH_SAFE)), "Host: " + host_header]
    lines += ["%s: %s" % (name, value) for name, value in headers.items()]
    if body is not None or method == "POST":
        lines.append("Content-Length: %d" % len(body or b""))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def _not_http(first: bytes) -> str:
    if first[:1] in (b"\x15", b"\x16"):
        return ("the server answered in TLS, not plain HTTP: connect with TLS "
                "(leave out --no-tls; tls=True in Python)")
    return "not an HTTP answer (it starts %r)" % first[:40]


class Answer:
    """One HTTP/1.1 answer, read from bytes as they arrive: ``feed`` them, ``at_eof`` on close."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""
        self.done = False
        self.keep_alive = True
        self.received = 0
        self._buffer = bytearray()
        self._head_done = False
        self._chunked = False
        self._length = -1  # -1: until the peer closes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        self._buffer += data
        if not self._head_done:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    raise AnswerError("an answer whose head is longer than %d bytes" % MAX_HEAD_BYTES)
                if self._buffer[:1] in (b"\x15", b"\x16"):
                    raise AnswerError(_not_http(bytes(self._buffer)))
                return
            self._read_head(bytes(self._buffer[:end]))
            del self._buffer[:end + 4]
        self._read_body()

    def at_eof(self) -> None:
        """The peer closed: complete a body that runs until the close, else say what is missing."""
        if self.done:
            return
        if self._head_done and not self._chunked and self._length < 0:
            self.body, self.done = bytes(self._buffer), True
            return
        if self.received == 0:
            raise AnswerError("the connection was closed before any answer", empty=True)
        if not self._head_done and self._buffer[:5] != b"HTTP/":
            raise AnswerError(_not_http(bytes(self._buffer)))
        raise AnswerError("the answer was cut short (%d bytes)" % self.received)

    def _read_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        match = _STATUS_LINE.match(lines[0])
        if not match:
            raise AnswerError(_not_http(lines[0]))
        self.status = int(match.group(2))
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name.strip():
                raise AnswerError("a malformed header line in the answer")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        connection = headers.get("connection", "").lower()
        self.keep_alive = connection == "keep-alive" if match.group(1) == b"0" else connection != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                raise AnswerError("a bad Content-Length in the answer: %r" % length[:40])
            self._length = int(length)
        elif self.status in (204, 304) or self.status < 200:
            self._length = 0
        else:
            self.keep_alive = False
        self._head_done = True

    def _read_body(self) -> None:
        if self._chunked:
            self._read_chunks()
        elif self._length >= 0:
            if len(self._buffer) >= self._length:
                self.body, self.done = bytes(self._buffer[:self._length]), True
        elif len(self._buffer) > MAX_BODY_BYTES:
            raise AnswerError("an answer longer than %d bytes" % MAX_BODY_BYTES)

    def _read_chunks(self) -> None:
        parts: List[bytes] = []
        buffer, pos, size_sum = self._buffer, 0, 0
        while True:
            eol = buffer.find(b"\r\n", pos)
            if eol < 0:
                return
            size_text = bytes(buffer[pos:eol]).split(b";", 1)[0].strip()
            if not _HEX.fullmatch(size_text):
                raise AnswerError("a bad chunk size in the answer")
            size = int(size_text, 16)
            size_sum += size
            if size_sum > MAX_BODY_BYTES:
                raise AnswerError("an answer longer than %d bytes" % MAX_BODY_BYTES)
            if size == 0:
                if buffer.find(b"\r\n\r\n", eol) < 0:
                    return
                self.body, self.done = b"".join(parts), True
                return
            start = eol + 2
            if len(buffer) < start + size + 2:
                return
            parts.append(bytes(buffer[start:start + size]))
            pos = start + size + 2


def may_retry(method: str, reused: bool, exc: Exception) -> bool:
    """A kept-alive connection the server had closed: resend once, where resending is harmless."""
    closed = isinstance(exc, (ConnectionResetError, BrokenPipeError)) or \
        (isinstance(exc, AnswerError) and exc.empty)
    return reused and closed and method in RETRY_METHODS


def host_header(host: str, port: int) -> str:
    return "%s:%d" % ("[%s]" % host if ":" in host else host, port)


class Pool:
    """Kept-alive connections to one server for the blocking client; safe to share between threads."""

    def __init__(self, host: str, port: int, context: Optional[ssl.SSLContext], connect_timeout: float) -> None:
        self.host, self.port, self.context = host, port, context
        self.connect_timeout = connect_timeout
        self._idle: List[socket.socket] = []
        self._lock = threading.Lock()

    def request(self, method: str, path: str, headers: Dict[str, str], body: Optional[bytes],
                read_timeout: Optional[float]) -> Answer:
        data = request_bytes(method, host_header(self.host, self.port), path, headers, body)
        while True:
            sock, reused = self._take()
            try:
                answer = self._exchange(sock, data, read_timeout)
            except (AnswerError, OSError) as exc:
                sock.close()
                if may_retry(method, reused, exc):
                    continue
                raise
            except BaseException:  # interrupted mid-answer: the connection is not reusable
                sock.close()
                raise
            if answer.keep_alive:
                with self._lock:
                    self._idle.append(sock)
            else:
                sock.close()
            return answer

    def _exchange(self, sock: socket.socket, data: bytes, read_timeout: Optional[float]) -> Answer:
        sock.settimeout(self.connect_timeout)
        sock.sendall(data)
        sock.settimeout(read_timeout)
        answer = Answer()
        while not answer.done:
            chunk = sock.recv(READ_SIZE)
            if not chunk:
                answer.at_eof()
                break
            answer.feed(chunk)
        return answer

    def _take(self) -> Tuple[socket.socket, bool]:
        while True:
            with self._lock:
                sock = self._idle.pop() if self._idle else None
            if sock is None:
                return self._connect(), False
            idle = select.poll()  # not select(): it cannot take descriptors numbered 1024 or more
            idle.register(sock, select.POLLIN)
            if not idle.poll(0):
                return sock, True
            sock.close()  # readable while idle: closed by the server (or junk); not reusable

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                return self.context.wrap_socket(sock, server_hostname=self.host)
        except socket.timeout:
            sock.close()
            raise HandshakeTimeout("no TLS handshake in %g s" % self.connect_timeout) from None
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()
