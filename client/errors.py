"""The client's one exception tree. Library exceptions (httpx, ssl) never escape it.

    CopyOffloadError
    ├── ConfigurationError      cannot find the server, port, token or certificate
    ├── TransportError          no HTTP answer at all
    │   ├── ConnectError        refused, unreachable, name not resolved
    │   ├── TLSError            handshake or certificate verification failed
    │   └── Timeout             no answer in time
    │       └── WaitTimeout     wait(timeout=...) ran out first: .name, .status (the last one)
    └── ServerError             the server answered with an error: .status, .message
        ├── BadRequest          400 (bad body, path outside the allowed roots, ...)
        ├── Unauthorized        401 (token missing or not valid for this server)
        ├── NotFound            404 (no such request)
        ├── NotAcceptable       406 (API version)
        └── Conflict            409 (shutdown while requests run)
"""

from __future__ import annotations

from typing import Any, Dict, Type

__all__ = [
    "CopyOffloadError",
    "ConfigurationError",
    "TransportError",
    "ConnectError",
    "TLSError",
    "Timeout",
    "WaitTimeout",
    "ServerError",
    "BadRequest",
    "Unauthorized",
    "NotFound",
    "NotAcceptable",
    "Conflict",
    "server_error",
]


class CopyOffloadError(Exception):
    """Anything that went wrong talking to the copy-offload server."""


class ConfigurationError(CopyOffloadError):
    """The client cannot tell where or how to reach its server."""


class TransportError(CopyOffloadError):
    """The request got no HTTP answer."""

    #: libcurl's code for the same failure, so the tester can print what the C tool prints.
    curl_code = 0


class ConnectError(TransportError):
    curl_code = 7


class TLSError(TransportError):
    curl_code = 60


class Timeout(TransportError):
    curl_code = 28


class WaitTimeout(Timeout):
    """``wait(timeout=...)`` ran out before the request completed; it goes on on the server.

    A subclass of :class:`Timeout`, so one ``except Timeout`` covers both kinds of running out of
    time; ``status`` is the last status seen, so the caller never mistakes it for a final one.
    """

    def __init__(self, name: str, status: Any, timeout: float) -> None:
        super().__init__("%s still %s after %g s" % (name, getattr(status, "state", "") or "unknown", timeout))
        self.name = name
        self.status = status
        self.timeout = timeout


class ServerError(CopyOffloadError):
    """The server answered with an HTTP error; ``message`` is its text without the newline,
    ``hint`` (often empty) what the client knows of the cause, such as that no token was set."""

    def __init__(self, status: int, message: str, body: str = "") -> None:
        super().__init__("HTTP %d: %s" % (status, message))
        self.status = status
        self.message = message
        self.body = body
        self.hint = ""

    def __str__(self) -> str:
        text = "HTTP %d: %s" % (self.status, self.message)
        return "%s (%s)" % (text, self.hint) if self.hint else text


class BadRequest(ServerError):
    pass


class Unauthorized(ServerError):
    pass


class NotFound(ServerError):
    pass


class NotAcceptable(ServerError):
    pass


class Conflict(ServerError):
    pass


_BY_STATUS: Dict[int, Type[ServerError]] = {
    400: BadRequest,
    401: Unauthorized,
    404: NotFound,
    406: NotAcceptable,
    409: Conflict,
}


def server_error(status: int, body: str) -> ServerError:
    """The exception for an error answer, chosen by status code."""
    message = body.rstrip("\n")
    return _BY_STATUS.get(status, ServerError)(status, message, body)
