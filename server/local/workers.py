"""The copiers of one job: worker processes from a pool kept by the server, or a thread.

Batches go through one bounded queue. A single file is copied in the job's own thread of the
server process (``Crew.copy_here``: no hand-off). A tree goes to worker processes (copier.py run as a script) from its first batch,
more joining while batches wait in the queue, up to the job's worker count: each process has its
own interpreter lock, so many-small-file copies run in parallel in the kernel instead of queueing
on one lock, and the server process is left with walking and feeding. The processes are kept in
a pool when a job ends and reused by the next (a process start costs tens of ms, more after a
dropped page cache); ``warm_pool()`` fills it when the
driver starts. Where processes are off or the server's budget of them is spent, threads do the
work. A stop (cancel or failure) kills the job's worker processes at once (they are not kept);
the engine then removes the temporaries they left. Each job's two open root directories are
passed to its processes with ``SCM_RIGHTS`` and every batch is reached beneath them, as the
thread does (beneath.py).
"""

from __future__ import annotations

import atexit
import os
import queue
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Set, Tuple

from copy_offload.server.local import beneath, copier
from copy_offload.server.local.copier import Copier, Failure, Stopped
from copy_offload.server.local.outcome import Outcome

if TYPE_CHECKING:
    from copy_offload.server.local.copier import Batch

__all__ = ["Crew", "CopierSettings", "QUEUE_BATCHES", "warm_pool", "sweep_temporaries"]

QUEUE_BATCHES = 256  # bounds the walker's lead, so memory stays flat on huge trees (~50 files a batch)
IN_FLIGHT = 2  # frames sent ahead to each worker process: one to work on, one waiting (no gap at a hand-off)
# A frame carries waiting batches up to FRAME_FILES files, more (up to FRAME_FILES_MAX) while
# much is queued: each hand-off wakes a thread here and the worker there, and on a 2-CPU machine
# 2,048-file frames cost the workers 0.25 us a file less and the server 0.2 us. As the queue
# drains frames shrink back, because at the end of a job the workers finish their frames
# unevenly, by up to IN_FLIGHT frames (2 x 256 files is a few ms on small files, where 4 x 512
# left one worker copying ~15 ms alone).
FRAME_FILES = 256
FRAME_FILES_MAX = 2048
BATCH_FILES_GUESS = 100  # files in a queued batch, for the share (the walk's are 128 at most)
_COPIER_SCRIPT = copier.__file__


@dataclass(frozen=True)
class CopierSettings:
    """What every copier of one job is told, in one record: the crew hands it to each copier
    thread as it is and to each worker process as its job config (copier.py's protocol)."""

    token: str
    umask: int
    chunk: int
    trees: Tuple[beneath.Tree, beneath.Tree]  # the open (source, destination) roots
    direct_min: int = 0  # files this big are written with O_DIRECT (0: never)
    verify: bool = False
    preserve: bool = False  # times too (dcp's -p); the mode always

    def copier(self, counter: List[int], outcome: Outcome) -> Copier:
        return Copier(self.token, self.umask, self.chunk, counter, outcome.stopping,
                      direct_min=self.direct_min, trees=self.trees, verify=self.verify,
                      on_mismatch=outcome.mismatch, preserve=self.preserve)

    def worker_config(self) -> Tuple[tuple, Tuple[int, int]]:
        """The config frame of a worker process, and the root descriptors sent after it."""
        src, dst = self.trees
        config = (self.token, self.umask, self.chunk, self.direct_min,
                  src.path, copier.PASSED_FDS, dst.path, copier.PASSED_FDS, self.verify, self.preserve)
        return config, (src.fd, dst.fd)


