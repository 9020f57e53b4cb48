"""The HTTP/1.1 connection layer: Go's answers to broken requests, and bounds on slow ones.

Tornado's own connection closes silently (or with an empty 400) where Go's ``http.Server``
answers, and waits for a trickling request as long as the idle timeout. This layer, under the
unchanged Tornado application:

- checks every request head with Go's rules first (``gohead``) and sends Go's answer;
- answers a header block over ``MAX_HEADER_BYTES`` (Go's 1 MiB + 4 KiB) with 431;
- answers a request whose head or body has not arrived within ``request_timeout`` seconds
  with 408 and closes (Go never times out; a bounded wait keeps a slow client from holding a
  connection forever); an idle keep-alive connection is closed quietly after ``idle_timeout``;
- on the TLS port, answers plain HTTP as Go does (``Client sent an HTTP request to an HTTPS
  server.``) instead of failing the handshake.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
from typing import Any, Awaitable, Optional

from copy_offload.server import gohead
from tornado import gen, httputil, iostream
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection
from tornado.httpserver import HTTPServer, _HTTPRequestContext
from tornado.ioloop import IOLoop
from tornado.netutil import ssl_wrap_socket

log = logging.getLogger("copy_offload.server")

MAX_HEADER_BYTES = (1 << 20) + 4096  # Go's DefaultMaxHeaderBytes plus the slop its reader allows
DEFAULT_REQUEST_TIMEOUT = 60.0
DEFAULT_IDLE_TIMEOUT = 300.0
_PEEK_RETRY = 0.02
_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")


class _AnswerOnOverflow:
    """A stream mixin: when a read overruns its byte limit (the header block), write the
    connection's pending answer straight to the socket before Tornado closes the stream."""

    overflow_answer: Optional[bytes] = None

    def _check_max_bytes(self, delimiter: Any, size: int) -> None:
        try:
            super()._check_max_bytes(delimiter, size)  # type: ignore[misc]
        except iostream.UnsatisfiableReadError:
            if self.overflow_answer is not None:
                try:
                    self.socket.send(self.overflow_answer)  # type: ignore[attr-defined]
                except (OSError, ssl.SSLError):
                    pass
                self.overflow_answer = None
                log.info("request headers over %d bytes: 431", MAX_HEADER_BYTES)
            raise


class _Stream(_AnswerOnOverflow, iostream.IOStream):
    pass


class _SSLStream(_AnswerOnOverflow, iostream.SSLIOStream):
    pass


