"""Child processes that never block the event loop, not even to start.

``asyncio.create_subprocess_exec`` forks and then waits, on the loop thread, for the child to
``exec`` (and 3.11's child watcher starts a thread per child); under load, with a hundred
copies starting at once on a busy node, that is where the loop stalls. Here ``Popen`` runs in
a small thread pool, the output pipe is read by the loop's selector, and the exit is noticed
through a pidfd (Linux 5.3+; a waiting thread elsewhere). Every child gets its own session,
so killing its process group kills everything it started.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import signal
import subprocess
from typing import List, Optional, Tuple


class Child:
    """A running command: ``stdout`` (stderr merged) as a StreamReader, ``wait()`` for its exit."""

    def __init__(self, popen: subprocess.Popen, stdout: asyncio.StreamReader, transport: asyncio.BaseTransport,
                 exited: asyncio.Future) -> None:
        self.popen = popen
        self.stdout = stdout
        self._transport = transport
        self._exited = exited

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> Optional[int]:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def kill_group(self) -> None:
        """SIGKILL the child's whole process group (its session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def close(self) -> None:
        self._transport.close()


def _watch_exit(loop: asyncio.AbstractEventLoop, popen: subprocess.Popen) -> asyncio.Future:
    exited = loop.create_future()

    def settle(code: int) -> None:
        if not exited.done():
            exited.set_result(code)

    try:
        fd = os.pidfd_open(popen.pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        fd = None
    if fd is None:
        waiting = loop.run_in_executor(None, popen.wait)
        waiting.add_done_callback(lambda f: settle(f.result()))
        return exited

    def on_exit() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        settle(popen.wait())  # the pidfd is readable: the child has ended, this only reaps it

    loop.add_reader(fd, on_exit)
    return exited


class Processes:
    """Starts children off the event loop; one per driver (``close()`` releases its threads)."""

    def __init__(self, spawn_threads: int = 4, run_threads: int = 16) -> None:
        self._threads = (spawn_threads, run_threads)
        self._spawn = concurrent.futures.ThreadPoolExecutor(max_workers=spawn_threads, thread_name_prefix="copy-offload-spawn")
        self._run = concurrent.futures.ThreadPoolExecutor(max_workers=run_threads, thread_name_prefix="copy-offload-run")

    def warm(self) -> None:
        """Start the worker threads now, not during the first burst of requests."""
        from copy_offload.server.kube import warm_pool

        warm_pool(self._spawn, self._threads[0])
        warm_pool(self._run, self._threads[1])

    def close(self) -> None:
        self._spawn.shutdown(wait=False)
        self._run.shutdown(wait=False)

    async def start(self, argv: List[str]) -> Child:
        """Start ``argv`` with stdout+stderr merged into one stream."""
        loop = asyncio.get_running_loop()
        popen = await loop.run_in_executor(self._spawn, functools.partial(
            subprocess.Popen, argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        ))
        reader = asyncio.StreamReader(limit=1 << 20)
        assert popen.stdout is not None
        try:
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), popen.stdout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            await loop.run_in_executor(self._spawn, popen.wait)
            raise
        return Child(popen, reader, transport, _watch_exit(loop, popen))

    async def run(self, argv: List[str], timeout: Optional[float]) -> Tuple[int, bytes, bytes]:
        """Run a short command to its end in a worker thread: (returncode, stdout, stderr).

        A timeout kills the command's process group (returncode ``-SIGKILL``).
        """
        return await asyncio.get_running_loop().run_in_executor(self._run, _run_blocking, argv, timeout)


def _run_blocking(argv: List[str], timeout: Optional[float]) -> Tuple[int, bytes, bytes]:
    popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True, close_fds=True)
    try:
        out, err = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        out, err = popen.communicate()
        return -signal.SIGKILL, out, err
    return popen.returncode, out, err
