"""The reference's mock mode (``-mock``), for wire-compatibility tests with no Kubernetes.

As nnf-dm's mock: rabbit ``mock-rabbit-01``, names ``nnf-copy-offload-node-<n>`` counted from
0, profile command ``sleep 300`` (``true`` for a dry run) really run through ``/bin/bash -c``,
status that never waits, a fixed ``startTime`` the tests know, and 404 once a request is done.

One deliberate difference: the end of a command is noticed on the next 1 s progress tick
(the profile's progress interval), so a dry run stays listed for about a second. Over a real
network the reference's instant completion makes its own conformance checks racy.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
from typing import Any, Dict, List, Set

from copy_offload.client import wire
from copy_offload.client.wire import CopyRequest, RequestState
from copy_offload.server.drivers.base import Driver
from copy_offload.server.drivers.errors import Internal, RequestNotFound

log = logging.getLogger("copy_offload.server.mock")

RABBIT = "mock-rabbit-01"
NAME_BASE = "nnf-copy-offload-node-"
COMMAND = "sleep 300"
DRYRUN_COMMAND = "true"
START_TIME_TEXT = "2025-04-01 11:46:36.535519 -0500 CDT"
PROGRESS_INTERVAL = 1.0


class _MockRequest:
    def __init__(self, name: str, command: str) -> None:
        self.name = name
        self.state = RequestState(state=wire.RES_RUNNING, command="/bin/bash -c " + command,
                                  start_time=dt.datetime.now(dt.timezone.utc), start_time_text=START_TIME_TEXT)
        self.process: asyncio.subprocess.Process | None = None
        self.cancelled = False
        self.done = asyncio.Event()


class MockDriver(Driver):
    name = "mock"

    def __init__(self) -> None:
        self._count = 0
        self._active: Dict[str, _MockRequest] = {}
        self._completed: Set[str] = set()
        self._tasks: Set[asyncio.Task[Any]] = set()

    async def submit(self, request: CopyRequest) -> str:
        name = "%s--%s%d" % (RABBIT, NAME_BASE, self._count)
        self._count += 1
        command = DRYRUN_COMMAND if request.dryrun else COMMAND
        record = _MockRequest(name, command)
        try:
            record.process = await asyncio.create_subprocess_exec(
                "/bin/bash", "-c", command,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
            )
        except OSError as exc:
            raise Internal("unable to start the mock command: %s" % exc.strerror) from None
        self._active[name] = record
        task = asyncio.ensure_future(self._drive(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return name

    async def _drive(self, record: _MockRequest) -> None:
        assert record.process is not None
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(record.process.wait()), PROGRESS_INTERVAL)
                break
            except asyncio.TimeoutError:
                continue
        await asyncio.sleep(PROGRESS_INTERVAL)  # the final progress tick
        self._active.pop(record.name, None)
        self._completed.add(record.name)
        record.done.set()
        log.info("mock request %s finished (%s)", record.name, "cancelled" if record.cancelled else "done")

    async def status(self, name: str, max_wait_secs: int) -> RequestState:
        record = self._active.get(name)
        if record is None:
            raise RequestNotFound(wire.ERR_REQUEST_NOT_FOUND)
        return record.state

    def active(self) -> List[str]:
        return sorted(self._active)

    async def cancel(self, name: str) -> bool:
        record = self._active.get(name)
        if record is None:
            return name in self._completed
        record.cancelled = True
        if record.process is not None and record.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.process.pid, signal.SIGKILL)
            await record.process.wait()
        # Reported as gone at once: the reference's e2e expects an empty list right after cancel.
        self._active.pop(name, None)
        self._completed.add(name)
        return True

    async def close(self) -> None:
        for name in list(self._active):
            await self.cancel(name)
        for task in list(self._tasks):
            task.cancel()
