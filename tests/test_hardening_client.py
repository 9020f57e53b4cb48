"""The client library against a hostile server: only the library's own exceptions come out.

A raw TCP server on loopback answers each path with canned bytes (deep JSON, numbers out of
range, truncated bodies, garbage instead of HTTP, silence). Whatever it sends, ``Client`` and
``AsyncClient`` raise ``CopyOffloadError`` subclasses (or return a typed result), never a
RecursionError, OverflowError or an httpx exception.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Dict, Iterator

import pytest
from copy_offload import client as co
from copy_offload.client import transport, wire


def http_response(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%s\r\n"
            % (status.encode(), len(body), extra)) + body


ANSWERS: Dict[str, bytes] = {
    "deep": http_response(b"[" * 100_000 + b"\n"),
    "deep-object": http_response(b'{"commandStatus":' * 50_000 + b"\n"),
    "inf": http_response(b'{"state":"running","status":"unknown status","commandStatus":{"progress":1e999}}\n'),
    "nan": http_response(b'{"state":"running","commandStatus":{"bytesTotal":NaN,"filesCopied":-Infinity}}\n'),
    "huge-int": http_response(b'{"state":"running","commandStatus":{"bytesCopied":' + b"9" * 5000 + b"}}\n"),
    "types": http_response(b'{"state":5,"status":["x"],"message":{},"commandStatus":[],"startTime":null}\n'),
    "not-object": http_response(b"[1,2]\n"),
    "binary": http_response(b"\xff\xfe\x00\x01garbage\n"),
    "empty": http_response(b""),
    "truncated": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"state\":",
    "garbage": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "error-500": http_response(b"boom\n\n", "500 Internal Server Error"),
    "error-no-newline": http_response(b"x" * 100, "418 I'm a teapot"),
    "bad-length": b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n{}",
    "huge-header": b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 200_000 + b"\r\nContent-Length: 2\r\n\r\n{}",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n{}\r\n0\r\n\r\n",
    "huge-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffff\r\n{}",
    "tls-alert": b"\x15\x03\x03\x00\x02\x02\x46",
    # Well-formed answers in the shapes HTTP allows besides Content-Length: they must parse.
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n{\"sta\r\nf;ext=1\r\nte\":\"running\"}\n\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "http10": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{\"state\":\"running\"}\n",
}


class HostileServer:
    """Answers ``/status/<key>`` with ``ANSWERS[key]``, ``/trial`` and ``/hello`` with junk; ``/list`` never."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.trial_answer = http_response(b"no name here\n")
        self.hello_answer = ANSWERS["garbage"]
        self.closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                piece = conn.recv(65536)
                if not piece:
                    return
                data += piece
            target = data.split(b" ", 2)[1].decode()
            path = target.split("?", 1)[0]
            if path == wire.LIST:  # silence
                time.sleep(5)
                return
            if path.startswith(wire.STATUS_PREFIX):
                answer = ANSWERS[path[len(wire.STATUS_PREFIX):]]
            elif path == wire.TRIAL:
                answer = self.trial_answer
            else:
                answer = self.hello_answer
            try:
                conn.sendall(answer)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self.closed = True
        self.sock.close()


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.close()


def kwargs(server: HostileServer) -> dict:
    return dict(host="127.0.0.1", port=server.port, tls=False, token="t.t.t", env={})


@pytest.mark.parametrize("key", sorted(ANSWERS))
def test_status_answers_raise_only_library_errors(hostile, key):
    with co.Client(**kwargs(hostile), timeout=5) as client:
        try:
            status = client.status(key)
        except co.CopyOffloadError as exc:
            assert str(exc)
            return
    assert isinstance(status, co.Status)
    assert isinstance(status.state, str) and isinstance(status.progress, int)
    for value in (status.bytes_total, status.bytes_copied, status.files_total, status.files_copied):
        assert value is None or isinstance(value, int)


@pytest.mark.parametrize("key", ["deep", "inf", "nan", "truncated", "garbage"])
def test_async_client_too(hostile, key):
    async def go() -> None:
        async with co.AsyncClient(**kwargs(hostile), timeout=5) as client:
            try:
                await client.status(key)
            except co.CopyOffloadError:
                pass

    asyncio.run(go())


@pytest.mark.parametrize("key", ["chunked", "http10"])
def test_answers_without_a_length_parse(hostile, key):
    with co.Client(**kwargs(hostile), timeout=5) as client:
        assert client.status(key).state == "running"


def test_a_tls_answer_to_plain_http_says_so(hostile):
    with co.Client(**kwargs(hostile), timeout=5) as client, pytest.raises(co.TransportError, match="answered in TLS"):
        client.status("tls-alert")


def test_the_answer_parser_takes_bytes_one_at_a_time():
    """The same answer split anywhere parses the same: TCP may cut it at any byte."""
    for key in ("chunked", "error-500", "deep"):
        whole = transport.Answer()
        whole.feed(ANSWERS[key])
        whole.at_eof()
        drip = transport.Answer()
        for i in range(len(ANSWERS[key])):
            if drip.done:
                break
            drip.feed(ANSWERS[key][i:i + 1])
        drip.at_eof()
        assert (drip.status, drip.body) == (whole.status, whole.body) and whole.body


def test_silence_is_a_timeout(hostile):
    with co.Client(**kwargs(hostile), timeout=1) as client, pytest.raises(co.Timeout):
        client.list()


def test_a_trial_answer_without_a_name_is_an_error(hostile):
    with co.Client(**kwargs(hostile), timeout=5) as client, pytest.raises(co.CopyOffloadError):
        client.copy("/a", "/b")


def test_garbage_instead_of_http_is_a_transport_error(hostile):
    with co.Client(**kwargs(hostile), timeout=5) as client, pytest.raises(co.TransportError):
        client.hello()
