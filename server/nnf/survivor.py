"""What lets a restarted server recognise, watch and judge a copy that outlived its predecessor.

The copy command runs inside a small bash wrapper (``WRAPPER``) that copies its output to
``<run dir>/output`` (``tee -p``: it keeps writing the file after the server's end of the pipe
is gone) and writes the command's exit code to ``<run dir>/result`` when it ends. The run dir
is the request's hostfile directory; ``record.json`` there names the request and the wrapper's
pid with the process start time from ``/proc/<pid>/stat`` (a pid alone may be reused).

After a restart, a survivor (same pid, same start time) is watched to its end through a pidfd
(polling ``/proc`` where there is none); its output is read back from ``output`` and its exit
code from ``result``. A copy that ended while no server ran leaves its ``result`` behind. With
no ``result``, nobody can know how it ended, and the status says exactly that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from typing import Any, Dict, List, Optional

RECORD = "record.json"
OUTPUT = "output"
RESULT = "result"
RUN_DIR_PREFIX = "dm-"

# $1 = the command (run as /bin/bash -c, as the reference), $2 = the run dir.
WRAPPER = (
    '/bin/bash -c "$1" 2>&1 </dev/null | tee -p -a "$2/output"\n'
    "rc=${PIPESTATUS[0]}\n"
    'printf "%s\\n" "$rc" >"$2/result.tmp" && mv -f "$2/result.tmp" "$2/result"\n'
    'exit "$rc"\n'
)


def wrapped_argv(command: str, run_dir: str) -> List[str]:
    """The argv that runs ``/bin/bash -c command`` and leaves its output and exit code in ``run_dir``."""
    return ["/bin/bash", "-c", WRAPPER, "copy-offload-dm", command, run_dir]


def process_start_time(pid: int) -> Optional[int]:
    """Field 22 of ``/proc/<pid>/stat`` (clock ticks after boot), None when there is no such process."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            text = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def alive(pid: int, start_time: Optional[int]) -> bool:
    """Whether ``pid`` is still the process that was recorded (not a zombie, not a reused pid)."""
    if start_time is None or process_start_time(pid) != start_time:
        return False
    try:
        with open("/proc/%d/stat" % pid, "rb") as fh:
            state = fh.read().decode("ascii", "replace")
    except OSError:
        return False
    rest = state[state.rfind(")") + 2:].split()
    return bool(rest) and rest[0] not in ("Z", "X")


def write_record(run_dir: str, record: Dict[str, Any]) -> None:
    """``record.json``, written whole or not at all (a crash mid-write leaves no half record)."""
    path = os.path.join(run_dir, RECORD)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(record, fh)
    os.replace(path + ".tmp", path)


def read_record(run_dir: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(run_dir, RECORD), encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_result(run_dir: str) -> Optional[int]:
    """The exit code the wrapper recorded, None if it recorded none."""
    try:
        with open(os.path.join(run_dir, RESULT), encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def run_dirs(parent: str) -> List[str]:
    """The request directories (``dm-*``) under ``parent``."""
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    return sorted(os.path.join(parent, n) for n in names if n.startswith(RUN_DIR_PREFIX) and os.path.isdir(os.path.join(parent, n)))


class FileTail:
    """Reads a growing file like a pipe: waits for more until ``exited`` is done, then EOF."""

    def __init__(self, path: str, exited: asyncio.Future, poll: float = 0.2) -> None:
        self.path = path
        self.exited = exited
        self.poll = poll
        self._fh: Optional[Any] = None

    async def read(self, n: int) -> bytes:
        while True:
            if self._fh is None:
                with contextlib.suppress(OSError):
                    self._fh = open(self.path, "rb")  # noqa: SIM115 - kept open while tailing
            data = self._fh.read(n) if self._fh is not None else b""
            if data:
                return data
            if self.exited.done():
                data = self._fh.read(n) if self._fh is not None else b""
                if not data and self._fh is not None:
                    self._fh.close()
                return data
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), self.poll)


class Survivor:
    """A copy wrapper started by an earlier server process, as ``CopyJob`` needs a process to be.

    ``running`` False: it ended while no server ran; only what it left in ``run_dir`` counts.
    """

    def __init__(self, pid: int, start_time: Optional[int], run_dir: str, running: bool, poll: float = 0.5) -> None:
        self.pid = pid
        self.start_time = start_time
        self.run_dir = run_dir
        if running:
            self._exited = _watch_pid(pid, start_time, poll)
        else:
            self._exited = asyncio.get_running_loop().create_future()
            self._exited.set_result(None)
        self.stdout = FileTail(os.path.join(run_dir, OUTPUT), self._exited)

    @property
    def returncode(self) -> Optional[int]:
        """The recorded exit code once it has ended (None: running, or ended without a record)."""
        return read_result(self.run_dir) if self._exited.done() else None

    async def wait(self) -> Optional[int]:
        await asyncio.shield(self._exited)
        return self.returncode

    def kill_group(self) -> None:
        """SIGKILL its process group (the wrapper leads its own session), if it is still the one recorded."""
        if self.pid > 1 and alive(self.pid, self.start_time):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def close(self) -> None:
        pass


def _watch_pid(pid: int, start: Optional[int], poll: float) -> asyncio.Future:
    """A future done when ``pid`` (not our child) ends: a pidfd where there is one, else /proc polling."""
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    try:
        fd = os.pidfd_open(pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        def on_exit() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, on_exit)
        return exited

    async def polling() -> None:
        while alive(pid, start):
            await asyncio.sleep(poll)
        if not exited.done():
            exited.set_result(None)

    exited.poller = loop.create_task(polling())  # type: ignore[attr-defined]  # keep a reference
    return exited
