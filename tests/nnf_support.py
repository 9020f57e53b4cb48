"""Shared pieces of the nnf driver tests: the seeded double, real directories, fake mpirun/dcp.

``NnfWorld`` is one scenario (nnf-resources.md) in a ``KubeDouble``, with the Rabbit-side
paths under a temporary root so copies really happen, ``tests/nnf_bin`` (fake ``mpirun`` and
``dcp``) first on ``PATH``, and helpers to make drivers and requests. Tests drive the driver
in-process with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
from typing import Any, Dict, Optional

from copy_offload.client.wire import CopyRequest, WireError
from copy_offload.server.nnf import KubeSettings, NnfSettings, create_nnf_driver
from copy_offload.server.nnf.driver import NnfDriver
from kube_double import DWS, NNF, KubeDouble, seed_nnf

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


def run(coro: Any, timeout: float = 30.0) -> Any:
    """``asyncio.run`` with a ceiling, so a hang fails the test instead of freezing it."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def submit_error(driver: NnfDriver, request: CopyRequest) -> WireError:
    try:
        name = await driver.submit(request)
    except WireError as exc:
        return exc
    raise AssertionError("submit succeeded: %s" % name)


async def wait_done(driver: NnfDriver, name: str, timeout: float = 20.0) -> Dict[str, Any]:
    began = time.monotonic()
    doc = await driver.status(name, int(timeout))
    assert doc["state"] == "completed", (doc, time.monotonic() - began)
    return doc


def env_for_tests(monkeypatch: Any, world: Optional[NnfWorld] = None) -> None:
    monkeypatch.setenv("PATH", NNF_BIN + os.pathsep + os.environ.get("PATH", ""))
    if world is not None:
        monkeypatch.setenv("FAKE_MPIRUN_LOG", world.mpirun_log)
