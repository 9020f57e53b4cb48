"""The Tornado application: HTTP in, driver calls, HTTP out.

Handlers only translate. Every request passes the reference checks in the reference order in
``BaseHandler.prepare`` (method 501, token 401, version 406), and every error leaves through
``write_error`` as Go's ``http.Error`` would write it: the text, one newline, text/plain.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Optional

import tornado.web
from copy_offload.client import wire
from copy_offload.server import gomux
from copy_offload.server.auth import TokenRejected, TokenVerifier
from copy_offload.server.drivers.base import Driver
from copy_offload.server.drivers.errors import (
    BadRequest,
    Conflict,
    DriverError,
    Internal,
    RequestNotFound,
)

log = logging.getLogger("copy_offload.server")

TEXT = "text/plain; charset=utf-8"
MAX_BODY_BYTES = 1 << 20  # a copy request is a few hundred bytes; libcopyoffload caps it at 2 KiB
# Once a request has passed the checks, a body past MAX_BODY_BYTES is still read (and dropped) up
# to this size, so a client that sends it all before reading gets its 413 instead of a reset.
DRAIN_BODY_BYTES = 1 << 30
ERR_TOO_LARGE = "request body too large"


class _AnyMethod(tuple):
    """Every method reaches the handler: Go's handlers answer 501 for any they do not serve
    (TRACE, PROPFIND, FOO alike), and its mux 404 for any on an unknown path."""

    def __contains__(self, method: object) -> bool:
        return True


class ApiError(tornado.web.HTTPError):
    """An HTTP error whose body is exactly ``text`` + ``\\n``."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(status, reason=None)
        self.text = text


@tornado.web.stream_request_body
class BaseHandler(tornado.web.RequestHandler):
    """Streams bodies, so Tornado parses no forms (the Content-Type is ignored, as in the
    reference) and the checks run before a body is read; only /trial keeps its body.

    A failed check is answered once the (small) body has been read, so the connection stays
    open for the next request; a failed check with a large or chunked body still to come is
    answered at once, and the connection then closes.
    """

    SUPPORTED_METHODS = _AnyMethod(("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS"))  # type: ignore[assignment]
    method = wire.METHODS[wire.HELLO]  # the one this route accepts (set per route below)
    _refusal: Optional[ApiError] = None

    def initialize(self, driver: Driver, verifier: Optional[TokenVerifier], on_shutdown: Callable[[], None]) -> None:
        self.driver = driver
        self.verifier = verifier
        self.on_shutdown = on_shutdown

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", TEXT)
        self.clear_header("Server")

    def compute_etag(self) -> None:
        return None

    def prepare(self) -> None:
        try:
            self.check()
        except ApiError as exc:
            if self._large_body_coming():
                raise
            self._refusal = exc
            return
        self.request.connection.set_max_body_size(DRAIN_BODY_BYTES)

    def check(self) -> None:
        """The reference's checks, in its order: method (501), token (401), version (406)."""
        if self.request.method != self.method:
            raise ApiError(501, wire.ERR_METHOD)
        if self.verifier is not None:
            try:
                self.verifier.check_header(self._first(wire.AUTH_HEADER))
            except TokenRejected as exc:
                raise ApiError(401, str(exc)) from None
        if self._first(wire.VERSION_HEADER) != wire.API_VERSION:
            raise ApiError(406, wire.ERR_VERSION)

    def _first(self, name: str) -> Optional[str]:
        """Go's ``Header.Get``: the first of repeated values (Tornado would join them)."""
        values = self.request.headers.get_list(name)
        return values[0] if values else None

    def _large_body_coming(self) -> bool:
        headers = self.request.headers
        length = headers.get("Content-Length", "")
        return "chunked" in headers.get("Transfer-Encoding", "").lower() or (
            length.isdigit() and int(length) > MAX_BODY_BYTES)

    def data_received(self, chunk: bytes) -> None:
        """Bodies are ignored on every route but /trial."""

    async def _run(self, *args: str) -> None:
        if self._refusal is not None:
            raise self._refusal
        await self.serve()

    get = head = post = delete = patch = put = options = _run

    def __getattr__(self, name: str) -> Any:
        """Tornado looks the request's method up as an attribute: any other verb is served too."""
        request = self.__dict__.get("request")
        if request is not None and name == request.method.lower():
            return self._run
        raise AttributeError(name)

    async def serve(self) -> None:
        raise NotImplementedError

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Go's ``http.Error``; never raises (a failure here would leave the client no answer)."""
        try:
            text = self._error_text(status_code, kwargs.get("exc_info", (None, None, None))[1])
            body = wire.error_body(text)
        except Exception:
            log.exception("cannot word the error for %d", status_code)
            self.set_status(500)
            body = wire.error_body("internal server error")
        try:
            self.set_header("Content-Type", TEXT)
            self.set_header("X-Content-Type-Options", "nosniff")
            self.finish(body)
        except Exception:
            log.debug("cannot send the error answer", exc_info=True)

    def _error_text(self, status_code: int, exc: Optional[BaseException]) -> str:
        if isinstance(exc, ApiError):
            return exc.text
        if status_code == 405:  # a verb tornado itself refused
            self.set_status(501)
            return wire.ERR_METHOD
        if status_code == 413:
            return ERR_TOO_LARGE
        if isinstance(exc, tornado.web.HTTPError) and status_code < 500:
            return exc.reason or self._reason
        return "internal server error"

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError):
            # A 501 is a client's wrong method, not a failure of ours.
            level = logging.WARNING if value.status_code < 500 or value.status_code == 501 else logging.ERROR
            log.log(level, "%d %s %s: %s", value.status_code, self.request.method, loggable(self.request.path),
                    loggable(value.text.strip()))
        else:
            super().log_exception(typ, value, tb)

    def reply(self, body: bytes) -> None:
        if not body:
            self.clear_header("Content-Type")  # Go's ResponseWriter sniffs a type only from bytes
        self.finish(body)



