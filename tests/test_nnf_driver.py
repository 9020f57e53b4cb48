"""The nnf driver against the Kubernetes double: real copies through fake mpirun/dcp."""

from __future__ import annotations

import asyncio
import os
import time

from copy_offload.client import wire
from copy_offload.server.app import http_code
from copy_offload.server.drivers.errors import DriverError
from copy_offload.server.nnf.survivor import alive, process_start_time
from kube_double import DWS, LUS, NNF
from nnf_support import UID, WORKFLOW, listing, run, submit_error, wait_done
from support import status_doc


def _read(path):
    with open(path) as fh:
        return fh.read()


def test_nnf_gfs2_copy_creates_the_reference_resource(world):
    src = world.source_tree("data")

    async def scenario():
        driver = await world.driver()
        world.kube.clear_log()
        name = await driver.submit(world.request(src, world.lus + "/out", slots=2, maxSlots=-1))
        # answered only once the resource exists and is Running
        assert name.startswith("rabbit-01--nnf-copy-offload-node-") and len(name) == len("rabbit-01--nnf-copy-offload-node-") + 5
        assert world.dm(name)["status"]["state"] == "Running"
        doc = await wait_done(driver, name)
        assert driver.active() == []
        await driver.close()
        return name, doc

    name, doc = run(scenario())
    assert doc["status"] == "success" and doc["commandStatus"]["progress"] == 100
    assert doc["startTime"] and doc["endTime"]
    dm = world.dm(name)
    meta, spec, status = dm["metadata"], dm["spec"], dm["status"]
    assert meta["generateName"] == "nnf-copy-offload-node-" and meta["namespace"] == "rabbit-01"
    assert meta["labels"] == {
        "dm.cray.hpe.com/initiator": "compute-01",
        "dataworkflowservices.github.io/workflow.name": WORKFLOW,
        "dataworkflowservices.github.io/workflow.namespace": "default",
        "dataworkflowservices.github.io/workflow.uid": UID,
        "dataworkflowservices.github.io/owner.kind": "Workflow",
        "dataworkflowservices.github.io/owner.name": WORKFLOW,
        "dataworkflowservices.github.io/owner.namespace": "default",
        "dataworkflowservices.github.io/owner.uid": UID,
        "nnf.cray.hpe.com/teardown_state": "PostRun",
    }
    assert spec["source"] == {"path": world.rabbit_gfs2 + "/data",
                              "storageReference": {"kind": "NnfNodeStorage", "name": "default-fluxjob-1234-0-gfs2-0", "namespace": "rabbit-01"}}
    # gfs2 fan-in: the index-mount directory is appended to the destination
    assert spec["destination"] == {"path": world.lus + "/out/rabbit-01-0"}
    assert spec["profileReference"] == {"kind": "NnfDataMovementProfile", "name": "default", "namespace": "nnf-system"}
    assert spec["userId"] == 1001 and spec["groupId"] == 1001 and "cancel" not in spec
    assert spec["userConfig"] == {"dryrun": False, "logStdout": False, "storeStdout": False, "slots": 2}
    assert status["state"] == "Finished" and status["status"] == "Success" and "message" not in status
    cs = status["commandStatus"]
    assert cs["command"].startswith("/bin/bash -c ulimit -n 2048 && mpirun --mca orte_tmpdir_base %s/dm-" % world.hostfiles)
    assert "--uid" not in cs["command"] and cs["command"].endswith("dcp --progress 1   %s/data %s/out/rabbit-01-0" % (world.rabbit_gfs2, world.lus))
    assert cs["items"] == 5 and cs["files"] == 3 and cs["directories"] == 2 and "links" not in cs
    assert cs["lastMessage"].startswith("Rate: ") and cs["lastMessage"].endswith("\n")
    assert listing(world.lus + "/out/rabbit-01-0/data") == ["f0", "f2", "sub/f1"]
    log = _read(world.mpirun_log)
    assert "HOST: fluxjob-1234-worker-0.fluxjob-1234.default.svc.cluster.local slots=2\n" in log
    # the destination was prepared here, as the user (no mpirun launch): the copy is the only one
    assert log.count("RUN: ") == 1 and "RUN: dcp " in log
    assert os.listdir(world.hostfiles) == []  # the hostfile directory went with the request
    # Kubernetes writes: create, start, end (the copy finished within one progress interval)
    assert world.kube.writes(plural="nnfdatamovements") == 3


