"""Shared pieces of the nnf driver tests: the seeded double, real directories, fake mpirun/dcp.

``NnfWorld`` is one scenario (``tests/kube_seed/nnf-scenario.yaml``) in a ``KubeDouble``, with the Rabbit-side
paths under a temporary root so copies really happen, ``tests/nnf_bin`` (fake ``mpirun`` and
``dcp``) first on ``PATH``, and helpers to make drivers and requests. Tests drive the driver
in-process with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import shutil
import time
from typing import Any, Dict, Optional, Tuple

from copy_offload.client.wire import CopyRequest
from copy_offload.server.app import http_code
from copy_offload.server.drivers.errors import DriverError
from copy_offload.server.nnf import KubeSettings, NnfSettings, create_nnf_driver
from copy_offload.server.nnf.driver import NnfDriver
from kube_double import DWS, NNF, KubeDouble, seed_nnf
from support import status_doc

NNF_BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnf_bin")
UID = "3f2c9a1e-5b7d-4e8a-9c61-0d4b2e7f8a15"
WORKFLOW = "fluxjob-1234"
COMPUTE_GFS2 = "/mnt/nnf/%s-0" % UID  # compute-side mount paths (as in the spec)
COMPUTE_LUSTRE = "/mnt/nnf/%s-2" % UID
FAST = KubeSettings(request_timeout=1.0, attempts=4, backoff=0.01, backoff_max=0.05, threads=8)


class NnfWorld:
    def __init__(self, kube: KubeDouble, tmp: str, seed: bool = True) -> None:
        self.kube = kube
        self.tmp = tmp
        self.root = os.path.join(tmp, "root")
        self.rabbit_gfs2 = self.root + COMPUTE_GFS2 + "/rabbit-01-0"
        self.rabbit_lustre = self.root + COMPUTE_LUSTRE
        self.lus = os.path.join(self.root, "lus", "global")
        self.hostfiles = os.path.join(tmp, "hostfiles")
        self.mpi_hostfile = os.path.join(tmp, "mpi-hostfile")
        self.mpirun_log = os.path.join(tmp, "mpirun.log")
        if not seed:  # another process seeded this world (bench/bench_nnf.py); ``kube`` only configures clients
            return
        for path in (self.rabbit_gfs2, self.rabbit_lustre, self.lus, self.hostfiles):
            os.makedirs(path, exist_ok=True)
        with open(self.mpi_hostfile, "w") as fh:
            fh.write("fluxjob-1234-worker-0.fluxjob-1234.default.svc slots=4\nrabbit-02-w slots=4\n"
                     "fluxjob-1234-worker-0.fluxjob-1234.default.svc slots=4\n")
        seed_nnf(kube, root=self.root)
        # Tests run as root: keep $SETPRIV harmless but visible, and progress every second.
        self.set_profile("default", setprivCommand="env FAKE_SETPRIV_UID=$UID", progressIntervalSeconds=1)
        self.set_profile("template", setprivCommand="env FAKE_SETPRIV_UID=$UID", progressIntervalSeconds=1)

    # ----------------------------------------------------------------- Kubernetes objects

    def set_profile(self, name: str, **data: Any) -> Dict[str, Any]:
        obj = self.kube.get(NNF, "nnfdatamovementprofiles", "nnf-system", name)
        if obj is None:
            obj = copy.deepcopy(self.kube.get(NNF, "nnfdatamovementprofiles", "nnf-system", "template"))
            obj["metadata"] = {"name": name, "namespace": "nnf-system"}
            obj["data"]["default"] = False
        obj["data"].update(data)
        return self.kube.put(obj)

    def dm(self, name: str) -> Dict[str, Any]:
        namespace, _, dm_name = name.partition("--")
        obj = self.kube.get(NNF, "nnfdatamovements", namespace, dm_name)
        assert obj is not None, name
        return obj

    def dms(self):
        return self.kube.objects(NNF, "nnfdatamovements")

    def workflow_status(self, **status: Any) -> None:
        self.kube.modify(DWS, "workflows", "default", WORKFLOW, lambda o: o["status"].update(status))

    async def caught_up(self, driver: NnfDriver, timeout: float = 10.0) -> None:
        """Wait until the driver's watch caches hold exactly what the double holds (as of now).

        The caches follow their watches within milliseconds, as an informer does; a test that
        changes an object and at once expects a request to see the change waits for this.
        """
        def same() -> bool:
            for caches in driver.reads.caches.values():
                for cache in caches:
                    if not cache.synced.is_set():
                        return False
                    want = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o["metadata"]["resourceVersion"]
                            for o in self.kube.objects(cache.res.group, cache.res.plural, cache.namespace)
                            if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in cache.labels.items())}
                    have = {k: o["metadata"]["resourceVersion"] for k, o in list(cache.objects.items())}
                    if want != have:
                        return False
            return True

        await until(same, timeout, "the watch caches to catch up with the double")

    # ----------------------------------------------------------------- requests and drivers

    def source_tree(self, name: str = "data", lustre: bool = False, files: int = 3) -> str:
        """Files under the Rabbit-side path; returns the compute-side source path."""
        base = self.rabbit_lustre if lustre else self.rabbit_gfs2
        top = os.path.join(base, name)
        os.makedirs(os.path.join(top, "sub"), exist_ok=True)
        for i in range(files):
            with open(os.path.join(top, "sub" if i % 2 else "", "f%d" % i), "w") as fh:
                fh.write("payload %d\n" % i * (i + 1))
        return (COMPUTE_LUSTRE if lustre else COMPUTE_GFS2) + "/" + name

    def request(self, source: str, dest: str, **fields: Any) -> CopyRequest:
        values = {"computeName": "compute-01", "sourcePath": source, "destinationPath": dest, "slots": -1, "maxSlots": -1}
        values.update(fields)
        return CopyRequest(**values)

    async def driver(self, **extra: Any) -> NnfDriver:
        settings = NnfSettings(kube=copy.deepcopy(extra.pop("kube_settings", FAST)), hostfile_dir=self.hostfiles,
                               mpi_hostfile=self.mpi_hostfile, use_setpriv=True, cancel_wait=5.0)
        return await create_nnf_driver(
            workflow_name=WORKFLOW, workflow_namespace="default", node_name="rabbit-01",
            kube_configuration=self.kube.configuration(), settings=settings, **extra,
        )


def listing(top: str, dirs: bool = False) -> list:
    """The files (or the directories) below ``top``, relative to it, sorted."""
    out = []
    for base, subdirs, files in os.walk(top):
        out += [os.path.relpath(os.path.join(base, f), top) for f in (subdirs if dirs else files)]
    return sorted(out)


def run(coro: Any, timeout: float = 30.0) -> Any:
    """``asyncio.run`` with a ceiling, so a hang fails the test instead of freezing it."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def submit_error(driver: NnfDriver, request: CopyRequest) -> DriverError:
    try:
        name = await driver.submit(request)
    except DriverError as exc:
        return exc
    raise AssertionError("submit succeeded: %s" % name)