class GoHTTP1Connection(HTTP1Connection):
    """One request on a connection, with Go's head checks and the timeouts above."""

    def __init__(self, stream: iostream.IOStream, params: Any, context: Any, server: GoHTTPServer,
                 after_post: bool, keep_alive_wait: bool) -> None:
        super().__init__(stream, False, params, context)
        self._server = server
        self._after_post = after_post
        self._keep_alive_wait = keep_alive_wait  # a later request: the wait starts idle
        self._idle_since = 0.0
        self._request_since: Optional[float] = None
        self._tick = 1.0
        self._head_done = False
        self._response_started = False
        self._timer: Optional[object] = None
        self.method = ""

    async def _read_message(self, delegate: httputil.HTTPMessageDelegate) -> bool:
        stream = self.stream
        stream.overflow_answer = gohead.HEADERS_TOO_LARGE.answer  # type: ignore[attr-defined]
        now = IOLoop.current().time()
        self._idle_since = now
        self._request_since = None if self._keep_alive_wait else now
        self._tick = min(1.0, self._server.request_timeout / 4)
        self._arm(self._tick, self._head_tick)
        try:
            return await super()._read_message(delegate)
        except gohead.GoAnswer as answer:
            log.info("bad request from %s: %s", _peer(self.context), answer.reason)
            await self._answer_and_close(answer.answer)
            return False
        finally:
            self._disarm()

    def _parse_headers(self, data: bytes) -> Any:
        self._disarm()
        head = gohead.check_request_head(data, self._after_post)
        self.method = head.method
        self._head_done = True
        self.stream.overflow_answer = gohead.bad_request("").answer  # type: ignore[attr-defined]
        try:
            return super()._parse_headers(head.data)
        except httputil.HTTPInputError as exc:
            raise gohead.bad_request(str(exc)) from None

    def _read_body(self, code: int, headers: httputil.HTTPHeaders,
                   delegate: httputil.HTTPMessageDelegate) -> Optional[Awaitable[None]]:
        body = super()._read_body(code, headers, delegate)
        if body is None:
            return None
        self._arm(self._server.request_timeout, self._body_timed_out)
        return self._body_then_disarm(body)

    async def _body_then_disarm(self, body: Awaitable[None]) -> None:
        try:
            await body
        finally:
            self._disarm()

    def _can_keep_alive(self, start_line: Any, headers: httputil.HTTPHeaders) -> bool:
        """Go closes when ``close`` is any token of Connection (``close, x``), not only the whole value."""
        if "close" in re.split(r"[\s,]+", headers.get("Connection", "").lower()):
            return False
        return super()._can_keep_alive(start_line, headers)

    async def _read_chunked_body(self, delegate: httputil.HTTPMessageDelegate) -> None:
        """Go's chunked reader: chunk extensions (``2;x=y``) and trailers are accepted, and a
        broken body reaches the handler, whose body reader then fails with Go's words (Tornado
        would answer an empty 400 itself). The connection closes after a broken body."""
        try:
            await self._read_chunks(delegate)
        except httputil.HTTPInputError as exc:
            routed = getattr(delegate, "delegate", delegate)  # the application's routing delegate
            request = getattr(routed, "request", None)
            if request is None:
                raise
            request.go_body_error = str(exc)
            self._disconnect_on_finish = True

    async def _read_chunks(self, delegate: httputil.HTTPMessageDelegate) -> None:
        total = 0
        while True:
            line = await self.stream.read_until(b"\n", max_bytes=4096)
            size_text = line.rstrip(b"\r\n").split(b";", 1)[0].strip(b" \t")
            if not size_text or not _HEX.fullmatch(size_text):
                raise httputil.HTTPInputError("invalid byte in chunk length")
            size = int(size_text, 16)
            if size == 0:
                while (await self.stream.read_until(b"\n", max_bytes=4096)).rstrip(b"\r\n"):
                    pass  # trailers: read and ignored, as the reference's handlers never look
                return
            total += size
            if total > self._max_body_size:
                raise httputil.HTTPInputError("http: request body too large")
            data = await self.stream.read_bytes(size)
            if await self.stream.read_bytes(2) != b"\r\n":
                raise httputil.HTTPInputError("malformed chunked encoding")
            if not self._write_finished:
                ret = delegate.data_received(data)
                if ret is not None:
                    await ret

    def write_headers(self, start_line: Any, headers: httputil.HTTPHeaders, chunk: Optional[bytes] = None) -> Any:
        self._response_started = True
        return super().write_headers(start_line, headers, chunk)

    # ------------------------------------------------------------------ timers

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = IOLoop.current().call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            IOLoop.current().remove_timeout(self._timer)
            self._timer = None

    def _head_tick(self) -> None:
        """While the head is awaited: a new connection's first request, or the first byte of a
        later one, starts the request clock; nothing at all for ``idle_timeout`` closes quietly."""
        self._timer = None
        if self._head_done or self.stream is None or self.stream.closed():
            return
        now = IOLoop.current().time()
        if self._request_since is None and getattr(self.stream, "_read_buffer_size", 0):
            self._request_since = now
        if self._request_since is not None and now - self._request_since >= self._server.request_timeout:
            self._time_out("head")
            return
        if self._request_since is None and now - self._idle_since >= self._server.idle_timeout:
            self.stream.close()
            return
        self._arm(self._tick, self._head_tick)

    def _body_timed_out(self) -> None:
        self._timer = None
        if self.stream is None or self.stream.closed():
            return
        self._time_out("body")

    def _time_out(self, part: str) -> None:
        log.info("request %s from %s not complete after %gs: 408", part, _peer(self.context),
                 self._server.request_timeout)
        if self._response_started:
            self.stream.close()
            return
        IOLoop.current().add_future(gen.convert_yielded(self._answer_and_close(gohead.REQUEST_TIMEOUT.answer)),
                                    lambda future: future.exception())

    async def _answer_and_close(self, answer: bytes) -> None:
        stream = self.stream
        if stream is None or stream.closed():
            return
        try:
            await stream.write(answer)
        except iostream.StreamClosedError:
            pass
        stream.close()


class GoHTTP1ServerConnection(HTTP1ServerConnection):
    """Tornado's request loop, one ``GoHTTP1Connection`` per request."""

    def __init__(self, stream: iostream.IOStream, params: Any, context: Any, server: GoHTTPServer) -> None:
        super().__init__(stream, params, context)
        self._server = server

    async def _server_request_loop(self, delegate: httputil.HTTPServerConnectionDelegate) -> None:
        after_post = later = False
        try:
            while True:
                conn = GoHTTP1Connection(self.stream, self.params, self.context, self._server, after_post, later)
                later = True
                request_delegate = delegate.start_request(self, conn)
                try:
                    ret = await conn.read_response(request_delegate)
                except (iostream.StreamClosedError, iostream.UnsatisfiableReadError, gen.TimeoutError):
                    return
                except Exception:
                    log.error("uncaught exception serving %s", _peer(self.context), exc_info=True)
                    conn.close()
                    return
                if not ret:
                    return
                after_post = conn.method == "POST"
                await gen.sleep(0)
        finally:
            delegate.on_close(self)