def test_nnf_lustre_copy(world):
    src = world.source_tree("results", lustre=True)

    async def scenario():
        driver = await world.driver()
        name = await driver.submit(world.request(src, world.lus + "/keep", dcpOptions="--sparse", mpirunOptions="-x X=1", slots=0, maxSlots=3))
        doc = await wait_done(driver, name)
        await driver.close()
        return name, doc

    name, doc = run(scenario())
    assert name.startswith("nnf-dm-system--nnf-copy-offload-") and "-node-" not in name
    assert doc["status"] == "success"
    dm = world.dm(name)
    assert dm["metadata"]["labels"]["nnf.cray.hpe.com/directive_index"] == "2"
    assert dm["spec"]["source"]["storageReference"] == {"kind": "NnfStorage", "name": "fluxjob-1234-2", "namespace": "default"}
    assert dm["spec"]["destination"] == {"path": world.lus + "/keep",
                                         "storageReference": {"kind": "LustreFileSystem", "namespace": "default", "name": "lushtx"}}
    assert dm["spec"]["userConfig"] == {"dryrun": False, "logStdout": False, "storeStdout": False, "mpirunOptions": "-x X=1",
                                        "dcpOptions": "--sparse", "slots": 0, "maxSlots": 3}
    assert " -x X=1 --allow-run-as-root" in dm["status"]["commandStatus"]["command"]
    assert "dcp --sparse --progress 1" in dm["status"]["commandStatus"]["command"]
    log = _read(world.mpirun_log)
    # the Rabbits come from mpi-operator's hostfile, deduplicated, with the request's slots
    assert log.endswith("HOST: fluxjob-1234-worker-0.fluxjob-1234.default.svc max_slots=3\nHOST: rabbit-02-w max_slots=3\n")
    assert listing(world.lus + "/keep") == ["results/f0", "results/f2", "results/sub/f1"]  # dest was made first


def test_nnf_workflow_and_mount_errors(world):
    src = world.source_tree("data")
    dest = world.lus + "/out"

    async def scenario():
        driver = await world.driver()
        texts = []

        async def err(request):
            await world.caught_up(driver)
            exc = await submit_error(driver, request)
            assert http_code(exc) == 500
            texts.append(exc.message)

        world.workflow_status(state="DataIn")
        await err(world.request(src, dest))
        world.workflow_status(state="PreRun", status="DriverWait")
        await err(world.request(src, dest))
        world.workflow_status(status="Completed")
        await err(world.request(src, dest, computeName="compute-09"))
        await err(world.request("/elsewhere/x", dest))
        # a rabbit-side mount that does not match the compute's device reference
        world.kube.modify(DWS, "clientmounts", "rabbit-01", "default-fluxjob-1234-0-servers",
                          lambda o: o["spec"]["mounts"][0]["device"]["deviceReference"].update(data=1))
        await err(world.request(src, dest))
        world.kube.remove(DWS, "clientmounts", "rabbit-01", "default-fluxjob-1234-0-servers")
        world.kube.remove(DWS, "clientmounts", "rabbit-01", "default-fluxjob-1234-2-servers")
        await err(world.request(src, dest))
        world.kube.modify(DWS, "clientmounts", "compute-01", "default-fluxjob-1234-0-computes",
                          lambda o: o["spec"]["mounts"][0].update(type="xfs"))
        await err(world.request(src, dest))
        world.kube.modify(DWS, "clientmounts", "compute-01", "default-fluxjob-1234-0-computes",
                          lambda o: o["spec"]["mounts"][0]["device"].pop("deviceReference"))
        await err(world.request(src, dest))
        world.kube.remove(DWS, "workflows", "default", WORKFLOW)
        await err(world.request(src, dest))
        await driver.close()
        return texts

    texts = run(scenario())
    assert texts == [
        "workflow must be in 'PreRun' state and 'Completed' status",
        "workflow must be in 'PreRun' state and 'Completed' status",
        "no client mounts found for node 'compute-09'",
        "source path not found in list of client mounts: /elsewhere/x",
        "initiator not found in list of client mounts: compute-01",
        "no client mounts found for node 'rabbit-01'",
        "filesystem not supported",
        "ClientMount compute-01/default-fluxjob-1234-0-computes: Source path '%s' does not have device reference" % src,
        'workflows.dataworkflowservices.github.io "fluxjob-1234" not found',
    ]
    assert world.dms() == [] and os.listdir(world.hostfiles) == []


