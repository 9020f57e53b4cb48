"""The ``local`` driver: copies on this machine, confined to the allowed roots, recorded durably.

Each request runs in its own thread (the built-in engine, which adds worker processes for big
trees, or a profile's command), so the event loop never blocks. The driver keeps the request's
state in the NnfDataMovement vocabulary (Running/Finished; Success/Failed/Cancelled) and
answers a ``RequestState`` (the server renders it), with the engine's byte and file counters
beside the reference keys. Records go to SQLite (store.py) at start, about once a second while running,
and at the end; a status for a finished request comes from memory or, after a restart, from
SQLite.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import logging
import os
import shlex
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Sequence, Tuple, TypeVar, Union

from copy_offload.client import wire
from copy_offload.client.wire import (
    RES_CANCELLED,
    RES_FAILED,
    RES_FINISHED,
    RES_RUNNING,
    RES_SUCCESS,
    CopyRequest,
    RequestState,
)
from copy_offload.server.drivers.base import Driver
from copy_offload.server.drivers.errors import BadRequest, Internal, RequestNotFound
from copy_offload.server.local.beneath import Tree, reason, relative, root_of
from copy_offload.server.local.command import CommandJob
from copy_offload.server.local.copier import TEMP_MARK
from copy_offload.server.local.engine import CopyCancelled, CopyError, CopyJob
from copy_offload.server.local.paths import Confinement
from copy_offload.server.local.profiles import Profile, Profiles
from copy_offload.server.local.statelock import StateLock
from copy_offload.server.local.store import Store
from copy_offload.server.local.workers import warm_pool

__all__ = ["LocalDriver", "ENGINE_COMMAND", "NAME_BASE"]

log = logging.getLogger("copy_offload.server.local")

NAME_BASE = "nnf-copy-offload-"
ENGINE_COMMAND = "copy-offload-engine"
PROGRESS_INTERVAL = 1.0  # seconds between durable progress writes of a running request
CANCEL_WAIT = 1.0  # how long cancel() waits for the request to leave the active set
RECENT = 1000  # finished requests kept in memory; older ones are read back from SQLite
STOPPED_MESSAGE = ("the copy-offload server was stopped (SIGTERM or SIGINT) while this request"
                   " was running; it did not complete")

T = TypeVar("T")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class _Work:
    """The one job interface the driver uses, over the engine's CopyJob or a profile's CommandJob."""

    def __init__(self, job: Union[CopyJob, CommandJob]) -> None:
        self.job = job

    def prepare(self) -> None:
        self.job.prepare()

    def run(self) -> None:
        self.job.run(defer_cleanup=True)

    def cancel(self) -> None:
        self.job.cancel()

    def cleanup(self) -> None:
        self.job.cleanup()

    def temporaries(self) -> List[str]:
        return self.job.temporaries()

    def output(self) -> str:
        """What storeStdout keeps and logStdout logs."""
        raise NotImplementedError

    def fill(self, rec: RequestState, now: dt.datetime) -> None:
        """Put the live progress into ``rec`` (a copy of the request's state)."""
        raise NotImplementedError


class _EngineWork(_Work):
    job: CopyJob

    def output(self) -> str:
        return self.job.message().rstrip("\n")

    def fill(self, rec: RequestState, now: dt.datetime) -> None:
        snap = self.job.progress()
        rec.last_message = self.job.message()
        rec.progress = snap.percent
        rec.last_message_time = now
        rec.bytes_total, rec.bytes_done = snap.bytes_total, snap.bytes_done
        rec.files_total, rec.files_done = snap.files_total, snap.files_done
        rec.rate = snap.rate
        if self.job.verify:  # commandStatus keys beside bytesCopied (wire.status_document)
            rec.extra.update(verifiedBytes=snap.bytes_verified, verifyMismatches=snap.mismatches)


class _CommandWork(_Work):
    job: CommandJob

    def output(self) -> str:
        return self.job.output

    def fill(self, rec: RequestState, now: dt.datetime) -> None:
        rec.last_message = self.job.message()
        rec.progress = self.job.percent()
        if self.job.last_time is not None:
            rec.last_message_time = dt.datetime.fromtimestamp(self.job.last_time, dt.timezone.utc)


class _Request:
    """One request's whole state in this process; ``done`` is its one completion signal, set once
    its end is recorded (status long-polls and cancel both wait on it)."""

    def __init__(self, name: str, work: _Work, state: RequestState, profile: Profile, request: CopyRequest) -> None:
        self.name = name
        self.work = work
        self.state = state
        self.profile = profile
        self.store_stdout = request.storeStdout or profile.store_stdout
        self.log_stdout = request.logStdout or profile.log_stdout
        self.started = time.monotonic()
        self.done = asyncio.Event()
        self.server_stopped = False  # cancelled because the server is stopping, not by its user

    @property
    def running(self) -> bool:
        return self.state.state != RES_FINISHED

    async def wait(self, max_wait_secs: int) -> None:
        """Until the end is recorded, or ``max_wait_secs`` (< 0: however long it takes)."""
        timeout: Optional[float] = None if max_wait_secs < 0 else float(max_wait_secs)
        try:
            await asyncio.wait_for(self.done.wait(), timeout)  # a timeout cancels the inner wait
        except asyncio.TimeoutError:
            pass


class _Requests:
    """Every request this process knows, in one place: the running ones and the last ``keep``
    finished ones (older ones are read back from the store)."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._all: collections.OrderedDict[str, _Request] = collections.OrderedDict()
        self._finished = 0

    def add(self, req: _Request) -> None:
        self._all[req.name] = req

    def get(self, name: str) -> Optional[_Request]:
        return self._all.get(name)

    def running(self) -> List[_Request]:
        return [req for req in self._all.values() if req.running]

    def finished(self, req: _Request) -> None:
        """``req`` has just ended: count it, and forget the oldest finished beyond ``keep``."""
        self._all.move_to_end(req.name)  # finished ones in the order they ended, never ``req`` first
        self._finished += 1
        if self._finished <= self.keep:
            return
        for name in [name for name, old in self._all.items() if not old.running][: self._finished - self.keep]:
            del self._all[name]
            self._finished -= 1


class LocalDriver(Driver):
    """Copies with the built-in engine or a profile's command, on this machine."""

    name = "local"

    def __init__(
        self,
        *,
        allow_roots: List[str],
        state_dir: str,
        workers: Optional[int] = None,
        profiles_file: Optional[str] = None,
        node_name: Optional[str] = None,
        address: str = "",
    ) -> None:
        self.confinement = Confinement(allow_roots)
        self.profiles = Profiles(profiles_file)
        self.state_lock = StateLock(state_dir, address)  # before the store: a second server stops here
        try:
            self.store = Store(state_dir)
        except BaseException:
            self.state_lock.close()
            raise
        # One copier per CPU: on a quiet machine twice as many only contend (20,000 x 4 KiB on
        # tmpfs through the server: 2 workers 1.08x-1.09x faster than 4 on 2 CPUs, paired;
        # docs/performance.md). More copiers than cores only won while other work held the CPUs.
        self.workers = workers if workers and workers > 0 else (os.cpu_count() or 1)
        self.node_name = node_name or socket.gethostname().split(".")[0] or "localhost"
        self._requests = _Requests(RECENT)
        self._db = ThreadPoolExecutor(1, thread_name_prefix="copy-offload-db")
        self._budget = threading.BoundedSemaphore(max(2, 2 * (os.cpu_count() or 1)))
        warm_pool(self.workers)  # worker processes ready before the first copy (workers.py)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._ticker: Optional[asyncio.Task[None]] = None
        self._pending: set[asyncio.Future[None]] = set()  # final writes not yet done
        self._closed = False

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Mark requests a previous server left running as failed, and sweep their temporaries."""
        self._loop = asyncio.get_running_loop()
        recovered = await self._in_db(self.store.recover)
        if recovered:
            log.warning("marked %d request(s) failed: the server restarted while they ran", len(recovered))
            paths = [path for _name, temps in recovered for path in temps]
            await self._loop.run_in_executor(None, _sweep, paths, self.confinement.roots)
        self._ticker = asyncio.ensure_future(self._tick())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        running = self._requests.running()
        for req in running:
            req.server_stopped = not req.state.cancel  # a user's cancel under way stays a cancel
        await asyncio.gather(*[self.cancel(req.name) for req in running])
        if self._ticker is not None:
            self._ticker.cancel()
        if self._pending:
            await asyncio.wait(list(self._pending))
        await asyncio.get_running_loop().run_in_executor(None, self._db.shutdown, True)
        self.store.close()
        self.state_lock.close()

    def listening(self, address: str) -> None:
        """The address the server is bound to, for the lock file (a refused server names it)."""
        self.state_lock.record(address)

    # ------------------------------------------------------------------ Driver API

    async def submit(self, request: CopyRequest) -> str:
        profile = self.profiles.get(request.dmProfile)
        # One hop to a thread for the file system work and one to the db thread for the record
        # (its name and its row in one transaction, one disk flush): each hop costs ~0.3 ms.
        work, command = await self._loop_now().run_in_executor(None, self._plan, request, profile)
        state = RequestState(state=RES_RUNNING, command=command, start_time=_now())
        try:
            name = await self._in_db(self.store.create, self._name_for, state, work.temporaries())
        except Exception as exc:
            log.exception("cannot record a new request")
            raise Internal("unable to record the request: %s" % exc) from None
        req = _Request(name, work, state, profile, request)
        self._requests.add(req)
        thread = threading.Thread(target=self._run, args=(req,), name="copy-offload-" + name, daemon=True)
        thread.start()
        log.debug("request %s: %r", name, command)  # repr: client paths may hold control characters
        return name

    def _plan(self, request: CopyRequest, profile: Profile) -> Tuple[_Work, str]:
        """In a thread: confine the paths, make the job and let it refuse what cannot be done."""
        paths = self.confinement.request(request.sourcePath, request.destinationPath)
        workers = _worker_hint(request, self.workers)
        if profile.builtin:
            direct, preserve = _engine_options(request.dcpOptions)
            work: _Work = _EngineWork(CopyJob(
                paths.source, paths.destination, roots=self.confinement.roots, workers=workers,
                dryrun=request.dryrun, process_budget=self._budget, direct=direct, verify=profile.verify,
                preserve=preserve))
            command = " ".join([ENGINE_COMMAND] + (["--dryrun"] if request.dryrun else [])
                               + (["--direct"] if direct else []) + (["--preserve"] if preserve else [])
                               + (["--verify"] if profile.verify else []) + [paths.source, paths.destination])
        else:
            argv = profile.argv(paths.source, paths.destination)
            work = _CommandWork(CommandJob(argv, dryrun=request.dryrun))
            command = " ".join(argv)
        try:
            work.prepare()
        except CopyError as exc:
            raise (BadRequest if exc.client_error else Internal)(exc.message) from None
        return work, command

    def _name_for(self, number: int) -> str:
        return "%s--%s%d" % (self.node_name, NAME_BASE, number)

    async def status(self, name: str, max_wait_secs: int) -> RequestState:
        req = self._requests.get(name)
        if req is not None:
            if req.running and max_wait_secs != 0:
                await req.wait(max_wait_secs)
            return self._snapshot(req)
        rec = await self._in_db(self.store.load, name)
        if rec is None:
            raise RequestNotFound(wire.ERR_REQUEST_NOT_FOUND)
        return rec

    def active(self) -> List[str]:
        return sorted(req.name for req in self._requests.running())

    async def cancel(self, name: str) -> bool:
        req = self._requests.get(name)
        if req is None:
            return await self._in_db(self.store.load, name) is not None
        if not req.running:
            return True
        req.state.cancel = True
        req.work.cancel()
        try:
            await asyncio.wait_for(req.done.wait(), CANCEL_WAIT)
        except asyncio.TimeoutError:
            log.warning("request %s is still stopping %.1f s after its cancel", name, CANCEL_WAIT)
        return True

    # ------------------------------------------------------------------ running a request

    def _run(self, req: _Request) -> None:
        """The request's thread: run the job, clean up, then hand the outcome to the loop."""
        work = req.work
        status, message = RES_SUCCESS, ""
        try:
            work.run()
            if req.store_stdout:
                message = work.output()
        except CopyCancelled:
            status = RES_CANCELLED
            if req.server_stopped:  # not the user's cancel: say what happened
                status, message = RES_FAILED, STOPPED_MESSAGE
        except CopyError as exc:
            status, message = RES_FAILED, exc.message
        except Exception as exc:  # a bug must still end the request
            log.exception("request %s failed unexpectedly", req.name)
            status, message = RES_FAILED, "internal error in the copy engine: %r" % exc
        try:
            work.cleanup()
        except Exception:
            log.exception("request %s: cleanup failed", req.name)
        if req.log_stdout and status == RES_SUCCESS:
            log.info("request %s output: %r", req.name, work.output()[:4096])
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._finish, req, status, message)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def _finish(self, req: _Request, status: str, message: str) -> None:
        """On the loop: final state (no longer running), then the durable write and the signal."""
        final = self._snapshot(req)
        final.state, final.status, final.cancel = RES_FINISHED, status, False
        final.end_time = _now()
        if message:
            final.message = message
        req.state = final
        self._requests.finished(req)
        if status == RES_FAILED:
            log.info("request %s failed: %r", req.name, message[:1024])
        else:
            log.info("request %s finished: %s", req.name, status)
        task = asyncio.ensure_future(self._record_end(req))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _record_end(self, req: _Request) -> None:
        try:
            await self._in_db(self.store.save, req.name, req.state, ())
        except Exception:
            log.exception("cannot record the end of request %s", req.name)
        req.done.set()

    def _snapshot(self, req: _Request) -> RequestState:
        """The request's state now: the recorded one when finished, else live counters."""
        if not req.running:
            return req.state
        rec = dataclasses.replace(req.state, extra=dict(req.state.extra))
        rec.elapsed = time.monotonic() - req.started
        req.work.fill(rec, _now())
        return rec

    async def _tick(self) -> None:
        """About once a second, record the progress of running requests (one db call)."""
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            rows = [(req.name, self._snapshot(req), req.work.temporaries()) for req in self._requests.running()]
            if rows:
                try:
                    await self._in_db(_save_rows, self.store, rows)
                except Exception:
                    log.exception("cannot record progress")

    # ------------------------------------------------------------------ helpers

    def _loop_now(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def _in_db(self, func: Callable[..., T], *args: Any) -> T:
        return await self._loop_now().run_in_executor(self._db, func, *args)


def _save_rows(store: Store, rows: List[Any]) -> None:
    for name, rec, temps in rows:
        if rec.state != RES_FINISHED:
            store.save(name, rec, temps, durable=False)


def _engine_options(dcp_options: str) -> Tuple[bool, bool]:
    """The dcp options of ``dcpOptions`` the engine understands: ``--direct`` (``-s``: O_DIRECT
    writes) and ``--preserve`` (``-p``: times as well as modes). The others tune dcp itself and
    are ignored."""
    try:
        words = shlex.split(dcp_options)
    except ValueError as exc:
        raise BadRequest("unable to parse dcpOptions: %s" % exc) from None
    return ("--direct" in words or "-s" in words), ("--preserve" in words or "-p" in words)


def _worker_hint(request: CopyRequest, default: int) -> int:
    """Workers for a request: ``slots`` (capped by ``maxSlots``) when given, else the default."""
    hints = [value for value in (request.slots, request.maxSlots) if value > 0]
    return min(hints) if hints else default


def _sweep(paths: List[str], roots: Sequence[str]) -> None:
    """Remove temporaries a previous server left: only names that carry our mark, inside a root,
    reached beneath it without following a symlink."""
    for path in paths:
        root = root_of(path, roots)
        if TEMP_MARK not in os.path.basename(path) or root is None:
            continue
        try:
            tree = Tree.open(root)
        except OSError as exc:
            log.warning("cannot open the allowed root %r: %s", root, exc.strerror)
            continue
        try:
            tree.remove(relative(path, root))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove the temporary %r: %s", path, reason(exc))
        finally:
            tree.close()