class HelloHandler(BaseHandler):
    async def serve(self) -> None:
        self.reply(wire.HELLO_BODY.encode())


class TrialHandler(BaseHandler):
    method = wire.METHODS[wire.TRIAL]
    _body: Optional[bytearray] = None  # None once the body is too large

    def check(self) -> None:
        super().check()
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            self._body = None  # read and dropped, then answered with a 413 on a connection that stays open
            if int(length) > DRAIN_BODY_BYTES or self.request.headers.get("Expect", "").lower() == "100-continue":
                # At once: a client waiting on "100 Continue" (curl) then sends no body at all.
                self.request.connection.set_max_body_size(DRAIN_BODY_BYTES)
                raise ApiError(413, ERR_TOO_LARGE)

    def prepare(self) -> None:
        self._body = bytearray()
        super().prepare()

    def data_received(self, chunk: bytes) -> None:
        if self._body is not None:
            if len(self._body) + len(chunk) > MAX_BODY_BYTES:
                self._body = None  # a chunked body that grew too large: drop the rest as it comes
            else:
                self._body += chunk

    async def serve(self) -> None:
        broken = getattr(self.request, "go_body_error", None)
        if broken:  # a chunked body that broke off: Go's decoder reports the reader's error
            raise ApiError(400, wire.ERR_DECODE_PREFIX + broken)
        if self._body is None:
            raise ApiError(413, ERR_TOO_LARGE)
        try:
            request = wire.decode_copy_request(bytes(self._body))
            request.validate()
            name = await self.driver.submit(request)
        except (wire.WireError, DriverError) as exc:
            raise api_error(exc, TRIAL_FAILED) from None
        log.info("copy %s: %s -> %s", name, loggable(request.sourcePath), loggable(request.destinationPath))
        self.reply(wire.trial_body(name))


class ListHandler(BaseHandler):
    async def serve(self) -> None:
        self.reply(wire.list_body(self.driver.active()))