def test_nnf_lustre_profile_and_host_errors(world):
    lsrc = world.source_tree("l", lustre=True)
    gsrc = world.source_tree("g")
    dest = world.lus + "/out"

    async def scenario():
        driver = await world.driver()
        texts = []

        async def err(request):
            await world.caught_up(driver)
            texts.append((await submit_error(driver, request)).message)

        await err(world.request(lsrc, "relative/dir"))
        await err(world.request(lsrc, "/scratch/elsewhere"))
        # a source that does not exist fails destination preparation (stat), as in the reference
        err_missing = await submit_error(driver, world.request(gsrc + "-missing", world.tmp + "/o"))
        await err(world.request(gsrc, dest, dmProfile="nope"))
        world.set_profile("template", default=True)
        await err(world.request(gsrc, dest))
        world.set_profile("template", default=False)
        world.set_profile("default", default=False)
        await err(world.request(gsrc, dest))
        world.set_profile("default", default=True)
        world.kube.put({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fluxjob-1234-worker-1", "namespace": "default",
                        "labels": {"training.kubeflow.org/job-name": WORKFLOW, "training.kubeflow.org/job-role": "worker"}},
                        "spec": {"nodeName": "rabbit-01", "containers": [{"name": "w", "image": "i"}]}})
        await err(world.request(gsrc, dest))
        for pod in ("fluxjob-1234-worker-0", "fluxjob-1234-worker-1"):
            world.kube.remove("", "pods", "default", pod)
        await err(world.request(gsrc, dest))
        os.unlink(world.mpi_hostfile)
        await err(world.request(lsrc, dest))
        world.kube.remove(LUS, "lustrefilesystems", "default", "lushtx")
        await err(world.request(lsrc, dest))
        await driver.close()
        return texts, err_missing.message

    texts, missing = run(scenario())
    assert texts == [
        "destination must be an absolute path",
        "unable to find a LustreFileSystem resource matching /scratch/elsewhere",
        "unable to retrieve NnfDataMovementProfile: nope",
        "more than one default NnfDataMovementProfile found; unable to pick one: [default template]",
        "unable to find a default NnfDataMovementProfile to use",
        "found more than one worker pod for node rabbit-01 - there should only be one",
        "could not find any worker pods for node rabbit-01",
        "could not get pull hosts from mpi-operator created hostfile: open %s: no such file or directory" % world.mpi_hostfile,
        "no LustreFileSystem resources found",
    ]
    assert missing.startswith("internal error: could not determine source type: could not stat path ('%s/g-missing'): command: "
                              % world.rabbit_gfs2)
    assert "No such file or directory" in missing and missing.endswith("error: exit status 1")
    assert world.dms() == [] and os.listdir(world.hostfiles) == []


def test_nnf_named_profile_dryrun_and_store_stdout(world):
    src = world.source_tree("d")
    world.set_profile("quiet", command="dcp $SRC $DEST", createDestDir=False, storeStdout=True, progressIntervalSeconds=0)

    async def scenario():
        driver = await world.driver()
        dry = await driver.submit(world.request(src, world.tmp + "/dry", dryrun=True, dmProfile="template"))
        stored = await driver.submit(world.request(src, world.tmp + "/copied", dmProfile="quiet"))
        docs = [await wait_done(driver, n) for n in (dry, stored)]
        await driver.close()
        return dry, stored, docs

    dry, stored, (ddoc, sdoc) = run(scenario())
    assert world.dm(dry)["spec"]["profileReference"]["name"] == "template"
    assert ddoc["commandStatus"]["command"] == "/bin/bash -c true" and ddoc["status"] == "success"
    assert listing(world.tmp + "/dry") == []  # createDestDir made it (as the reference); nothing copied
    # progress disabled: only the command in commandStatus; storeStdout: the (trimmed) output as message
    assert world.dm(stored)["status"]["commandStatus"] == {"command": "/bin/bash -c dcp %s/d %s/copied" % (world.rabbit_gfs2, world.tmp)}
    assert sdoc["message"].startswith("[2026-06-01T15:05:02] Walking") and "<snipped dcp progress output>" in sdoc["message"]
    assert "(100%)" in sdoc["message"] and sdoc["message"].endswith("seconds)\n")