class Crew:
    """Copiers fed from one queue; counters readable from any thread without a lock.

    The engine hands it batches (``submit``), then ``finish()``es or ``halt()``s it, and reads
    ``totals()``; the crew tells the engine nothing directly: failures, crashes and mismatches go
    to the job's ``outcome`` (outcome.py), whose stop flag every copier polls.
    """

    def __init__(
        self,
        size: int,
        settings: CopierSettings,
        outcome: Outcome,
        processes: bool = True,
        budget: Optional[threading.Semaphore] = None,
    ) -> None:
        self.size = max(1, size)
        self.settings = settings
        self.outcome = outcome
        # A tree goes to worker processes (from the pool) from its first batch, so the walk
        # shares its interpreter lock with no copier; a single file is copied where the job
        # runs (copy_here), with no hand-off at all.
        self.processes = processes
        self.budget = budget  # worker processes shared by every job of a server
        self.queue: queue.Queue[Optional[Batch]] = queue.Queue(QUEUE_BATCHES)
        self.counters: List[List[int]] = []
        self.members: List[object] = []
        self.swept_dirs: Set[str] = set()  # merge directories (relative) a killed process may have written in
        self._lock = threading.RLock()  # halt() may come from a failure inside _add_member()
        self._halted = False

    def stopping(self) -> bool:
        return self.outcome.stopped

    def fail(self, text: str) -> None:
        """A copier failed (or crashed): the job fails with ``text`` and every copier stops."""
        self.outcome.fail(text)
        self.halt()

    def copy_here(self, batch: Batch) -> None:
        """Copy ``batch`` in the calling thread: the one batch of a single-file job, which a
        hand-off to a copier thread would only delay (a thread start and a lock handed over).
        Raises Stopped once stopping, as ``submit`` does."""
        counter = [0, 0, 0, 0, 0]
        self.counters.append(counter)
        _copy_reporting(self, self.settings.copier(counter, self.outcome), batch)

    # -------------------------------------------------------------- feeding

    def submit(self, batch: Batch) -> None:
        """Queue a batch, adding a copier if work is waiting; raise Stopped once stopping."""
        if (not self.members or not self.queue.empty()) and self._room():
            self._add_member()
        while True:
            if self.stopping():
                raise Stopped()
            try:
                self.queue.put(batch, timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        """No more batches: let every copier drain the queue and end, then wait for them."""
        if self.stopping():
            self.halt()
            while True:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break
        for _ in self.members:
            self.queue.put(None)
        for member in self.members:
            member.join()  # type: ignore[attr-defined]

    def halt(self) -> None:
        """Kill the worker processes now (a cancel or a failure); threads stop at their checks."""
        with self._lock:
            self._halted = True
            for member in self.members:
                if isinstance(member, _ProcessMember):
                    member.kill()

    def sweep(self) -> None:
        """After a stop: remove the temporaries its killed worker processes left behind."""
        sweep_temporaries(self.settings.trees[1], self.swept_dirs, self.settings.token)

    def _room(self) -> bool:
        """Whether another copier may start: up to ``size`` of them."""
        return len(self.members) < self.size

    def totals(self) -> List[int]:
        """``[bytes, files, verified bytes, mismatches, bytes found]`` over every copier."""
        done = [0, 0, 0, 0, 0]
        for counter in list(self.counters):
            for index, value in enumerate(counter):
                done[index] += value
        return done

    def _add_member(self) -> None:
        counter = [0, 0, 0, 0, 0]
        with self._lock:
            if self._halted:
                return
            member: Optional[object] = None
            if self.processes:
                if self.budget is None or self.budget.acquire(blocking=False):
                    try:
                        member = _ProcessMember(self, counter)
                    except OSError:
                        if self.budget is not None:
                            self.budget.release()
                        self.processes = False  # no worker processes here: threads will do
                elif self.members:
                    return  # the server runs enough worker processes: carry on with these
            if member is None:
                member = _ThreadMember(self, counter)
            self.counters.append(counter)
            self.members.append(member)


def _copy_reporting(crew: Crew, copier_: Copier, batch: Batch) -> None:
    """Copy ``batch`` in this thread; a failure (or a bug, which must stop the job, not hang it)
    fails the job through the crew. Stopped goes to the caller."""
    try:
        copier_.copy_batch(batch)
    except Failure as exc:
        crew.fail(exc.describe())
    except Stopped:
        raise
    except Exception as exc:
        crew.fail("copy failed: copy worker failed: %r" % exc)


class _ThreadMember:
    """A copier thread inside the server process."""

    def __init__(self, crew: Crew, counter: List[int]) -> None:
        self.crew = crew
        self.copier = crew.settings.copier(counter, crew.outcome)
        self.thread = threading.Thread(target=self._run, name="copy-offload-copier", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        crew = self.crew
        get = crew.queue.get
        while True:
            batch = get()
            if batch is None:
                return
            if crew.stopping():
                continue
            try:
                _copy_reporting(crew, self.copier, batch)
            except Stopped:
                continue

    def join(self) -> None:
        self.thread.join()


class _Worker:
    """A copier.py process: commands on a socket (its stdin, so root descriptors can travel with
    ``SCM_RIGHTS``), answers on a pipe. Between jobs it waits in the pool."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", _COPIER_SCRIPT, str(os.getpid())],
                stdin=theirs,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        assert self.proc.stdout is not None
        self.owner = os.getpid()
        self.sock = ours
        self.wfd = ours.fileno()
        self.rfd = self.proc.stdout.fileno()

    def usable(self) -> bool:
        return self.owner == os.getpid() and self.proc.poll() is None

    def start_job(self, config: tuple, fds: Tuple[int, ...]) -> None:
        copier.send_frame(self.wfd, config)
        if fds:
            socket.send_fds(self.sock, [b"F"], list(fds))

    def end_input(self) -> None:
        """End of its input: the process exits when it reads that."""
        try:
            self.sock.close()
        except OSError:
            pass

    def reap(self) -> int:
        self.end_input()
        code = self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code


_POOL: List[_Worker] = []  # idle worker processes of this server, reused by the next job
_POOL_LOCK = threading.Lock()
POOL_MAX = 2 * (os.cpu_count() or 1)


def _take_worker() -> _Worker:
    with _POOL_LOCK:
        while _POOL:
            worker = _POOL.pop()
            if worker.usable():
                return worker
            worker.end_input()
    return _Worker()


def _return_worker(worker: _Worker) -> None:
    with _POOL_LOCK:
        if len(_POOL) < POOL_MAX and worker.usable():
            _POOL.append(worker)
            return
    worker.reap()


def _close_pool() -> None:
    """At exit: end the idle workers' input and reap them (they exit when they read the end)."""
    with _POOL_LOCK:
        idle = list(_POOL)
        del _POOL[:]
    for worker in idle:
        worker.end_input()
    for worker in idle:
        try:
            worker.proc.wait(5)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
        worker.reap()


atexit.register(_close_pool)


def warm_pool(count: int) -> None:
    """Start idle worker processes up to ``count``, so the next job forks and execs none (after
    a dropped page cache a start reads the interpreter from disk again)."""
    count = min(count, POOL_MAX)
    with _POOL_LOCK:
        missing = count - len(_POOL)
    for _ in range(max(0, missing)):
        try:
            _return_worker(_Worker())
        except OSError:
            return


class _ProcessMember:
    """A worker process (copier.py, from the pool) with a feeding thread and a reading thread."""

    def __init__(self, crew: Crew, counter: List[int]) -> None:
        self.crew = crew
        self.counter = counter
        config, fds = crew.settings.worker_config()
        self.worker = _take_worker()
        try:
            self.worker.start_job(config, fds)
        except OSError:  # a pooled process that died meanwhile: a fresh one
            self.worker.reap()
            self.worker = _Worker()
            self.worker.start_job(config, fds)
        self.proc = self.worker.proc
        self.slots = threading.Semaphore(IN_FLIGHT)
        self.killed = self.returned = False
        self.feeder = threading.Thread(target=self._feed, name="copy-offload-feeder", daemon=True)
        self.reader = threading.Thread(target=self._read, name="copy-offload-reader", daemon=True)
        self.feeder.start()
        self.reader.start()

    def _feed(self) -> None:
        crew = self.crew
        wfd = self.worker.wfd
        ended = False
        try:
            while True:
                while not self.slots.acquire(timeout=0.2):
                    if crew.stopping() or self.killed:
                        return
                frame, last = self._gather(crew.queue.get())
                if crew.stopping() or self.killed:
                    return
                if frame:
                    copier.send_frame(wfd, frame)
                if last:
                    copier.send_frame(wfd, None)  # the job is over: the worker answers ("z",)
                    ended = True
                    return
        except OSError:
            return  # the worker is gone; the reader reports why
        finally:
            if not ended:
                self.worker.end_input()

    def _gather(self, first: Optional[Batch]) -> Tuple[List[Batch], bool]:
        """``first`` and the batches waiting behind it, up to a frame's worth of files (a
        fraction of this worker's share of what is queued, within FRAME_FILES and
        FRAME_FILES_MAX); and whether the end of the job (``None``) came with them."""
        crew = self.crew
        limit = frame_limit(crew.queue.qsize(), len(crew.members))
        frame: List[Batch] = []
        batch = first
        files = 0
        while batch is not None:
            if batch[3]:
                crew.swept_dirs.add(batch[1])
            frame.append(batch)
            files += len(batch[2])
            if files >= limit:
                return frame, False
            try:
                batch = crew.queue.get_nowait()
            except queue.Empty:
                return frame, False
        return frame, True

    def _read(self) -> None:
        crew = self.crew
        counter = self.counter
        failed = reusable = False
        while True:
            try:
                message = copier.receive_frame(self.worker.rfd)
            except (EOFError, OSError, ValueError):
                break
            kind = message[0]
            if kind == "z":
                reusable = True
                break
            if kind == "e":
                failed = True
                crew.fail(Failure(message[1], message[2], message[3], message[4]).describe())
                continue
            if kind == "m":
                counter[3] += 1
                crew.outcome.mismatch(message[1])
                continue
            counter[0] += message[1]
            counter[1] += message[2]
            counter[2] += message[3]
            if len(message) > 4:
                counter[4] += message[4]
            if kind == "d":
                self.slots.release()
        with crew._lock:  # halt() kills under this lock: never a process handed back
            self.returned = reusable and not self.killed
        if self.returned:
            _return_worker(self.worker)
            code = 0
        else:
            code = self.worker.reap()
        if crew.budget is not None:
            crew.budget.release()
        if code != 0 and not failed and not self.killed and not crew.stopping():
            crew.fail("copy failed: copy worker process %d exited with status %d" % (self.proc.pid, code))

    def kill(self) -> None:
        if self.returned:  # back in the pool, perhaps working for another job now
            return
        self.killed = True
        try:
            self.proc.kill()
        except OSError:
            pass

    def join(self) -> None:
        # A feeder parked on queue.get() receives its own None from Crew.finish().
        self.feeder.join()
        self.reader.join()


def frame_limit(queued: int, members: int) -> int:
    """The files of the next frame when ``queued`` batches wait for ``members`` copiers: a
    quarter of one copier's share of them, within FRAME_FILES and FRAME_FILES_MAX."""
    share = queued * BATCH_FILES_GUESS // (4 * max(1, members))
    return min(FRAME_FILES_MAX, max(FRAME_FILES, share))


def sweep_temporaries(tree: beneath.Tree, directories: Set[str], token: str) -> None:
    """Remove the ``.<name>.copy-offload-<token>.tmp`` files a killed worker left behind.

    ``directories`` are relative to ``tree``, reached beneath it as the copies were.
    """
    mark = copier.TEMP_MARK + token
    for directory in directories:
        try:
            fd = tree.opendir(directory)
        except OSError:
            continue
        try:
            with os.scandir(fd) as it:
                names = [entry.name for entry in it if mark in entry.name]
            for name in names:
                try:
                    os.unlink(name, dir_fd=fd)
                except OSError:
                    pass
        finally:
            os.close(fd)
