"""Sans-I/O request building and answer reading, shared by the blocking and asyncio clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from copy_offload.client import wire
from copy_offload.client.errors import CopyOffloadError, server_error
from copy_offload.client.models import Status

#: The profile ``verify=True`` (``copy --verify``) asks for: the local driver's built-in profile
#: that checksums what it wrote against the source and fails the request on a mismatch.
VERIFY_PROFILE = "verify"
#: Seconds allowed beyond the server-side wait before a status long-poll counts as timed out.
WAIT_MARGIN = 30.0


@dataclass
class Call:
    """One HTTP exchange: what to send, how long to wait, and how to read the answer."""

    method: str
    path: str
    read: Callable[[str], Any]
    body: Optional[bytes] = None
    read_timeout: Optional[float] = None  # None = the client's default; -1 = no limit


def interpret(call: Call, status: int, text: str) -> Any:
    """The call's result for a 200, else the ServerError subclass for the status."""
    if status != 200:
        raise server_error(status, text)
    return call.read(text)


def hello() -> Call:
    return Call("GET", wire.HELLO, lambda text: text.split("\n", 1)[0])


def list_requests() -> Call:
    return Call("GET", wire.LIST, wire.parse_list_body)


def cancel(name: str) -> Call:
    return Call("DELETE", wire.cancel_path(name), lambda text: None)


def shutdown() -> Call:
    return Call("POST", wire.SHUTDOWN, lambda text: text.split("\n", 1)[0])


def status(name: str, max_wait_secs: int, default_timeout: float) -> Call:
    timeout = -1.0 if max_wait_secs < 0 else max(default_timeout, max_wait_secs + WAIT_MARGIN)

    def read(text: str) -> Status:
        parsed = Status.from_body(text)
        if parsed is None:
            raise CopyOffloadError("the server's status answer is not a JSON object")
        return parsed

    return Call("GET", wire.status_path(name, max_wait_secs), read, read_timeout=timeout)


def copy(request: wire.CopyRequest) -> Call:
    def read(text: str) -> str:
        name = wire.parse_trial_body(text)
        if not name:
            raise CopyOffloadError("the server's answer to a copy names no request: %r" % text[:80])
        return name

    return Call("POST", wire.TRIAL, read, body=request.to_json())


def headers(token: Optional[str]) -> Dict[str, str]:
    result = {wire.VERSION_HEADER: wire.API_VERSION}
    if token:
        result[wire.AUTH_HEADER] = "%s %s" % (wire.BEARER, token)
    return result
