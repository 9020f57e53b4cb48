"""dcp output: progress percentages, the end-of-copy statistics, and the trimmed output.

The reference (nnf-dm ``internal/controller/helpers``) parses the combined stdout/stderr of
``mpirun ... dcp`` line by line: ``Copied ... (NN%)`` lines give the progress, and once the
progress reaches 100 the summary lines (``Seconds:``, ``Items:``, ...) fill the statistics of
``status.commandStatus``. At the end the output stored in ``status.message`` keeps the first
and last progress lines and replaces everything between them with a snip marker.

``OutputLog`` does the trimming while the command runs, so a copy that prints progress for
hours holds a few lines, not its whole output. Pure code, no I/O.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Dict, List, Optional

PROGRESS_RE = re.compile(r"Copied.+\(([0-9]{1,3})%\)")

# In the reference's order; the first pattern that matches a line wins. "links" repeats the
# "Files:" pattern as the reference does, so it is never filled (kept for the same result).
STATS_RES = (
    ("seconds", re.compile(r"Seconds: ([0-9.]+)")),
    ("items", re.compile(r"Items: ([0-9]+)")),
    ("directories", re.compile(r"Directories: ([0-9]+)")),
    ("files", re.compile(r"Files: ([0-9]+)")),
    ("links", re.compile(r"Files: ([0-9]+)")),
    ("data", re.compile(r"Data: (.*)")),
    ("rate", re.compile(r"Rate: (.*)")),
)
_INT_STATS = {"items", "directories", "files", "links"}
SNIP = ["...", "<snipped dcp progress output>", "..."]
INT32_MAX = 2**31 - 1


def parse_progress(line: str) -> Optional[int]:
    match = PROGRESS_RE.search(line)
    return int(match.group(1)) if match else None


def parse_stats(line: str, into: Dict[str, Any]) -> None:
    """Fill ``into`` (a ``commandStatus`` dict) from one dcp summary line."""
    for key, regex in STATS_RES:
        match = regex.search(line)
        if match:
            value: Any = match.group(1)
            if key in _INT_STATS:
                value = int(value)
                if value > INT32_MAX:  # the reference's int32 conversion would wrap; clamp
                    value = INT32_MAX
            if key != "links":
                into[key] = value
            return


class OutputLog:
    """The combined output of a command, trimmed as it arrives.

    Keeps the lines before the first progress line, the first and the latest progress line,
    the lines after the latest one, and a count of what lies between (which becomes the snip
    marker). ``max_chars`` bounds what is kept before and after, so a chatty command cannot
    grow the status message past what a Kubernetes object can hold.
    """

    def __init__(self, max_chars: int = 64 * 1024) -> None:
        self.max_chars = max_chars
        self._partial = ""
        self._head: List[str] = []
        self._head_chars = 0
        self._head_dropped = 0
        self._first: Optional[str] = None
        self._last: Optional[str] = None
        self._tail: List[str] = []
        self._tail_chars = 0
        self._tail_dropped = 0
        self._between = 0
        self._unterminated = False

    def feed(self, text: str) -> List[str]:
        """Add output; returns the complete new lines, each with its ``\\n``."""
        text = self._partial + text
        parts = text.split("\n")
        self._partial = parts.pop()
        for line in parts:
            self._add(line)
        return [line + "\n" for line in parts]

    def flush(self) -> List[str]:
        """At EOF: a last line without newline counts too (returned without ``\\n``)."""
        rest, self._partial = self._partial, ""
        if rest:
            self._add(rest)
            self._unterminated = True
            return [rest]
        return []

    def _add(self, line: str) -> None:
        if PROGRESS_RE.search(line):
            if self._first is None:
                self._first = line
                return
            if self._last is not None:
                self._between += 1
            self._between += len(self._tail) + self._tail_dropped
            self._last = line
            self._tail, self._tail_chars, self._tail_dropped = [], 0, 0
            return
        if self._first is None:
            if self._head_chars + len(line) > self.max_chars // 2:
                self._head_dropped += 1
                return
            self._head.append(line)
            self._head_chars += len(line) + 1
            return
        self._tail.append(line)
        self._tail_chars += len(line) + 1
        while self._tail_chars > self.max_chars // 2 and len(self._tail) > 1:
            dropped = self._tail.pop(0)
            self._tail_chars -= len(dropped) + 1
            self._tail_dropped += 1

    def text(self, final: bool = False) -> str:
        """The trimmed output so far; ``final`` also counts an unterminated last line."""
        lines = list(self._head)
        if self._head_dropped:
            lines.append("<%d more lines of output dropped>" % self._head_dropped)
        if self._first is not None:
            lines.append(self._first)
        if self._last is not None:
            if self._between:
                lines.extend(SNIP)
            lines.append(self._last)
        if self._tail_dropped:
            lines.append("<%d lines of output dropped>" % self._tail_dropped)
        lines.extend(self._tail)
        if final and self._partial:
            lines.append(self._partial)
        elif not self._unterminated:
            lines.append("")
        return "\n".join(lines)


EXPLAIN_LIMIT = 400
_BANNER_EDGE = re.compile(r"^-{20,}\s*$")
_ABORT_NOTICES = ("Primary job  terminated normally", "mpirun detected that one or more processes exited",
                  "prterun detected that one or more processes exited", "mpirun noticed that process rank")
_MPI_WARNING = re.compile(r"^\[[^\]\s]+:\d+\] \w+:\w+: Warning: ")  # e.g. "[host:123] plm:rsh: Warning: setpgid(...) failed"
_TELLING = re.compile(r"error|cannot|can't|denied|no such|fail|invalid|unable|not found|refused|abort", re.IGNORECASE)


def explain_output(text: str, limit: int = EXPLAIN_LIMIT) -> str:
    """External output cut to the lines that explain a failure, at most ``limit`` characters.

    Open MPI frames its notices in dashed lines; the abort notices ("Primary job terminated
    normally, but 1 process returned a non-zero exit code...") only restate that something
    failed and are dropped; other notices (mpirun could not start, a host is unreachable) are
    the explanation and are kept, unframed; its launcher's own warnings (``[host:pid]
    plm:rsh: Warning: ...``) are dropped too. When the rest is still too long, the lines that
    name an error win, then the text is cut with ``...``.
    """
    kept: List[str] = []
    block: Optional[List[str]] = None
    for line in text.splitlines():
        if _BANNER_EDGE.match(line):
            if block is None:
                block = []
                continue
            if block and not any(notice in " ".join(block) for notice in _ABORT_NOTICES):
                kept.extend(b for b in block if b.strip())
            block = None
            continue
        if block is not None:
            block.append(line)
        elif line.strip() and not _MPI_WARNING.match(line):
            kept.append(line)
    if block:  # an unterminated notice
        kept.extend(b for b in block if b.strip())
    result = "\n".join(kept)
    if len(result) > limit:
        telling = [line for line in kept if _TELLING.search(line)]
        if telling:
            result = "\n".join(telling)
    if len(result) > limit:
        result = result[: limit - 3].rstrip() + "..."
    if text.endswith("\n") and result:
        result += "\n"
    return result


# --------------------------------------------------------------------------- Kubernetes time and durations


def micro_time(when: dt.datetime) -> str:
    """``metav1.MicroTime`` JSON: RFC 3339 in UTC with microseconds."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: Any) -> Optional[dt.datetime]:
    """A ``metav1.Time``/``MicroTime`` string as an aware datetime (None if absent or bad)."""
    if not isinstance(text, str) or not text:
        return None
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?([+-]\d\d:\d\d)", value)
    if match:  # fromisoformat on 3.9/3.10 wants 3 or 6 fraction digits
        frac = (match.group(2) or "")[:7].ljust(7, "0") if match.group(2) else ""
        value = match.group(1) + frac + match.group(3)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: Any) -> float:
    """A Go duration string (``1m30.5s``, ``12.004183592s``) in seconds; 0 if absent or bad."""
    if not isinstance(text, str) or not text:
        return 0.0
    total, pos = 0.0, 0
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    for match in re.finditer(r"([0-9]*\.?[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)", body):
        if match.start() != pos:
            return 0.0
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total if pos == len(body) else 0.0


def format_duration(seconds: float) -> str:
    """Go's ``Duration.String()`` at nanosecond precision (``metav1.Duration`` JSON)."""
    ns = int(round(seconds * 1e9))
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1000:
        return "%s%dns" % (sign, ns)
    if ns < 1_000_000:
        return "%s%s\u00b5s" % (sign, _frac(ns, 1000))
    if ns < 1_000_000_000:
        return "%s%sms" % (sign, _frac(ns, 1_000_000))
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = _frac(rest, 10**9) + "s"
    if hours:
        return "%s%dh%dm%s" % (sign, hours, minutes, text)
    if minutes:
        return "%s%dm%s" % (sign, minutes, text)
    return sign + text


def _frac(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return ("%d.%0*d" % (whole, digits, frac)).rstrip("0")
