"""Hand work from helper threads to the reactor thread.

A Flux handle is not thread-safe and the reactor is single-threaded, so the Kubernetes watcher
and the Secret readers never touch the handle: they ``post`` a call here, and the reactor runs
it when the queue's pipe becomes readable (an fd watcher on ``fileno()``). Tests drive the same
queue with ``select`` instead of a reactor.
"""

from __future__ import annotations

import collections
import os
import select
import threading
from typing import Any, Callable, Deque, Optional, Tuple


class CallQueue:
    """A thread-safe FIFO of calls plus a self-pipe that wakes the consuming loop."""

    def __init__(self) -> None:
        self._calls: Deque[Tuple[Callable[..., Any], tuple]] = collections.deque()
        self._lock = threading.Lock()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self._signalled = False
        self._closed = False

    def fileno(self) -> int:
        return self._rfd

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` for the consuming thread (callable from any thread).

        The call, the flag and the wakeup byte change together under the lock, so the
        invariant "calls queued => a byte in the pipe" holds whenever the lock is free:
        ``drain`` can never eat a byte whose call it does not take (a lost wakeup), and
        ``close`` can never close the pipe under a writer (whose fd number the process
        may already have reused).
        """
        with self._lock:
            if self._closed:
                return
            self._calls.append((fn, args))
            if self._signalled:
                return
            self._signalled = True
            try:
                os.write(self._wfd, b"x")  # one byte per wakeup: the pipe never fills
            except OSError:
                pass

    def drain(self) -> int:
        """Run every queued call on the calling thread; returns how many ran.

        Every taken call runs even if an earlier one raises (none is dropped); the first
        exception is raised after the last call.
        """
        with self._lock:
            if self._closed:
                return 0
            try:
                while os.read(self._rfd, 4096):
                    pass
            except OSError:  # BlockingIOError: the pipe is empty
                pass
            self._signalled = False
            calls = list(self._calls)
            self._calls.clear()
        first: Optional[BaseException] = None
        for fn, args in calls:
            try:
                fn(*args)
            except Exception as exc:
                if first is None:
                    first = exc
        if first is not None:
            raise first
        return len(calls)

    def wait(self, timeout: float) -> bool:
        """Block until a call is queued or ``timeout`` passes (for loops without a reactor)."""
        r, _, _ = select.select([self._rfd], [], [], max(timeout, 0.0))
        return bool(r)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._calls.clear()
            for fd in (self._rfd, self._wfd):
                try:
                    os.close(fd)
                except OSError:
                    pass