async def wait_done(driver: NnfDriver, name: str, timeout: float = 20.0) -> Dict[str, Any]:
    began = time.monotonic()
    doc = await status_doc(driver, name, int(timeout))
    assert doc["state"] == "completed", (doc, time.monotonic() - began)
    return doc


def env_for_tests(monkeypatch: Any, world: Optional[NnfWorld] = None) -> None:
    monkeypatch.setenv("PATH", NNF_BIN + os.pathsep + os.environ.get("PATH", ""))
    if world is not None:
        monkeypatch.setenv("FAKE_MPIRUN_LOG", world.mpirun_log)


class OutageClock:
    """Virtual time for the driver's end-write backoff (``NnfSettings.retry_sleep``).

    The test starts an outage of status writes with the double's faults; once the backoff
    pauses add up to ``outage`` seconds, ``reached`` is set and the clock holds until the test
    sets ``resume``, then the faults are cleared: the API server is back. A 25 s outage plays
    in well under a second of wall time, and the test looks at the state in the middle of it.
    """

    def __init__(self, kube: Any, outage: float = 25.0) -> None:
        self.kube = kube
        self.outage = outage
        self.now = 0.0
        self.pauses: list = []
        self.reached = asyncio.Event()
        self.resume = asyncio.Event()
        self.recovered = False

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        if self.now >= self.outage and not self.recovered:
            self.reached.set()
            await self.resume.wait()
            self.kube.clear_faults()
            self.recovered = True
        await asyncio.sleep(0)


