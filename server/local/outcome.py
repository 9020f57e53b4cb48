"""How a copy job is ending: the one thing its engine and its crew of copiers share.

The engine owns the plan and hands batches to the crew (workers.py); the crew never calls the
engine back. What the copiers find (a failure, a crash, a file that differs from its source)
goes here, and both sides read the one stop flag from here: the walk between directories, the
copiers between files and chunks. A cancel and the first failure race for the verdict under one
lock; whichever comes first is the job's end, and a failure after a cancel is not an error.
"""

from __future__ import annotations

import threading
from typing import List, Optional

__all__ = ["Outcome", "MISMATCH_EXAMPLES"]

MISMATCH_EXAMPLES = 3  # files named in a verification failure; the rest are counted


class Outcome:
    """The job's verdict so far: stopping or not, cancelled or failed (and why), mismatches seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stopped = False  # read without the lock: a plain flag, set once
        self.cancelled = False
        self.error: Optional[str] = None
        self.mismatched: List[str] = []
        self._succeeded = False

    def stopping(self) -> bool:
        return self.stopped

    def fail(self, text: str) -> None:
        """The job fails with ``text``, unless it already failed or was cancelled."""
        with self._lock:
            if self.error is None and not self.cancelled:
                self.error = text
            self.stopped = True

    def cancel(self) -> None:
        """The job stops as cancelled, unless it already succeeded or failed."""
        with self._lock:
            if not self._succeeded and self.error is None:
                self.cancelled = True
            self.stopped = True

    def succeed(self) -> None:
        """Everything is in place: a cancel from now on changes nothing."""
        with self._lock:
            self._succeeded = True

    def mismatch(self, text: str) -> None:
        """A copied file differs from its source (verify): keep the first few descriptions."""
        with self._lock:
            if len(self.mismatched) < MISMATCH_EXAMPLES:
                self.mismatched.append(text)
