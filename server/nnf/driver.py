"""The ``nnf`` driver: copy-offload requests as NnfDataMovement resources on a Rabbit node.

The reference's real mode (nnf-dm ``daemons/copy-offload/pkg/driver``) on asyncio:
``submit`` plans the request from the Workflow, ClientMounts, SystemConfiguration,
LustreFileSystems and profiles, writes the hostfile, prepares the destination, creates the
NnfDataMovement, records its start and starts the command, and answers only then. ``status``
reads the resource. The request name is ``<namespace>--<name>``.

Where we differ from the reference, on purpose (docs/nnf-driver.md):
  * a name without ``--`` is a 404, not a crash;
  * the resource name is chosen here (``generateName`` plus the same five random characters the
    API server would pick), so a create that timed out can be retried without making a second
    NnfDataMovement (and a second copy);
  * a request that fails after its resource exists leaves it ``Finished``/``Failed``, never a
    resource nobody runs; on start, resources of this Workflow left unfinished by a previous
    server process are marked ``Finished``/``Failed`` (``restart`` message), so NNF's PostRun
    never waits for them;
  * ``status`` never waits for a request this process is not running (it would never finish);
  * transient API errors are retried with backoff, status writes survive 409 Conflicts, and no
    Kubernetes call or command runs on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import dataclasses
import functools
import logging
import os
import re
import shutil
from typing import Any, Dict, List, Optional, Tuple

from copy_offload.client import wire
from copy_offload.client.wire import CopyRequest, RequestState, WireError
from copy_offload.server.drivers.base import Completions, Driver
from copy_offload.server.drivers.errors import BadRequest, DriverError, Internal, RequestNotFound
from copy_offload.server.nnf.cache import CachedReads, KindWatch
from copy_offload.server.nnf.command import (
    build_dm_command,
    hostfile_slots,
    hostfile_text,
    write_hostfile,
)
from copy_offload.server.nnf.config import (
    DWS_VERSIONS,
    LUSTRE_VERSIONS,
    NNF_VERSIONS,
    NnfSettings,
    NnfStartupError,
    load_kube_configuration,
    missing_environment,
)
from copy_offload.server.nnf.job import CopyJob, EndRecorder, StatusWriter, now
from copy_offload.server.nnf.kube import (
    Kube,
    KubeAlreadyExists,
    KubeError,
    KubeNotFound,
    KubeUnavailable,
)
from copy_offload.server.nnf.lookup import (
    DM_NAMESPACE,
    INITIATOR,
    NAME_BASE,
    PROFILE_NAMESPACE,
    WF_NAME,
    WF_NAMESPACE,
    Kinds,
    Planner,
    profile_data,
    random_name,
)
from copy_offload.server.nnf.prepare import DestinationPreparer
from copy_offload.server.nnf.process import Processes
from copy_offload.server.nnf.progress import micro_time, parse_duration, parse_time
from copy_offload.server.nnf.survivor import Survivor, alive, read_record, run_dirs

__all__ = ["NnfDriver", "NnfStartupError", "create_nnf_driver", "missing_environment"]

log = logging.getLogger("copy_offload.server.nnf")

RESTART_MESSAGE = (
    "the copy-offload server restarted while this request was in progress and left no record of its "
    "copy; whether the copy completed is unknown"
)
CREATE_NAME_TRIES = 5
WATCHED_KINDS = 7  # the planning caches (``NnfDriver._watches``), one long-lived connection each


class NnfDriver(Driver):
    """Copy-offload requests as NnfDataMovements; one instance per server process."""

    name = "nnf"

    def __init__(self, kube: Kube, kinds: Kinds, *, workflow_name: str, workflow_namespace: str, node_name: str,
                 settings: Optional[NnfSettings] = None) -> None:
        self.kube = kube
        self.kinds = kinds
        self.workflow_name = workflow_name
        self.workflow_namespace = workflow_namespace
        self.node_name = node_name
        self.settings = settings or NnfSettings()
        self.reads = CachedReads(kube, self._watches(kinds, workflow_name, workflow_namespace) if self.settings.watch_caches else [])
        planning = dict(kinds=kinds, workflow_name=workflow_name, workflow_namespace=workflow_namespace, node_name=node_name,
                        mpi_hostfile=self.settings.mpi_hostfile)
        self.planner = Planner(kube, reads=self.reads, **planning)
        self.direct_planner = Planner(kube, **planning)  # when a cached answer led to a refusal: ask again
        self._running: Dict[str, _Running] = {}  # each running request's one record: its job and its task
        self._completions = Completions()
        self._completed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.recovered: List[str] = []
        self.processes = Processes(spawn_threads=4, run_threads=16)

    def _watches(self, kinds: Kinds, workflow_name: str, workflow_namespace: str) -> List[KindWatch]:
        """One watch per kind read to plan a request, scoped as narrowly as its objects allow."""
        wf_labels = {WF_NAME: workflow_name, WF_NAMESPACE: workflow_namespace}
        workers = {"training.kubeflow.org/job-name": workflow_name, "training.kubeflow.org/job-role": "worker"}
        timeout = self.settings.kube.request_timeout
        return [
            KindWatch(self.kube, kinds.clientmounts, None, wf_labels, timeout),
            KindWatch(self.kube, kinds.systemconfigurations, "default", None, timeout),
            KindWatch(self.kube, kinds.lustrefilesystems, None, None, timeout),
            KindWatch(self.kube, kinds.nnfdatamovementprofiles, PROFILE_NAMESPACE, None, timeout),
            KindWatch(self.kube, kinds.pods, workflow_namespace, workers, timeout),
            KindWatch(self.kube, kinds.nnfnodestorages, None, wf_labels, timeout),
            KindWatch(self.kube, kinds.nnfstorages, None, wf_labels, timeout),
        ]

    # ----------------------------------------------------------------- lifecycle

    async def recover(self) -> None:
        """Settle this Workflow's requests left unfinished by an earlier server process.

        ``create_nnf_driver`` runs it once, before the driver is handed out (the server's
        ``Driver.start`` has nothing left to do for this driver).

        A copy that is still running is adopted (watched to its end, its real result
        recorded); one that ended while no server ran gets the result it left behind; for
        the rest the status says that the result is unknown. Run dirs left behind go.
        """
        selector = "%s=%s,%s=%s,%s" % (WF_NAME, self.workflow_name, WF_NAMESPACE, self.workflow_namespace, INITIATOR)
        loop = asyncio.get_running_loop()
        records = await loop.run_in_executor(None, _run_records, self.settings.hostfile_dir)
        try:
            leftovers = await self.kube.list(self.kinds.nnfdatamovements, None, selector)
        except KubeError as exc:
            log.error("restart recovery skipped: cannot list NnfDataMovements: %s", exc)
            return
        adopted = set()
        for dm in leftovers:
            meta, status = dm.get("metadata") or {}, dm.get("status") or {}
            if not str(meta.get("name", "")).startswith(NAME_BASE) or status.get("state") == wire.RES_FINISHED:
                continue
            if (meta.get("labels") or {}).get(INITIATOR) in ("copy_in", "copy_out"):
                continue
            name = "%s--%s" % (meta.get("namespace"), meta.get("name"))
            found = records.get(name)
            if found is not None and status.get("startTime"):
                run_dir, record = found
                self._adopt(name, dm, run_dir, record)
                adopted.add(run_dir)
                continue
            await self._mark_unknown(name, dm)
        for run_dir, record in records.values():
            pid = record.get("pid")
            if run_dir in adopted or (isinstance(pid, int) and alive(pid, record.get("start_time"))):
                continue  # a copy still running (another server's, or one whose resource went) keeps its files
            await loop.run_in_executor(None, shutil.rmtree, run_dir, True)

    def _adopt(self, name: str, dm: Dict[str, Any], run_dir: str, record: Dict[str, Any]) -> None:
        """Take over a request of an earlier server process: watch it, or judge what it left."""
        writer = StatusWriter(self.kube, self.kinds.nnfdatamovements, dm, self.settings.status_conflict_retries)
        profile = dict(record.get("profile") or {})
        job = self._new_job(name, str(record.get("command") or ""), profile, dict(record.get("user_config") or {}), writer, run_dir)
        job.full_command = str(((dm.get("status") or {}).get("commandStatus") or {}).get("command") or job.full_command)
        pid, start_time = record.get("pid"), record.get("start_time")
        running = isinstance(pid, int) and alive(pid, start_time)
        survivor = Survivor(pid if isinstance(pid, int) else 0, start_time, run_dir, running)
        job.adopt(survivor, parse_time((dm.get("status") or {}).get("startTime")))
        self.recovered.append(name)
        log.warning("%s: left by a previous server process; %s", name,
                    "its copy still runs (pid %s): watching it to its end" % pid if running else "recording how its copy ended")
        self._launch(self._register(name, job), os.path.join(run_dir, "hostfile"))

    async def _mark_unknown(self, name: str, dm: Dict[str, Any]) -> None:
        stamp = micro_time(now())

        def mutate(st: Dict[str, Any]) -> None:
            st.setdefault("startTime", stamp)
            st["endTime"] = stamp
            st["state"] = wire.RES_FINISHED
            st["status"] = wire.RES_FAILED
            st["message"] = RESTART_MESSAGE
            st["error"] = {"userMessage": RESTART_MESSAGE, "debugMessage": RESTART_MESSAGE, "type": "Internal", "severity": "Fatal"}

        writer = StatusWriter(self.kube, self.kinds.nnfdatamovements, dm, self.settings.status_conflict_retries)
        try:
            if await writer.write(mutate):
                self.recovered.append(name)
                log.warning("%s: left unfinished by a previous server process, which left no record of its copy; "
                            "marked Finished/Failed (result unknown)", name)
        except KubeError as exc:
            log.error("%s: cannot mark it failed after a restart: %s", name, exc)

    async def close(self) -> None:
        """Stop what still runs (the server refuses shutdown while requests are active), then let go."""
        for running in list(self._running.values()):
            running.job.cancel()
        tasks = [running.task for running in self._running.values() if running.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.cancel_wait)
        self.processes.close()
        self.reads.stop()
        await self.kube.close()

    # ----------------------------------------------------------------- submit

    async def submit(self, request: CopyRequest) -> str:
        try:
            request.validate()
        except WireError as exc:
            raise BadRequest(exc.message) from None
        try:
            hits = self.reads.hits
            try:
                dm, profile, hosts = await self._plan(self.planner, request)
            except DriverError:
                if self.reads.hits == hits:
                    raise
                dm, profile, hosts = await self._plan(self.direct_planner, request)  # a refusal comes from the API server
        except KubeError as exc:
            raise Internal(str(exc)) from None
        data = profile_data(profile)
        slots, max_slots = hostfile_slots(data, dm)
        loop = asyncio.get_running_loop()
        try:
            hostfile = await loop.run_in_executor(None, write_hostfile, hostfile_text(hosts, slots, max_slots), self.settings.hostfile_dir)
        except OSError as exc:
            raise Internal("failed to create directory for MPI hostfile: %s" % exc) from None
        keep_hostfile = False
        try:
            await DestinationPreparer(self.reads, self.kinds, self.processes, data, dm, hostfile, use_setpriv=bool(self.settings.use_setpriv),
                                      environment=self.settings.environment, timeout=self.settings.command_timeout,
                                      mode=self.settings.prepare_mode, local_ok=self._sees_like_the_hosts(dm)).run()
            command = build_dm_command(data, hostfile, dm)
            created = await self._create(dm)
            name = "%s--%s" % (created["metadata"]["namespace"], created["metadata"]["name"])
            writer = StatusWriter(self.kube, self.kinds.nnfdatamovements, created, self.settings.status_conflict_retries)
            job = self._new_job(name, command, data, dm["spec"].get("userConfig") or {}, writer, os.path.dirname(hostfile))
            try:
                await job.write_start()
            except KubeError as exc:
                await self._abandon(writer, "unable to record the start of the request: %s" % exc)
                raise Internal(str(exc)) from None
            running = self._register(name, job)
            await job.spawn()
            self._launch(running, hostfile)
            keep_hostfile = True
        except KubeError as exc:
            raise Internal(str(exc)) from None
        finally:
            if not keep_hostfile:
                await loop.run_in_executor(None, _remove_hostfile_dir, hostfile)
        log.info("%s: started %s", name, job.full_command)
        return name

    async def _plan(self, planner: Planner, request: CopyRequest) -> Tuple[Dict[str, Any], Dict[str, Any], List[str]]:
        dm, profile = await planner.build(request)
        nodes = await planner.storage_nodes(dm)
        return dm, profile, await planner.worker_hosts(nodes, dm)

    def _sees_like_the_hosts(self, dm: Dict[str, Any]) -> bool:
        """Whether this server sees the request's paths as its mpirun hosts do: a node-local copy
        on this Rabbit, or one on a Lustre file system (mounted alike on every Rabbit)."""
        namespace = dm["metadata"]["namespace"]
        return namespace == self.node_name or namespace == DM_NAMESPACE

    def _new_job(self, name: str, command: str, data: Dict[str, Any], user_config: Dict[str, Any], writer: StatusWriter,
                 run_dir: str) -> CopyJob:
        s = self.settings
        recorder = EndRecorder(name, writer, backoff=s.end_write_backoff, backoff_max=s.end_write_backoff_max, sleep=s.retry_sleep)
        job = CopyJob(name=name, command=command, profile_data=data, user_config=user_config, writer=writer,
                      output_limit=s.output_limit, processes=self.processes, run_dir=run_dir, recorder=recorder)
        job.on_end = functools.partial(self._completions.done, name)
        return job

    async def _create(self, dm: Dict[str, Any]) -> Dict[str, Any]:
        """Create ``dm`` under a name chosen here, so that retrying a create is safe."""
        res = self.kinds.nnfdatamovements
        namespace = dm["metadata"]["namespace"]
        for _ in range(CREATE_NAME_TRIES):
            body = copy.deepcopy(dm)
            body["metadata"]["name"] = random_name(dm["metadata"]["generateName"])
            try:
                return await self.kube.create(res, namespace, body)
            except KubeAlreadyExists:
                try:  # ours, from an attempt whose answer was lost?
                    existing = await self.kube.get(res, namespace, body["metadata"]["name"])
                except KubeNotFound:
                    continue
                if existing.get("spec") == body["spec"] and (existing.get("metadata") or {}).get("labels") == body["metadata"]["labels"]:
                    return existing
        raise KubeError("unable to pick an unused NnfDataMovement name in %s" % namespace)

    async def _abandon(self, writer: StatusWriter, reason: str) -> None:
        """A created resource we will not run: leave it Finished/Failed, not waiting forever."""
        stamp = micro_time(now())

        def mutate(st: Dict[str, Any]) -> None:
            st.setdefault("startTime", stamp)
            st.update({"endTime": stamp, "state": wire.RES_FINISHED, "status": wire.RES_FAILED, "message": reason})

        try:
            await writer.write(mutate)
        except KubeError as exc:
            log.error("%s/%s: %s; and it cannot be marked failed: %s", writer.namespace, writer.name, reason, exc)

    def _register(self, name: str, job: CopyJob) -> _Running:
        running = self._running[name] = _Running(job)
        return running

    def _launch(self, running: _Running, hostfile: str) -> None:
        running.task = asyncio.ensure_future(self._drive(running.job, hostfile))

    def _job(self, name: str) -> Optional[CopyJob]:
        running = self._running.get(name)
        return None if running is None else running.job

    async def _drive(self, job: CopyJob, hostfile: str) -> None:
        try:
            await job.run()
        except Exception:  # never leave a request listed forever
            log.exception("%s: unexpected failure while running the copy", job.name)
        finally:
            self._completions.done(job.name)
            self._remember_completed(job.name)
            self._running.pop(job.name, None)
            job.finished.set()
            await asyncio.get_running_loop().run_in_executor(None, _remove_hostfile_dir, hostfile)

    def _remember_completed(self, name: str) -> None:
        self._completed[name] = None
        while len(self._completed) > self.settings.completed_memory:
            old, _ = self._completed.popitem(last=False)
            self._completions.forget(old)

    # ----------------------------------------------------------------- status, list, cancel

    async def status(self, name: str, max_wait_secs: int) -> RequestState:
        try:
            namespace, dm_name = wire.split_request_name(name)
        except WireError as exc:
            raise RequestNotFound(exc.message) from None
        remembered = self._ended_in_memory(name)
        if remembered is not None:
            return remembered
        dm = await self._get_for_status(namespace, dm_name, name, wire.ERR_REQUEST_NOT_FOUND)
        labels = (dm.get("metadata") or {}).get("labels") or {}
        if labels.get(WF_NAME) != self.workflow_name or labels.get(WF_NAMESPACE) != self.workflow_namespace:
            raise BadRequest(wire.ERR_NOT_IN_WORKFLOW)
        ended = bool((dm.get("status") or {}).get("endTime"))
        if not ended and max_wait_secs != 0 and (name in self._running or self._completions.is_done(name)):
            await self._completions.wait(name, max_wait_secs)
            remembered = self._ended_in_memory(name)
            if remembered is not None:
                return remembered
            dm = await self._get_for_status(namespace, dm_name, name, wire.ERR_NOT_FOUND_AFTER_WAIT)
        state = request_state(dm)
        shown_done = state.finished and (state.start_time is not None or state.status == wire.RES_INVALID)  # not "pending"
        if shown_done and (dm.get("status") or {}).get("endTime") and name not in self._running:
            self._completions.forget(name)
            self._completed.pop(name, None)
        return state

    def _ended_in_memory(self, name: str) -> Optional[RequestState]:
        """The status of a request whose copy has ended but whose end is not recorded yet.

        The resource still says ``Running`` (the API server may be down); what we know is truer.
        """
        job = self._job(name)
        if job is None or job.final is None:
            return None
        dm = copy.deepcopy(job.writer.obj)
        dm.setdefault("status", {})
        dm["status"].update(copy.deepcopy(job.final))
        return request_state(dm)

    async def _get_for_status(self, namespace: str, dm_name: str, name: str, not_found: str) -> Dict[str, Any]:
        try:
            return await self.kube.get(self.kinds.nnfdatamovements, namespace, dm_name)
        except KubeNotFound:
            self._completions.forget(name)
            self._completed.pop(name, None)
            raise RequestNotFound(not_found) from None
        except KubeUnavailable as exc:
            job = self._job(name)
            if job is None:
                raise Internal(str(exc)) from None
            log.warning("%s: status answered from memory: the API server is unavailable (%s)", name, exc)
            dm = copy.deepcopy(job.writer.obj)  # what we last wrote, with the progress we have seen since
            dm.setdefault("status", {})["commandStatus"] = copy.deepcopy(job.cmd_status)
            return dm
        except KubeError as exc:
            raise Internal(str(exc)) from None

    def active(self) -> List[str]:
        return sorted(self._running)

    async def cancel(self, name: str) -> bool:
        job = self._job(name)
        if job is None:
            return name in self._completed
        log.info("%s: cancelling", name)
        job.cancel()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(job.finished.wait(), self.settings.cancel_wait)
        return True


@dataclasses.dataclass
class _Running:
    """A running request: its job (state, process, writer) and the task that drives it to its end."""

    job: CopyJob
    task: Optional[asyncio.Task[None]] = None


def request_state(dm: Dict[str, Any]) -> RequestState:
    """The NnfDataMovement's status in the wire module's vocabulary."""
    st = dm.get("status") or {}
    cs = st.get("commandStatus") or {}
    progress = cs.get("progress")
    state = RequestState(
        state=str(st.get("state") or ""),
        status=str(st.get("status") or ""),
        message=str(st.get("message") or ""),
        command=str(cs.get("command") or ""),
        progress=int(progress) if isinstance(progress, int) and not isinstance(progress, bool) else None,
        elapsed=parse_duration(cs.get("elapsedTime")),
        last_message=str(cs.get("lastMessage") or ""),
        last_message_time=parse_time(cs.get("lastMessageTime")),
        start_time=parse_time(st.get("startTime")),
        end_time=parse_time(st.get("endTime")),
        cancel=bool((dm.get("spec") or {}).get("cancel")),
    )
    if isinstance(cs.get("files"), int):
        state.files_total = state.files_done = cs["files"]
    data_bytes = _bytes_in(cs.get("data"))
    if data_bytes is not None:
        state.bytes_total = state.bytes_done = data_bytes
    rate = _rate(cs.get("rate"))
    if rate is not None:
        state.rate = rate
    return state


def _bytes_in(text: Any) -> Optional[int]:
    """``18.626 GiB (20000000000 bytes)`` -> 20000000000."""
    match = re.search(r"\((\d+) bytes", text) if isinstance(text, str) else None
    return int(match.group(1)) if match else None


def _rate(text: Any) -> Optional[float]:
    """``111.243 MiB/s (20000000000 bytes in 171.458 seconds)`` -> bytes per second."""
    match = re.search(r"\((\d+) bytes in ([0-9.]+) seconds\)", text) if isinstance(text, str) else None
    if not match or float(match.group(2)) <= 0:
        return None
    return int(match.group(1)) / float(match.group(2))


def _remove_hostfile_dir(hostfile: str) -> None:
    shutil.rmtree(os.path.dirname(hostfile), ignore_errors=True)


def _run_records(parent: str) -> Dict[str, Any]:
    """Request name -> (run dir, record) for the run dirs an earlier server process left in ``parent``.

    A run dir without a record (a submit that never started its command) maps to itself, so it
    is removed too.
    """
    found: Dict[str, Any] = {}
    for run_dir in run_dirs(parent):
        if not os.path.exists(os.path.join(run_dir, "hostfile")):
            continue  # not one of ours
        record = read_record(run_dir)
        key = str(record.get("name")) if record and record.get("name") else run_dir
        found[key] = (run_dir, record or {})
    return found


# --------------------------------------------------------------------------- factory


async def _pick_version(kube: Kube, group: str, wanted: Optional[str], candidates: tuple[str, ...], what: str) -> str:
    if wanted:
        return wanted
    for version in candidates:
        if await kube.served(group, version):
            return version
    raise NnfStartupError("the Kubernetes API server serves none of the %s API versions %s (group %s); "
                          "is this an NNF system?" % (what, ", ".join(candidates), group))


async def create_nnf_driver(*, workflow_name: str, workflow_namespace: str, node_name: str, kubeconfig: Optional[str] = None,
                            nnf_api_version: Optional[str] = None, dws_api_version: Optional[str] = None,
                            **extra: Any) -> NnfDriver:
    """Connect to Kubernetes, probe the API versions, check our NnfNode, recover, and return the driver.

    ``extra`` may hold ``lustre_api_version``, ``kube_configuration`` (a ready
    ``kubernetes.client.Configuration``), ``settings`` (``NnfSettings``) or any ``NnfSettings``
    field by name; unknown keys are ignored. Raises ``NnfStartupError`` with a message to print.
    """
    if not (workflow_name and workflow_namespace and node_name):
        raise NnfStartupError("the nnf driver needs the Workflow name and namespace and the node name "
                              "(DW_WORKFLOW_NAME, DW_WORKFLOW_NAMESPACE, NNF_NODE_NAME)")
    from kubernetes import client

    settings = NnfSettings.from_extra(extra)
    cfg = extra.get("kube_configuration")
    if cfg is None:
        cfg = await asyncio.get_running_loop().run_in_executor(None, load_kube_configuration, kubeconfig)
    cfg.retries = 0  # one retry policy: ours
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, settings.kube.threads + WATCHED_KINDS)  # watches hold one each
    kube = Kube(client.ApiClient(cfg), settings.kube)
    driver: Optional[NnfDriver] = None
    try:
        try:
            nnf = await _pick_version(kube, "nnf.cray.hpe.com", nnf_api_version, NNF_VERSIONS, "NNF")
            dws = await _pick_version(kube, "dataworkflowservices.github.io", dws_api_version, DWS_VERSIONS, "DWS")
            lus = await _pick_version(kube, "lus.cray.hpe.com", extra.get("lustre_api_version"), LUSTRE_VERSIONS, "Lustre")
        except KubeError as exc:
            raise NnfStartupError("cannot reach the Kubernetes API server at %s: %s" % (cfg.host, exc)) from None
        kinds = Kinds.at(nnf, dws, lus)
        try:
            await kube.get(kinds.nnfnodes, node_name, "nnf-nlc")
        except KubeError as exc:
            raise NnfStartupError("Failed to retrieve my own NnfNode %s/nnf-nlc: %s" % (node_name, exc)) from None
        driver = NnfDriver(kube, kinds, workflow_name=workflow_name, workflow_namespace=workflow_namespace,
                           node_name=node_name, settings=settings)
        await driver.recover()
        loop = asyncio.get_running_loop()
        driver.reads.start()
        if not await loop.run_in_executor(None, driver.reads.wait_synced, settings.cache_sync_wait):
            log.warning("the watch caches are not in sync yet; planning reads go to the API server until they are")
        await loop.run_in_executor(None, kube.warm)
        await loop.run_in_executor(None, driver.processes.warm)
    except BaseException:
        if driver is not None:
            driver.reads.stop()
        await kube.close()
        raise
    log.info("nnf driver: workflow %s/%s, node %s, NNF %s, DWS %s, Lustre %s, Kubernetes %s", workflow_namespace,
             workflow_name, node_name, nnf, dws, lus, getattr(cfg, "copy_offload_source", cfg.host))
    return driver
