"""One running copy: the command, its output, and the NnfDataMovement status that mirrors it.

The command runs as ``/bin/bash -c <command>`` in a new session (process group), so a cancel
kills mpirun and everything it started, not just the shell. Output is read as it comes and
parsed line by line as nnf-dm does; the status is written at most once per
``progressIntervalSeconds`` and only when something changed, then once at the end.
Status writes go straight to ``/status`` with the last resourceVersion we saw; a 409 Conflict
(someone else wrote, e.g. nnf-dm's controller adding its finalizer) refetches and reapplies our
fields.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import copy
import datetime as dt
import logging
import time
from typing import Any, Awaitable, Callable, Dict, Optional, Union

from copy_offload.client import wire
from copy_offload.server.nnf.kube import Kube, KubeConflict, KubeError, KubeNotFound, Res
from copy_offload.server.nnf.prepare import exit_text
from copy_offload.server.nnf.process import Child, Processes
from copy_offload.server.nnf.progress import (
    OutputLog,
    explain_output,
    format_duration,
    micro_time,
    parse_progress,
    parse_stats,
)
from copy_offload.server.nnf.survivor import (
    Survivor,
    process_start_time,
    wrapped_argv,
    write_record,
)

log = logging.getLogger("copy_offload.server.nnf")

EOF_GRACE = 2.0  # seconds to wait for the output pipe to close once the command has exited
UNKNOWN_RESULT = (
    "the copy-offload server restarted while this request was in progress and its copy is no longer "
    "running; whether the copy completed is unknown"
)
Sleep = Callable[[float], Awaitable[Any]]


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class StatusWriter:
    """Writes our fields into one NnfDataMovement's status, surviving conflicts.

    A 404 on the write is believed only when a Get confirms it (a status endpoint that fails
    for a while is not a deleted resource).
    """

    def __init__(self, kube: Kube, res: Res, obj: Dict[str, Any], conflict_retries: int = 10) -> None:
        self.kube = kube
        self.res = res
        self.obj = obj
        self.namespace = obj["metadata"]["namespace"]
        self.name = obj["metadata"]["name"]
        self.conflict_retries = conflict_retries
        self.writes = 0

    async def write(self, mutate: Callable[[Dict[str, Any]], None]) -> bool:
        """Apply ``mutate(status)`` and store it; False if the resource is gone."""
        obj = copy.deepcopy(self.obj)
        for _ in range(self.conflict_retries + 1):
            if not isinstance(obj.get("status"), dict):
                obj["status"] = {}
            mutate(obj["status"])
            try:
                self.obj = await self.kube.replace_status(self.res, self.namespace, self.name, obj)
                self.writes += 1
                return True
            except (KubeConflict, KubeNotFound) as exc:  # stale, or a 404 that a Get must confirm before we believe it
                if isinstance(exc, KubeNotFound):
                    log.warning("%s/%s: a status write was answered 404 (%s); checking that the resource exists",
                                self.namespace, self.name, exc)
                try:
                    obj = await self.kube.get(self.res, self.namespace, self.name)
                except KubeNotFound:
                    return False
        raise KubeConflict("status of %s/%s: still conflicting after %d refetches" % (self.namespace, self.name, self.conflict_retries), 409)


class EndRecorder:
    """Writes a request's final status until it lands: backoff, never giving up while we live.

    NNF's PostRun waits for every NnfDataMovement of the Workflow to be ``Finished``; an end
    that is not recorded is a job that never finishes. ``sleep`` is injectable so tests can
    play a long outage without waiting through it.
    """

    def __init__(self, name: str, writer: StatusWriter, *, backoff: float = 0.5, backoff_max: float = 5.0,
                 sleep: Optional[Sleep] = None) -> None:
        self.name = name
        self.writer = writer
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.sleep = sleep or asyncio.sleep
        self.failures = 0

    async def record(self, final: Dict[str, Any], after_first_try: Optional[Callable[[], None]] = None) -> bool:
        """True once written; False if the resource is gone (nothing left to record it in).

        ``after_first_try`` runs once the first write has landed or failed (status waiters
        wake then: they see the recorded end, or the end from memory).
        """
        delay = self.backoff
        while True:
            try:
                written: Optional[bool] = await self.writer.write(lambda status: status.update(copy.deepcopy(final)))
            except KubeError as exc:
                written = None
                self.failures += 1
                log.warning("%s: the end of the copy (%s) is not recorded yet (%s); retrying in %.1fs (failure %d)",
                            self.name, final.get("status"), exc, delay, self.failures)
            if after_first_try is not None:
                after_first_try()
                after_first_try = None
            if written:
                if self.failures:
                    log.warning("%s: the end of the copy (%s) is recorded after %d failed writes",
                                self.name, final.get("status"), self.failures)
                return True
            if written is False:
                log.warning("%s: the end of the copy (%s) cannot be recorded: the NnfDataMovement is gone (404)",
                            self.name, final.get("status"))
                return False
            await self.sleep(delay)
            delay = min(delay * 2, self.backoff_max)


class CopyJob:
    """The execution of one request, from the start status to the final one."""

    def __init__(self, *, name: str, command: str, profile_data: Dict[str, Any], user_config: Dict[str, Any],
                 writer: StatusWriter, output_limit: int, processes: Processes, run_dir: str = "",
                 recorder: Optional[EndRecorder] = None) -> None:
        self.name = name
        self.processes = processes
        self.command = command
        self.full_command = "/bin/bash -c " + command
        self.profile_data = profile_data
        self.user_config = user_config
        self.writer = writer
        self.run_dir = run_dir
        self.recorder = recorder or EndRecorder(name, writer)
        interval = profile_data.get("progressIntervalSeconds")
        self.interval = float(interval) if isinstance(interval, (int, float)) and interval >= 1 else 0.0
        self.output = OutputLog(max_chars=output_limit)
        self.cmd_status: Dict[str, Any] = {"command": self.full_command}
        self.process: Optional[Union[Child, Survivor]] = None
        self.cancelled = False
        self.finished = asyncio.Event()
        self.final: Optional[Dict[str, Any]] = None
        """The final status once the command has ended (written or still being written)."""
        self.on_end: Optional[Callable[[], None]] = None
        self._dirty = False
        self._summary: Dict[str, Any] = {}  # dcp's end-of-copy statistics, wherever they were printed
        self._progress_start = time.monotonic()
        self.spawn_error: Optional[str] = None

    # ----------------------------------------------------------------- start

    async def write_start(self) -> None:
        """Record the start: startTime, Running, the command. Raises KubeError."""
        started = micro_time(now())
        command = self.full_command

        def mutate(status: Dict[str, Any]) -> None:
            status["startTime"] = started
            status["state"] = wire.RES_RUNNING
            status["commandStatus"] = {"command": command}

        if not await self.writer.write(mutate):
            raise KubeNotFound("the NnfDataMovement %s disappeared before it started" % self.name, 404)

    async def spawn(self) -> None:
        """Start the command (unless cancelled already); a failure is recorded, not raised.

        With a run dir, the command runs in the wrapper that leaves its output and exit code
        there, and ``record.json`` names the process for a restarted server.
        """
        if self.cancelled:
            return
        argv = wrapped_argv(self.command, self.run_dir) if self.run_dir else ["/bin/bash", "-c", self.command]
        try:
            self.process = await self.processes.start(argv)
        except OSError as exc:
            self.spawn_error = "fork/exec /bin/bash: %s" % (exc.strerror or exc)
        self._progress_start = time.monotonic()
        if self.cancelled and self.process is not None:  # cancelled while starting
            self.process.kill_group()
        if self.run_dir and self.process is not None:
            record = {"name": self.name, "pid": self.process.pid, "start_time": process_start_time(self.process.pid),
                      "command": self.command, "profile": {k: self.profile_data.get(k) for k in RECORDED_PROFILE_KEYS},
                      "user_config": self.user_config}
            try:
                await asyncio.get_running_loop().run_in_executor(None, write_record, self.run_dir, record)
            except OSError as exc:
                log.warning("%s: cannot keep the restart record in %s: %s", self.name, self.run_dir, exc)

    def adopt(self, survivor: Survivor, started: Optional[dt.datetime]) -> None:
        """Watch a copy started by an earlier server process (or judge what it left) instead of starting one."""
        self.process = survivor
        elapsed = (now() - started).total_seconds() if started else 0.0
        self._progress_start = time.monotonic() - max(0.0, elapsed)

    # ----------------------------------------------------------------- run

    async def run(self) -> Dict[str, Any]:
        """Drive the command to its end and record the final status; returns that status."""
        if self.process is not None:
            await self._supervise(self.process)
        self.final = self._final_status()
        await self.recorder.record(self.final, self.on_end)
        return self.final

    async def _supervise(self, proc: Union[Child, Survivor]) -> None:
        reader = asyncio.ensure_future(self._read(proc))
        waiter = asyncio.ensure_future(proc.wait())
        try:
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=self.interval or None)
                if waiter in done:
                    break
                if self._dirty:
                    self._dirty = False
                    snapshot = copy.deepcopy(self.cmd_status)
                    try:
                        await self.writer.write(lambda status, s=snapshot: status.__setitem__("commandStatus", copy.deepcopy(s)))
                    except KubeError as exc:
                        log.warning("%s: progress not recorded: %s", self.name, exc)
            try:
                await asyncio.wait_for(asyncio.shield(reader), EOF_GRACE)
            except asyncio.TimeoutError:  # something the command started still holds the pipe
                proc.kill_group()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), EOF_GRACE)
        finally:
            for task in (reader, waiter):
                if not task.done():
                    task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            proc.close()

    async def _read(self, proc: Union[Child, Survivor]) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            chunk = await proc.stdout.read(65536)
            if not chunk:
                break
            for line in self.output.feed(decoder.decode(chunk)):
                self._parse(line)
        tail = decoder.decode(b"", final=True)
        if tail:
            for line in self.output.feed(tail):
                self._parse(line)
        for line in self.output.flush():
            self._parse(line)

    def _parse(self, line: str) -> None:
        if not self.interval:
            return  # the reference collects nothing when progress is disabled
        cs = self.cmd_status
        parse_stats(line, self._summary)
        progress = parse_progress(line)
        if progress is not None:
            cs["progress"] = progress
        if cs.get("progress", 0) >= 100:
            parse_stats(line, cs)
        cs["lastMessage"] = line
        cs["lastMessageTime"] = micro_time(now())
        cs["elapsedTime"] = format_duration(time.monotonic() - self._progress_start)
        self._dirty = True

    def _final_status(self) -> Dict[str, Any]:
        output = self.output.text(final=True)
        status: Dict[str, Any] = {"endTime": micro_time(now()), "state": wire.RES_FINISHED, "commandStatus": copy.deepcopy(self.cmd_status)}
        returncode = None if self.process is None else self.process.returncode
        if self.cancelled and (returncode != 0 or self.process is None):
            status["status"] = wire.RES_CANCELLED
            log.info("%s: cancelled; output: %s", self.name, output)
        elif isinstance(self.process, Survivor) and returncode is None:
            status["status"] = wire.RES_FAILED
            status["message"] = UNKNOWN_RESULT
            status["error"] = {"userMessage": UNKNOWN_RESULT, "debugMessage": UNKNOWN_RESULT, "type": "Internal", "severity": "Fatal"}
            log.warning("%s: %s", self.name, UNKNOWN_RESULT)
        elif self.spawn_error is not None or returncode != 0:
            reason = self.spawn_error or exit_text(returncode)
            explained = explain_output(output)
            status["status"] = wire.RES_FAILED
            status["message"] = "%s: %s" % (reason, explained)
            status["error"] = {"userMessage": "data movement operation failed: %s" % explained, "debugMessage": reason,
                               "type": "Internal", "severity": "Fatal"}
            log.error("%s: data movement failed (%s); output: %s", self.name, reason, output)
        else:
            status["status"] = wire.RES_SUCCESS
            if self.interval:  # progress is collected: a short copy's dcp prints no (NN%) line at all
                status["commandStatus"]["progress"] = 100
                for key, value in self._summary.items():  # nor, then, statistics after one
                    status["commandStatus"].setdefault(key, value)
            if self.profile_data.get("logStdout") or self.user_config.get("logStdout"):
                log.info("%s: output: %s", self.name, output)
            if self.profile_data.get("storeStdout") or self.user_config.get("storeStdout"):
                status["message"] = output
        return status

    # ----------------------------------------------------------------- cancel

    def cancel(self) -> None:
        """Kill the command's whole process group; ``run`` then records Cancelled."""
        self.cancelled = True
        if self.process is not None and self.process.returncode is None:
            self.process.kill_group()


RECORDED_PROFILE_KEYS = ("progressIntervalSeconds", "logStdout", "storeStdout")
