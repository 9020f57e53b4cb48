"""What ``copy-offload`` shows while it waits: a bar redrawn in place on a terminal, or a plain
line every so often in a pipe or a batch log.

Every figure is the server's own (``bytesCopied``/``bytesTotal``, ``bytesPerSecond``, or the
reference's ``progress`` percent), never a rate guessed from when answers happened to arrive: so
the first draw is already right and starts at what was copied before the wait began.
"""

from __future__ import annotations

import os
import time
from typing import Callable, List, Optional, TextIO

from copy_offload.client import units
from copy_offload.client.models import Status

#: Seconds between two plain progress lines (not on a terminal).
PLAIN_INTERVAL = 10.0


def fraction(status: Status) -> Optional[float]:
    """How much is done, 0..1, or ``None`` when the server says nothing about it."""
    if status.ok:
        return 1.0
    if status.bytes_total:
        return min(1.0, max(0, status.bytes_copied or 0) / status.bytes_total)
    if status.progress:
        return min(100, max(0, status.progress)) / 100.0
    return None


def figures(status: Status) -> List[str]:
    """The amount, the rate and the time left, as far as the status tells them."""
    parts = []
    if status.bytes_total:
        copied = status.bytes_total if status.ok else status.bytes_copied or 0
        parts.append("%s / %s" % (units.size(copied), units.size(status.bytes_total)))
    rate = status.bytes_per_second
    if rate is not None and not status.done:
        parts.append(units.rate(rate))
        if status.bytes_total and rate > 0:
            left = (status.bytes_total - (status.bytes_copied or 0)) / rate
            parts.append("%s left" % units.duration(max(0.0, left)))
    return parts


def _percent(status: Status) -> str:
    done = fraction(status)
    return "   ?%" if done is None else "%4d%%" % int(done * 100)


class Bar:
    """One line redrawn in place on a terminal: percent, bar, amount, rate, time left."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.drawn = False
        encoding = (getattr(stream, "encoding", "") or "").lower().replace("-", "")
        self.cells = ("\u2588", "\u2591") if encoding == "utf8" else ("#", "-")

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return 80

    def line(self, status: Status) -> str:
        head = _percent(status)
        tail = "  ".join(figures(status))
        if status.state and status.state not in ("running", "completed"):
            tail = (status.state + "  " + tail).strip()
        room = self._columns() - len(head) - len(tail) - 5
        width = min(40, room)
        if width < 10:
            return ("%s %s" % (head, tail))[: self._columns() - 1]
        done = fraction(status) or 0.0
        filled = int(done * width)
        return "%s |%s%s| %s" % (head, self.cells[0] * filled, self.cells[1] * (width - filled), tail)

    def __call__(self, status: Status) -> None:
        self.stream.write("\r" + self.line(status) + "\x1b[K")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


class Lines:
    """A plain line now and then, for pipes and batch logs (no carriage returns, no colours)."""

    def __init__(self, name: str, stream: TextIO, interval: float = PLAIN_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.stream, self.interval, self.clock = name, stream, interval, clock
        self.last: Optional[float] = None

    def __call__(self, status: Status) -> None:
        now = self.clock()
        if status.done or (self.last is not None and now - self.last < self.interval):
            return  # the final status is printed in full anyway
        self.last = now
        parts = [status.state or "unknown"] + [_percent(status).strip()] + figures(status)
        self.stream.write("copy-offload: %s: %s\n" % (self.name, ", ".join(p for p in parts if p != "?%")))
        self.stream.flush()

    def close(self) -> None:
        pass