async def until(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate()`` (every 20 ms) until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        await asyncio.sleep(0.02)


async def outage_scenario(world: NnfWorld, src: str, dest: str, outage: float = 25.0) -> Dict[str, Any]:
    """Status writes fail from just after the start until ``outage`` (virtual) seconds after the
    copy's end; returns what the driver and the resource said during and after the outage."""
    clock = OutageClock(world.kube, outage)
    driver = await world.driver(retry_sleep=clock.sleep)
    try:
        name = await driver.submit(world.request(src, dest))
        world.kube.fail(503, count=10**6, method="PUT", path="/status$", message="etcdserver: request timed out")
        await asyncio.wait_for(clock.reached.wait(), 120)
        during = {"status": await status_doc(driver, name, 0), "waited": await status_doc(driver, name, 5), "active": driver.active(),
                  "resource": copy.deepcopy(world.dm(name).get("status") or {})}
        clock.resume.set()
        await until(lambda: not driver.active(), 30, "the end to be recorded")
        after = {"status": await status_doc(driver, name, 0), "resource": copy.deepcopy(world.dm(name)["status"])}
    finally:
        await driver.close()
    return {"name": name, "during": during, "after": after, "virtual": clock.now, "pauses": clock.pauses}


def server_env(world: NnfWorld, **extra: str) -> Dict[str, str]:
    """The environment of ``copy-offload-server --driver nnf`` against ``world`` (run dirs in world.hostfiles)."""
    env = {
        "KUBECONFIG": world.kube.write_kubeconfig(os.path.join(world.tmp, "kubeconfig")), "NNF_NODE_NAME": "rabbit-01",
        "DW_WORKFLOW_NAME": WORKFLOW, "DW_WORKFLOW_NAMESPACE": "default", "ENVIRONMENT": "test",
        "FAKE_MPIRUN_LOG": world.mpirun_log, "TMPDIR": world.hostfiles,
        "PATH": NNF_BIN + os.pathsep + os.environ.get("PATH", ""), "KUBERNETES_SERVICE_HOST": "",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith("OMPI_")})
    env.update(extra)
    return env


def run_record(world: NnfWorld, name: str) -> Tuple[str, Dict[str, Any]]:
    """The run dir and restart record of request ``name`` (the server writes it once the copy starts)."""
    from copy_offload.server.nnf.survivor import read_record, run_dirs

    for run_dir in run_dirs(world.hostfiles):
        record = read_record(run_dir)
        if record and record.get("name") == name:
            return run_dir, record
    raise AssertionError("no run record for %s in %s" % (name, os.listdir(world.hostfiles)))


