"""What a driver raises, by kind: the server alone turns a kind into an HTTP code and a body.

A driver says what went wrong (the request names nothing we know, the client asked for something
impossible, the request conflicts with what runs, or we failed) in the words the client should
read; ``copy_offload.server.app`` maps the kind to 404/400/409/500 in one table.
"""

from __future__ import annotations

__all__ = ["DriverError", "RequestNotFound", "BadRequest", "Conflict", "Internal"]


class DriverError(Exception):
    """A driver's refusal or failure; ``message`` is the text the client reads."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RequestNotFound(DriverError):
    """The name addresses no request this driver knows (or one the caller may not see)."""


class BadRequest(DriverError):
    """The client's mistake: a path outside the roots, an unknown profile, bad options."""


class Conflict(DriverError):
    """The request cannot be served in the present state of things."""


class Internal(DriverError):
    """A failure of ours (a store, the API server, a process that would not start)."""