def test_nnf_failure_output(world):
    world.set_profile("plain", command="dcp $SRC $DEST", createDestDir=False)

    async def scenario():
        driver = await world.driver()
        name = await driver.submit(world.request("/mnt/nnf/%s-0/absent" % UID, world.tmp + "/o", dmProfile="plain"))
        doc = await wait_done(driver, name)
        await driver.close()
        return name, doc

    name, doc = run(scenario())
    assert doc["state"] == "completed" and doc["status"] == "failed"
    assert doc["message"].startswith("exit status 1: [2026-06-01T15:05:02] Walking %s/absent\n" % world.rabbit_gfs2)
    assert "ERROR: Failed to stat" in doc["message"]
    error = world.dm(name)["status"]["error"]
    assert error["severity"] == "Fatal" and error["debugMessage"] == "exit status 1"
    assert error["userMessage"].startswith("data movement operation failed: [2026-06-01T15:05:02] Walking")


def test_nnf_progress_is_written_while_running(world, monkeypatch):
    monkeypatch.setenv("FAKE_DCP_STEPS", "8")
    monkeypatch.setenv("FAKE_DCP_SLEEP", "0.35")
    src = world.source_tree("p")

    async def scenario():
        driver = await world.driver()
        world.kube.clear_log()
        began = time.monotonic()
        name = await driver.submit(world.request(src, world.tmp + "/p-out"))
        seen = []
        while name in driver.active():
            doc = await status_doc(driver, name, 0)
            seen.append(doc["commandStatus"].get("progress", 0))
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - began
        final = await status_doc(driver, name, 0)
        await driver.close()
        return name, seen, final, elapsed

    name, seen, final, elapsed = run(scenario())
    assert any(0 < p < 100 for p in seen), seen  # progress seen before the end
    assert final["commandStatus"]["progress"] == 100 and final["commandStatus"]["elapsedTime"]
    assert final["commandStatus"]["lastMessageTime"]
    updates = world.kube.writes(plural="nnfdatamovements", verb="update")
    # start + at most one per (1 s) interval + end
    assert 3 <= updates <= 2 + int(elapsed) + 1, (updates, elapsed)


def test_nnf_cancel_kills_the_process_group(world, monkeypatch):
    monkeypatch.setenv("FAKE_DCP_STEPS", "200")
    monkeypatch.setenv("FAKE_DCP_SLEEP", "0.1")
    pidfile = os.path.join(world.tmp, "dcp.pid")
    monkeypatch.setenv("FAKE_DCP_PIDFILE", pidfile)
    src = world.source_tree("c")

    async def scenario():
        driver = await world.driver()
        name = await driver.submit(world.request(src, world.tmp + "/c-out"))
        for _ in range(100):
            if os.path.exists(pidfile) and os.path.getsize(pidfile):
                break
            await asyncio.sleep(0.05)
        pid = int(_read(pidfile))
        assert driver.active() == [name]
        assert await driver.cancel(name) is True
        listed = driver.active()
        again = await driver.cancel(name)  # completed, not yet reaped: still a success
        doc = await status_doc(driver, name, -1)
        reaped = await driver.cancel(name)  # its completed status was read: forgotten, as the reference
        unknown = await driver.cancel("rabbit-01--nnf-copy-offload-node-zzzzz")
        await driver.close()
        return pid, listed, doc, again, reaped, unknown

    pid, listed, doc, again, reaped, unknown = run(scenario())
    assert listed == []
    assert doc["state"] == "completed" and doc["status"] == "cancelled" and "message" not in doc
    assert again is True and reaped is False and unknown is False
    # dcp (a grandchild of the command wrapper, under fake mpirun) has ended too: gone, or a zombie
    # waiting for PID 1 to reap it (this machine's PID 1 does not reap orphans)
    start_time, deadline = process_start_time(pid), time.monotonic() + 10
    while alive(pid, start_time) and time.monotonic() < deadline:  # SIGKILL is sent; the exit takes a moment
        time.sleep(0.02)
    assert not alive(pid, start_time)
    assert listing(world.tmp + "/c-out") == []  # the destination directory was prepared, nothing copied


