"""The one interface every copy driver implements, and the bookkeeping they share.

Handlers translate HTTP to these calls and back; drivers never see a request object, never
choose an HTTP code and never write the wire format: they answer ``RequestState`` records and
raise ``DriverError`` kinds (``errors.py``), which ``copy_offload.server.app`` maps. Every
method that can wait is a coroutine and must not block the event loop: copies, subprocesses
and Kubernetes calls run in executors, subprocesses or async clients.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Dict, List, Optional

from copy_offload.client.wire import CopyRequest, RequestState
from copy_offload.server.drivers.errors import DriverError

__all__ = ["Driver", "Completions", "DriverError"]


class Driver(abc.ABC):
    """A copy back end: ``local`` (embedded engine), ``nnf`` (Kubernetes) or ``mock``."""

    name = "driver"

    async def start(self) -> None:
        """Called once on the server's loop before it accepts requests (recovery, probes)."""

    @abc.abstractmethod
    async def submit(self, request: CopyRequest) -> str:
        """Start a validated copy and return its request name once it is running.

        Raise ``BadRequest(text)`` for the client's mistakes and ``Internal(text)`` for failures
        of ours; nothing may be left running when this raises.
        """

    @abc.abstractmethod
    async def status(self, name: str, max_wait_secs: int) -> RequestState:
        """The state of ``name`` now (the server renders it as the status JSON).

        ``max_wait_secs``: 0 answers now, > 0 waits up to that long for completion, < 0 waits
        for completion however long it takes. Waiting is event-driven, never polling.
        Raise ``RequestNotFound(wire.ERR_REQUEST_NOT_FOUND)`` for an unknown name.
        """

    @abc.abstractmethod
    def active(self) -> List[str]:
        """Names of the requests whose copy is still running (what /list shows)."""

    @abc.abstractmethod
    async def cancel(self, name: str) -> bool:
        """Stop ``name``; True if it was active or has just completed, False if unknown."""

    async def close(self) -> None:
        """Release resources at shutdown (the server refuses shutdown while anything is active)."""


class Completions:
    """Event-driven completion signals, one per request name, for status long-polls."""

    def __init__(self) -> None:
        self._events: Dict[str, asyncio.Event] = {}

    def _event(self, name: str) -> asyncio.Event:
        event = self._events.get(name)
        if event is None:
            event = self._events[name] = asyncio.Event()
        return event

    def done(self, name: str) -> None:
        self._event(name).set()

    def is_done(self, name: str) -> bool:
        event = self._events.get(name)
        return bool(event and event.is_set())

    def forget(self, name: str) -> None:
        self._events.pop(name, None)

    async def wait(self, name: str, max_wait_secs: int) -> bool:
        """Wait for ``name`` to complete: True if it did, False on timeout."""
        event = self._event(name)
        if event.is_set():
            return True
        timeout: Optional[float] = None if max_wait_secs < 0 else float(max_wait_secs)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True