class GoHTTPServer(HTTPServer):
    """``HTTPServer`` with the connection layer above; ``request_timeout`` bounds a request's
    head and body, ``idle_timeout`` an idle keep-alive connection."""

    def initialize(self, *args: Any, request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
                   idle_timeout: float = DEFAULT_IDLE_TIMEOUT, **kwargs: Any) -> None:
        kwargs.setdefault("max_header_size", MAX_HEADER_BYTES)
        kwargs["idle_connection_timeout"] = None
        kwargs["body_timeout"] = None
        super().initialize(*args, **kwargs)
        self.request_timeout = request_timeout
        self.idle_timeout = max(idle_timeout, request_timeout)
        self.conn_params.header_timeout = None  # ours: 408 for a partial head, quiet close when idle

    def handle_stream(self, stream: iostream.IOStream, address: tuple) -> None:
        context = _HTTPRequestContext(stream, address, self.protocol, self.trusted_downstream)
        conn = GoHTTP1ServerConnection(stream, self.conn_params, context, self)
        self._connections.add(conn)
        conn.start_serving(self)

    def _handle_connection(self, connection: socket.socket, address: Any) -> None:
        if self.ssl_options is None:
            self._start(connection, address, tls=False)
            return
        _TLSPeek(self, connection, address).wait()

    def _start(self, connection: socket.socket, address: Any, tls: bool) -> None:
        try:
            if tls:
                connection = ssl_wrap_socket(connection, self.ssl_options, server_side=True,
                                             do_handshake_on_connect=False)
                stream: iostream.IOStream = _SSLStream(connection, max_buffer_size=self.max_buffer_size,
                                                       read_chunk_size=self.read_chunk_size)
            else:
                stream = _Stream(connection, max_buffer_size=self.max_buffer_size,
                                 read_chunk_size=self.read_chunk_size)
        except (OSError, ssl.SSLError):
            connection.close()  # the peer went away before we started (a port scan)
            return
        self.handle_stream(stream, address)


class _TLSPeek:
    """Look at the first five bytes on the TLS port before the handshake, as Go does: plain
    HTTP gets Go's 400, anything else goes on to TLS."""

    def __init__(self, server: GoHTTPServer, connection: socket.socket, address: Any) -> None:
        self.server, self.connection, self.address = server, connection, address
        connection.setblocking(False)  # accepted sockets are blocking until a stream takes them
        self.loop = IOLoop.current()
        self.deadline = self.loop.time() + server.request_timeout
        self.give_up = self.loop.call_at(self.deadline, self._silent)

    def wait(self) -> None:
        try:
            self.loop.add_handler(self.connection.fileno(), self._readable, IOLoop.READ)
        except (OSError, ValueError):
            self._close()

    def _silent(self) -> None:
        """Nothing (or not five bytes) within the request timeout: close."""
        try:
            self.loop.remove_handler(self.connection.fileno())
        except (OSError, ValueError, KeyError):
            pass
        self.connection.close()

    def _close(self) -> None:
        self.loop.remove_timeout(self.give_up)
        self.connection.close()

    def _readable(self, fd: Any, events: int) -> None:
        self.loop.remove_handler(self.connection.fileno())
        try:
            first = self.connection.recv(5, socket.MSG_PEEK)
        except BlockingIOError:
            first = b"?"
        except OSError:
            self._close()
            return
        if not first:
            self._close()
            return
        if len(first) < 5 and first[:1] != b"\x16":
            self.loop.call_later(_PEEK_RETRY, self.wait)  # a short first segment: look again
            return
        self.loop.remove_timeout(self.give_up)
        if gohead.looks_like_http(first):
            self._refuse_plain_http()
            return
        self.server._start(self.connection, self.address, tls=True)

    def _refuse_plain_http(self) -> None:
        log.info("TLS handshake error from %s: %s", _peer(self.address), gohead.PLAIN_HTTP_ON_TLS.reason)
        sock = self.connection
        try:
            sock.send(gohead.PLAIN_HTTP_ON_TLS.answer)
            while sock.recv(65536):  # drain what is there, so closing sends FIN, not RST
                pass
        except OSError:
            pass
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()


def _peer(context: Any) -> str:
    address = getattr(context, "address", context)
    if isinstance(address, tuple) and len(address) >= 2:
        return "%s:%s" % (address[0], address[1])
    return str(address)
