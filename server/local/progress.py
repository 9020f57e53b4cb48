"""Progress text in dcp's words, and the reference parsing of it.

The reference server learns a copy's progress only from dcp's output lines, matching
``Copied.+\\((\\d{1,3})%\\)``; clients that show ``lastMessage`` expect those lines. The built-in
engine therefore writes the same kind of line, and command profiles (dcp, rsync, ...) are parsed
with the same expression.
"""

from __future__ import annotations

import re
from typing import Optional

__all__ = ["PROGRESS_RE", "human_bytes", "copied_line", "parse_percent", "trim_progress_output"]

PROGRESS_RE = re.compile(r"Copied.+\((\d{1,3})%\)")

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_bytes(count: float, digits: int = 3) -> str:
    """``1.234 GiB``: binary units, as dcp prints them."""
    value = float(count)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return "%d B" % int(count)
    return "%.*f %s" % (digits, value, _UNITS[unit])


def copied_line(done: int, total: int, percent: int, elapsed: float, rate: float, finished: bool) -> str:
    """``Copied 1.234 GiB of 4.000 GiB (30%) in 2.004 secs (630.2 MiB/s) 5 secs left ...``"""
    text = "Copied %s of %s (%d%%) in %.3f secs (%s/s)" % (
        human_bytes(done),
        human_bytes(total),
        percent,
        elapsed,
        human_bytes(rate, 1),
    )
    if finished:
        return text + " done"
    if rate > 0 and total > done:
        return text + " %d secs left ..." % int((total - done) / rate + 0.5)
    return text + " ..."


def parse_percent(line: str) -> Optional[int]:
    """The percentage of a dcp-like progress line, or None when the line is not one."""
    match = PROGRESS_RE.search(line)
    return int(match.group(1)) if match else None


def trim_progress_output(output: str) -> str:
    """Keep the first and last progress lines, as the reference does before storing output."""
    lines = output.split("\n")
    marks = [i for i, line in enumerate(lines) if PROGRESS_RE.search(line)]
    if len(marks) < 2 or marks[-1] - marks[0] <= 1:
        return output
    first, last = marks[0], marks[-1]
    kept = lines[: first + 1] + ["...", "<snipped dcp progress output>", "..."] + lines[last:]
    return "\n".join(kept)
