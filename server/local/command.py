"""A copy done by a profile's command (rsync, dcp, ...), with the engine's job interface.

The command runs without a shell in its own process group, stdout and stderr merged, as the
reference runs dcp. Output lines (split on ``\\n`` and ``\\r``, since rsync redraws its
progress with ``\\r``) update ``lastMessage`` and, when they match the reference progress
expression (or rsync's ``--info=progress2`` line), the percentage. A cancel sends SIGTERM to
the group, so tools can remove their own temporaries, and SIGKILL half a second later.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from typing import List, Optional

from copy_offload.server.local.engine import CopyCancelled, CopyError, Progress
from copy_offload.server.local.progress import parse_percent, trim_progress_output

__all__ = ["CommandJob"]

OUTPUT_LIMIT = 256 << 10  # output kept for the status message: the head and the tail
KILL_GRACE = 0.5
_RSYNC_PROGRESS = re.compile(r"^\s*[\d,.]+[KMGT]?\s+(\d{1,3})%\s")
_LINE_SPLIT = re.compile(rb"[\r\n]")


class CommandJob:
    """One run of ``argv``; ``run()`` blocks, the rest may be called from any thread."""

    def __init__(self, argv: List[str], *, dryrun: bool = False) -> None:
        self.argv = argv
        self.dryrun = dryrun
        self.output = ""  # the trimmed output, for the status message (storeStdout) or the log
        self._percent: Optional[int] = None
        self._last = ""
        self._head = bytearray()
        self._tail = bytearray()
        self._dropped = 0
        self._proc: Optional[subprocess.Popen] = None
        self._cancelled = False
        self._finished = False
        self._lock = threading.Lock()
        self.last_time: Optional[float] = None  # wall-clock time of the last output line
        self._started: Optional[float] = None
        self._ended: Optional[float] = None

    def prepare(self) -> None:
        if not self.dryrun and not _findable(self.argv[0]):
            raise CopyError("the profile's command %s was not found on this server" % self.argv[0])

    def run(self, *, defer_cleanup: bool = False) -> Progress:
        self._started = time.monotonic()
        if self.dryrun:
            self._last = "Dry run: would run %s\n" % " ".join(self.argv)
            self.last_time = time.time()
            return self._done()
        with self._lock:
            if self._cancelled:
                raise CopyCancelled()
            try:
                self._proc = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                )
            except OSError as exc:
                raise CopyError("cannot run %s: %s" % (self.argv[0], exc.strerror or exc)) from None
        proc = self._proc
        assert proc.stdout is not None
        pending = b""
        while True:
            data = proc.stdout.read1(65536)
            if not data:
                break
            self._keep(data)
            parts = _LINE_SPLIT.split(pending + data)
            pending = parts.pop()
            for part in parts:
                if part.strip():
                    self._line(part.decode("utf-8", "replace"))
        if pending.strip():
            self._line(pending.decode("utf-8", "replace"))
        proc.stdout.close()
        code = proc.wait()
        self._ended = time.monotonic()
        output = trim_progress_output(self._output_text())
        if self._cancelled:
            raise CopyCancelled()
        if code != 0:
            reason = "exit status %d" % code if code > 0 else "signal: %s" % _signal_name(-code)
            raise CopyError("%s: %s" % (reason, output))
        self.output = output
        return self._done()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        timer = threading.Timer(KILL_GRACE, _signal_group, (proc.pid, signal.SIGKILL))
        timer.daemon = True
        timer.start()

    def cleanup(self) -> None:
        """Nothing of ours to remove: the command owns its temporaries."""

    def temporaries(self) -> List[str]:
        return []

    def progress(self) -> Progress:
        start = self._started
        end = self._ended if self._ended is not None else time.monotonic()
        return Progress(0, 0, 0, 0, (end - start) if start is not None else 0.0, False, self._finished)

    def percent(self) -> Optional[int]:
        return 100 if self._finished and self.dryrun else self._percent

    def message(self) -> str:
        return self._last

    # ------------------------------------------------------------------ output

    def _done(self) -> Progress:
        self._ended = self._ended or time.monotonic()
        self._finished = True
        return self.progress()

    def _line(self, line: str) -> None:
        percent = parse_percent(line)
        if percent is None:
            match = _RSYNC_PROGRESS.match(line)
            percent = int(match.group(1)) if match else None
        if percent is not None:
            self._percent = percent
        self._last = line + "\n"  # the reference keeps the newline of each line
        self.last_time = time.time()

    def _keep(self, data: bytes) -> None:
        room = OUTPUT_LIMIT // 2 - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            excess = len(self._tail) - OUTPUT_LIMIT // 2
            if excess > 0:
                del self._tail[:excess]
                self._dropped += excess

    def _output_text(self) -> str:
        text = self._head.decode("utf-8", "replace")
        if self._dropped:
            text += "\n... <%d bytes of output dropped> ...\n" % self._dropped
        return text + self._tail.decode("utf-8", "replace")


def _findable(program: str) -> bool:
    if "/" in program:
        return os.access(program, os.X_OK)
    from shutil import which

    return which(program) is not None


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(number: int) -> str:
    """Go's words for a signal (``signal: killed``), which are strsignal's in lower case."""
    try:
        text = signal.strsignal(number)
    except ValueError:
        text = None
    return text.lower() if text else "signal %d" % number