def test_nnf_status_errors_and_states(world):
    other = {"apiVersion": NNF + "/v1alpha11", "kind": "NnfDataMovement",
             "metadata": {"name": "nnf-copy-offload-node-other", "namespace": "rabbit-01",
                          "labels": {"dataworkflowservices.github.io/workflow.name": "fluxjob-9",
                                     "dataworkflowservices.github.io/workflow.namespace": "default"}}}
    world.kube.put(other)
    pending = {"apiVersion": NNF + "/v1alpha11", "kind": "NnfDataMovement",
               "metadata": {"name": "nnf-copy-offload-node-pend", "namespace": "rabbit-01",
                            "labels": {"dataworkflowservices.github.io/workflow.name": WORKFLOW,
                                       "dataworkflowservices.github.io/workflow.namespace": "default",
                                       "dm.cray.hpe.com/initiator": "compute-01"}},
               "status": {"state": "Finished", "status": "Success"}}  # finished, so recovery leaves it
    world.kube.put(pending)

    async def scenario():
        driver = await world.driver()
        out = {}
        for name in ("no-dashes-here", "--x", "rabbit-01--", "rabbit-01--missing", "rabbit-01--nnf-copy-offload-node-other"):
            try:
                await status_doc(driver, name, 5)
            except DriverError as exc:
                out[name] = (http_code(exc), exc.message)
        out["pending"] = await status_doc(driver, "rabbit-01--nnf-copy-offload-node-pend", -1)  # not ours running: no wait
        world.kube.modify(NNF, "nnfdatamovements", "rabbit-01", "nnf-copy-offload-node-pend",
                          lambda o: o["status"].update(startTime="2026-06-01T15:05:02.481935Z", state="Bogus"))
        try:
            await status_doc(driver, "rabbit-01--nnf-copy-offload-node-pend", 0)
        except wire.WireError as exc:  # the state is the driver's; rendering it (and failing) is the server's
            out["bogus"] = (http_code(exc), exc.message)
        await driver.close()
        return out

    out = run(scenario(), timeout=15)
    assert out["no-dashes-here"] == (404, "request not found")
    assert out["--x"] == (404, "request not found") and out["rabbit-01--"] == (404, "request not found")
    assert out["rabbit-01--missing"] == (404, "request not found")
    assert out["rabbit-01--nnf-copy-offload-node-other"] == (400, "request does not belong to workflow")
    assert out["pending"] == {"state": "pending", "status": "unknown status"}
    assert out["bogus"] == (500, "failed to decode returned state")


def test_nnf_many_requests_one_driver(world):
    """Concurrency: twenty copies at once, all complete, none lost, names unique."""
    world.set_profile("fast", command="dcp $SRC $DEST", createDestDir=False)
    sources = [world.source_tree("m%d" % i, files=1) for i in range(20)]

    async def scenario():
        driver = await world.driver()
        names = await asyncio.gather(*[driver.submit(world.request(s, "%s/m%d-out" % (world.tmp, i), dmProfile="fast"))
                                       for i, s in enumerate(sources)])
        docs = await asyncio.gather(*[status_doc(driver, n, 20) for n in names])
        await driver.close()
        return names, docs

    names, docs = run(scenario())
    assert len(set(names)) == 20 and all(d["status"] == "success" for d in docs)
    assert all(os.path.exists("%s/m%d-out/f0" % (world.tmp, i)) for i in range(20))