def restart_scenario(world: NnfWorld, start_server: Any, env: Dict[str, str], src: str, dest: str, fate: str,
                     gate: Optional[str] = None) -> Dict[str, Any]:
    """``kill -9`` the server during a copy, then start another one.

    ``fate``: ``survives`` (the copy runs on across the restart), ``ended`` (it ends while no
    server runs) or ``killed`` (it dies with the server). Returns the final status and what
    was left behind. ``gate``: a file the copy waits for (the fake dcp's ``FAKE_DCP_GATE``),
    made once the new server lists the request (or, for ``ended``, right after the kill).
    """
    import signal as _signal

    import copy_offload.client as co
    from copy_offload.server.nnf.survivor import RESULT, alive

    first = start_server("nnf", env=env)
    with co.Client(**first.client_kwargs()) as client:
        name = client.copy(src, dest, compute_name="compute-01")
    deadline = time.monotonic() + 20
    while True:
        try:
            run_dir, record = run_record(world, name)
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    assert first.process is not None
    first.process.kill()  # SIGKILL: no cleanup of any kind
    first.process.wait(10)
    pid, start_time = record["pid"], record["start_time"]
    assert alive(pid, start_time), "the copy died with the server"
    if fate == "killed":
        os.killpg(pid, _signal.SIGKILL)
    if gate and fate == "ended":
        open(gate, "w").close()
    deadline = time.monotonic() + 60
    while fate != "survives" and alive(pid, start_time):
        assert time.monotonic() < deadline, "the copy did not end"
        time.sleep(0.05)
    second = start_server("nnf", env=env)
    alive_after_start = alive(pid, start_time)  # then the new server found it running at its start
    with co.Client(**second.client_kwargs()) as client:
        adopted = client.list()
        if gate:
            open(gate, "w").close()
        status = client.status(name, 60)
        left = client.list()
    deadline = time.monotonic() + 10
    while os.path.exists(run_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"name": name, "status": status, "adopted": adopted, "listed after": left, "run dir left": os.path.exists(run_dir),
            "result file": os.path.join(run_dir, RESULT), "resource": world.dm(name)["status"], "second": second,
            "still alive": alive(pid, start_time), "alive after restart": alive_after_start}


def prepare_cases(world: NnfWorld) -> list:
    """(label, source, destination) of the destination-preparation cases (tests/test_nnf_prepare.py)."""
    gsrc = world.source_tree("tree")
    world.source_tree("idx", files=1)
    lsrc = world.source_tree("ltree", lustre=True)
    out = world.lus + "/prep"
    os.makedirs(out + "/existing", exist_ok=True)
    with open(out + "/afile", "w") as fh:
        fh.write("x")
    return [
        ("dir to new dir", gsrc, out + "/new"),
        ("file to new file", gsrc + "/f0", out + "/deep/new-file"),
        ("file to dir/", gsrc + "/f0", out + "/existing/"),
        ("file to existing dir", gsrc + "/f0", out + "/existing"),
        ("missing source", gsrc + "-missing", out + "/never"),
        ("below a file", gsrc, out + "/afile/sub"),
        ("source is the index mount", COMPUTE_GFS2, out + "/whole"),
        ("lustre dir", lsrc, out + "/lnew"),
        ("lustre file", lsrc + "/f0", out + "/lfile"),
        ("lustre missing", COMPUTE_LUSTRE + "/nope", out + "/lnever"),
    ]


def mpirun_launches(world: NnfWorld) -> int:
    """Launches the fake mpirun has logged so far (0 with the real one)."""
    if not os.path.exists(world.mpirun_log):
        return 0
    with open(world.mpirun_log) as fh:
        return fh.read().count("RUN: ")


def prepare_outcomes(world: NnfWorld, mode: str) -> Tuple[Dict[str, Any], list]:
    """Each case's outcome (error text, or destination path) and launches in ``mode``, and the directories made."""
    cases = prepare_cases(world)

    async def scenario():
        driver = await world.driver(prepare_mode=mode)
        results = {}
        for label, src, dest in cases:
            before = mpirun_launches(world)
            try:
                name = await driver.submit(world.request(src, dest, dryrun=True))
            except DriverError as exc:
                outcome = ("error", http_code(exc), re.sub(r"/dm-[^/ ]+", "/dm-X", exc.message))  # each request's own run dir
            else:
                await wait_done(driver, name)
                outcome = ("ok", world.dm(name)["spec"]["destination"]["path"])
            results[label] = (outcome, mpirun_launches(world) - before)
        await driver.close()
        return results

    results = run(scenario(), timeout=120)
    made = listing(world.lus + "/prep", dirs=True)
    shutil.rmtree(world.lus + "/prep")
    return results, made