class StatusHandler(BaseHandler):
    _waiter: Optional[asyncio.Task[Any]] = None

    async def serve(self) -> None:
        name = wire.request_name(self.request.path)
        try:
            max_wait = wire.parse_max_wait(self.request.query)
            if max_wait == 0:
                state = await self.driver.status(name, 0)
            else:  # a long-poll: cancellable if the client goes away
                self._waiter = asyncio.ensure_future(self.driver.status(name, max_wait))
                state = await self._waiter
            document = wire.status_document(state)
        except asyncio.CancelledError:
            return  # the client went away while waiting
        except (wire.WireError, DriverError) as exc:
            raise api_error(exc, STATUS_FAILED) from None
        self.reply(wire.go_json(document))

    def on_connection_close(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.cancel()


class CancelHandler(BaseHandler):
    method = wire.METHODS[wire.CANCEL_PREFIX]

    async def serve(self) -> None:
        name = wire.request_name(self.request.path)
        if not await self.driver.cancel(name):
            raise ApiError(404, wire.ERR_CANCEL_PREFIX + wire.ERR_REQUEST_NOT_FOUND)
        log.info("cancelled %s", loggable(name))
        self.reply(b"")


class ShutdownHandler(BaseHandler):
    method = wire.METHODS[wire.SHUTDOWN]

    async def serve(self) -> None:
        if self.driver.active():
            raise ApiError(409, wire.ERR_SHUTDOWN_BUSY)
        log.info("Server shutting down")
        self.reply(wire.SHUTDOWN_BODY.encode())
        self.on_shutdown()


class NotFoundHandler(BaseHandler):
    def check(self) -> None:
        """Go's mux answers unknown paths before any handler's checks."""

    async def serve(self) -> None:
        raise ApiError(404, wire.ERR_NOT_FOUND_PAGE)


class RedirectHandler(BaseHandler):
    """Go's mux redirects (307) to the clean path or the subtree, before any handler's checks;
    a GET gets Go's HTML body, a HEAD its headers, any other method neither."""

    location = "/"

    def initialize(self, location: str = "/", **deps: Any) -> None:  # type: ignore[override]
        super().initialize(**deps)
        self.location = location

    def check(self) -> None:
        pass

    async def serve(self) -> None:
        self.set_status(307)
        self.set_header("Location", gomux.location_header(self.location))
        if self.request.method in ("GET", "HEAD"):
            self.set_header("Content-Type", "text/html; charset=utf-8")
        else:
            self.clear_header("Content-Type")
        self.finish(gomux.redirect_body(self.location) if self.request.method == "GET" else b"")


class StarHandler(BaseHandler):
    """A request for ``*``: Go answers ``OPTIONS *`` with an empty 200 (no checks) and any
    other method with an empty 400 that closes the connection."""

    def check(self) -> None:
        pass

    async def serve(self) -> None:
        self.clear_header("Content-Type")
        if self.request.method != "OPTIONS":
            self.set_status(400)
            self.set_header("Connection", "close")
        self.finish(b"")


# The one place a driver's error kind becomes an HTTP code (the wire module's own errors carry theirs).
HTTP_CODES = {RequestNotFound: 404, BadRequest: 400, Conflict: 409, Internal: 500}
TRIAL_FAILED = "%s\n"  # the reference wraps create/drive failures as "<msg>\n" before http.Error's "\n"
STATUS_FAILED = "unable to get request: %s\n"


def http_code(exc: Exception) -> int:
    """The HTTP status for a driver's or the wire's error (500 for a kind nobody mapped)."""
    if isinstance(exc, wire.WireError):
        return exc.code
    return next((code for kind, code in HTTP_CODES.items() if isinstance(exc, kind)), 500)


def api_error(exc: Exception, server_failure: str) -> ApiError:
    """``exc`` as the answer: its text as it is for a client's mistake, framed by ``server_failure``
    (the route's words) for a failure of ours."""
    code = http_code(exc)
    text = getattr(exc, "message", str(exc))
    return ApiError(code, text if code < 500 else server_failure % text)


def loggable(text: str, limit: int = 1024) -> str:
    """Client text as part of one log line: control characters escaped (a newline cannot forge a
    record, an escape sequence cannot drive a terminal) and cut at ``limit`` characters."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


ROUTES = {"hello": HelloHandler, "trial": TrialHandler, "list": ListHandler, "shutdown": ShutdownHandler,
          "status": StatusHandler, "cancel": CancelHandler}


class GoMuxApplication(tornado.web.Application):
    """Routes as Go's ServeMux does (``gomux``), not by Tornado's path patterns."""

    def find_handler(self, request: Any, **kwargs: Any) -> Any:
        deps = self.settings["handler_deps"]
        if request.uri == "*":
            return self.get_handler_delegate(request, StarHandler, deps)
        decision = gomux.route(request.uri, connect=request.method == "CONNECT")
        if decision.location is not None:
            return self.get_handler_delegate(request, RedirectHandler, dict(deps, location=decision.location))
        return self.get_handler_delegate(request, ROUTES.get(decision.route or "", NotFoundHandler), deps)


def make_app(driver: Driver, verifier: Optional[TokenVerifier], on_shutdown: Callable[[], None]) -> tornado.web.Application:
    deps = {"driver": driver, "verifier": verifier, "on_shutdown": on_shutdown}
    return GoMuxApplication([], handler_deps=deps, log_function=_log_request)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    level = logging.DEBUG if status < 400 else logging.INFO
    log.log(level, "%d %s %s %.1fms", status, handler.request.method, loggable(handler.request.path),
            1000.0 * handler.request.request_time())