def test_nnf_rbac_grants_exactly_the_calls_made(world):
    """share/rbac/nnf-driver.yaml: every call of a gfs2 and a Lustre copy is allowed, every rule is used
    (with the watch caches, and with the direct reads they fall back to)."""
    import yaml

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "share", "rbac", "nnf-driver.yaml")
    with open(path) as fh:
        docs = {d["kind"]: d for d in yaml.safe_load_all(fh)}
    allowed = set()
    for rule in docs["ClusterRole"]["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    allowed.add((group, resource, verb))
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == docs["ClusterRole"]["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "nnf-dm-copy-offload", "namespace": "default"}]
    gsrc, lsrc = world.source_tree("g"), world.source_tree("l", lustre=True)

    async def scenario(caches):
        driver = await world.driver(watch_caches=caches)
        for src in (gsrc, lsrc):
            await wait_done(driver, await driver.submit(world.request(src, world.lus + "/rbac")))
        await driver.close()

    run(scenario(True))  # watch-fed planning reads
    run(scenario(False))  # and the direct reads they fall back to
    used = set()
    for entry in world.kube.log():
        if entry.verb == "discovery":
            continue
        resource = entry.plural + ("/" + entry.subresource if entry.subresource else "")
        used.add((entry.group, resource, entry.verb))
    assert used <= allowed, used - allowed
    assert allowed <= used, allowed - used


def test_nnf_storage_and_configuration_errors(world):
    lsrc = world.source_tree("l", lustre=True)
    gsrc = world.source_tree("g")
    dest = world.lus + "/out"
    kube = world.kube

    async def scenario():
        driver = await world.driver()
        texts = []

        async def err(request):
            await world.caught_up(driver)
            texts.append((await submit_error(driver, request)).message)

        kube.modify(DWS, "clientmounts", "compute-01", "default-fluxjob-1234-2-computes",
                    lambda o: o["metadata"]["labels"].pop("nnf.cray.hpe.com/directive_index"))
        await err(world.request(lsrc, dest))
        kube.modify(DWS, "clientmounts", "compute-01", "default-fluxjob-1234-2-computes",
                    lambda o: o["metadata"]["labels"].update({"nnf.cray.hpe.com/directive_index": "2"}))
        kube.modify(NNF, "nnfstorages", "default", "fluxjob-1234-2", lambda o: o["spec"]["allocationSets"].pop())
        await err(world.request(lsrc, dest))
        kube.modify(NNF, "nnfstorages", "default", "fluxjob-1234-2", lambda o: o["spec"].update(fileSystemType="xfs"))
        await err(world.request(lsrc, dest))
        kube.remove(NNF, "nnfstorages", "default", "fluxjob-1234-2")
        await err(world.request(lsrc, dest))
        kube.modify(DWS, "systemconfigurations", "default", "default", lambda o: o["spec"]["storageNodes"][0].update(computesAccess=[]))
        await err(world.request(gsrc, dest))  # ours: the reference would try namespace ""
        kube.remove(DWS, "systemconfigurations", "default", "default")
        await err(world.request(gsrc, dest))
        await driver.close()
        return texts

    texts = run(scenario())
    assert texts == [
        "unable to find directive index label on compute ClientMount, namespace=compute-01 name=default-fluxjob-1234-2-computes",
        "ost allocation set not found",
        "Unsupported storage type xfs",
        'NNF Storage not found: nnfstorages.nnf.cray.hpe.com "fluxjob-1234-2" not found',
        "compute node 'compute-01' has no Rabbit in SystemConfiguration default/default",
        'failed to retrieve system configuration: systemconfigurations.dataworkflowservices.github.io "default" not found',
    ]


def test_nnf_status_wait_ends_when_the_resource_goes(world, monkeypatch):
    monkeypatch.setenv("FAKE_DCP_STEPS", "100")
    monkeypatch.setenv("FAKE_DCP_SLEEP", "0.1")
    src = world.source_tree("w")

    async def scenario():
        driver = await world.driver()
        name = await driver.submit(world.request(src, world.tmp + "/w-out"))
        waiter = asyncio.ensure_future(status_doc(driver, name, 30))
        await asyncio.sleep(0.3)
        assert not waiter.done()  # waiting for completion, event-driven
        namespace, dm_name = name.split("--")
        world.kube.remove(NNF, "nnfdatamovements", namespace, dm_name)
        await driver.cancel(name)
        try:
            await waiter
        except DriverError as exc:
            return exc
        finally:
            await driver.close()

    exc = run(scenario())
    assert (http_code(exc), exc.message) == (404, "request not found after waiting for completion")
