"""The nnf driver when Kubernetes misbehaves, after a restart, and at startup."""

from __future__ import annotations

import asyncio
import os
import time

from copy_offload.server.app import http_code
from copy_offload.server.drivers.errors import DriverError
from copy_offload.server.nnf import KubeSettings, NnfStartupError, create_nnf_driver
from copy_offload.server.nnf.driver import RESTART_MESSAGE
from kube_double import DWS, LUS, NNF, KubeDouble, ResourceType
from nnf_support import FAST, WORKFLOW, NnfWorld, env_for_tests, run, submit_error, wait_done
from support import status_doc


def test_nnf_transient_api_errors_are_retried(world):
    src = world.source_tree("t")
    kube = world.kube

    async def scenario():
        driver = await world.driver(watch_caches=False)  # every planning read goes to the API server
        kube.fail(500, count=2, method="GET", path="/workflows/")
        kube.reset(count=1, method="GET", path="/clientmounts")
        kube.delay(3.0, count=1, method="GET", path="/systemconfigurations/", then="drop")  # > 1 s request timeout
        kube.fail(429, count=1, method="GET", path="/nnfdatamovementprofiles")
        kube.fail(503, count=1, method="POST", path="/nnfdatamovements")
        kube.fail(502, count=1, method="PUT", path="/status")
        name = await driver.submit(world.request(src, world.lus + "/t-out"))
        doc = await wait_done(driver, name)
        await driver.close()
        return doc

    doc = run(scenario())
    assert doc["status"] == "success"
    for fault, count in (("status", 5), ("reset", 1), ("delay", 1)):
        assert kube.count(fault=fault) == count, fault
    assert len(world.dms()) == 1  # the retried create made one resource


def test_nnf_lost_create_answer_is_not_a_second_copy(world):
    src = world.source_tree("once")
    kube = world.kube

    async def scenario():
        driver = await world.driver()
        kube.lose_response(count=1, method="POST", path="/nnfdatamovements")
        name = await driver.submit(world.request(src, world.lus + "/once-out"))
        doc = await wait_done(driver, name)
        await driver.close()
        return name, doc

    name, doc = run(scenario())
    assert doc["status"] == "success"
    posts = kube.log(method="POST", plural="nnfdatamovements")
    assert [p.status for p in posts] == [201, 409]  # done but unanswered, then AlreadyExists: adopted
    assert posts[0].body["metadata"]["name"] == posts[1].body["metadata"]["name"] == name.split("--")[1]
    assert [d["metadata"]["name"] for d in world.dms()] == [name.split("--")[1]]


def test_nnf_status_write_conflicts_refetch(world, monkeypatch):
    monkeypatch.setenv("FAKE_DCP_STEPS", "5")
    monkeypatch.setenv("FAKE_DCP_SLEEP", "0.3")
    src = world.source_tree("k")
    kube = world.kube

    async def scenario():
        driver = await world.driver()
        kube.conflict(count=2, method="PUT", path="/status")
        name = await driver.submit(world.request(src, world.lus + "/k-out"))
        namespace, dm_name = name.split("--")
        # as nnf-dm's controller does: add a finalizer while we run (a real stale resourceVersion)
        kube.modify(NNF, "nnfdatamovements", namespace, dm_name, lambda o: o["metadata"].setdefault("finalizers", []).append("dm.cray.hpe.com"))
        doc = await wait_done(driver, name)
        await driver.close()
        return name, doc

    name, doc = run(scenario())
    assert doc["status"] == "success" and doc["commandStatus"]["progress"] == 100
    dm = world.dm(name)
    assert dm["metadata"]["finalizers"] == ["dm.cray.hpe.com"] and dm["status"]["state"] == "Finished"
    assert kube.count(method="PUT", subresource="status", status=409) >= 3  # two injected, one real
    assert kube.count(method="GET", plural="nnfdatamovements", verb="get") >= 3  # a refetch per conflict


def test_nnf_permanent_and_unreachable_api_errors(world):
    src = world.source_tree("p")
    kube = world.kube

    async def scenario():
        driver = await world.driver()
        kube.fail(403, count=1, method="POST", path="/nnfdatamovements",
                  message='nnfdatamovements.nnf.cray.hpe.com is forbidden: User "system:serviceaccount:default:x" cannot create')
        forbidden = await submit_error(driver, world.request(src, world.lus + "/p-out"))
        kube.refuse_connections()
        began = time.monotonic()
        down = await submit_error(driver, world.request(src, world.lus + "/p-out"))
        try:
            await status_doc(driver, "rabbit-01--nnf-copy-offload-node-abcde", 0)
        except DriverError as exc:
            status_error = exc
        took = time.monotonic() - began
        kube.accept_connections()
        await driver.close()
        return forbidden, down, status_error, took

    forbidden, down, status_error, took = run(scenario())
    assert (http_code(forbidden), forbidden.message) == (500, 'nnfdatamovements.nnf.cray.hpe.com is forbidden: User "system:serviceaccount:default:x" cannot create')
    assert kube.count(method="POST", plural="nnfdatamovements") == 1  # a 403 is not retried
    assert http_code(down) == 500 and "gave up after 4 attempts" in down.message and "get workflows" in down.message
    assert http_code(status_error) == 500 and "gave up after 4 attempts" in status_error.message
    assert took < 5.0  # bounded, never a hang
    assert world.dms() == [] and os.listdir(world.hostfiles) == []


def test_nnf_failed_start_write_leaves_the_resource_failed(world):
    src = world.source_tree("s")
    kube = world.kube

    async def scenario():
        driver = await world.driver()
        kube.fail(422, count=1, method="PUT", path="/status", message="status is invalid")
        err = await submit_error(driver, world.request(src, world.lus + "/s-out"))
        active = driver.active()
        await driver.close()
        return err, active

    err, active = run(scenario())
    assert (http_code(err), err.message) == (500, "status is invalid")
    assert active == []
    (dm,) = world.dms()
    assert dm["status"]["state"] == "Finished" and dm["status"]["status"] == "Failed"
    assert "unable to record the start" in dm["status"]["message"] and dm["status"]["endTime"]
    assert not os.path.exists(world.lus + "/s-out/rabbit-01-0/s")  # nothing was run


def _dm(name, namespace="rabbit-01", workflow=WORKFLOW, initiator="compute-01", status=None):
    obj = {"apiVersion": NNF + "/v1alpha11", "kind": "NnfDataMovement",
           "metadata": {"name": name, "namespace": namespace,
                        "labels": {"dataworkflowservices.github.io/workflow.name": workflow,
                                   "dataworkflowservices.github.io/workflow.namespace": "default",
                                   "dm.cray.hpe.com/initiator": initiator}},
           "spec": {"source": {"path": "/a"}, "destination": {"path": "/b"}}}
    if status is not None:
        obj["status"] = status
    return obj


def test_nnf_restart_recovery_marks_interrupted_requests_failed(world):
    running = {"state": "Running", "startTime": "2026-06-01T15:05:02.481935Z", "commandStatus": {"command": "/bin/bash -c x", "progress": 40}}
    kube = world.kube
    kube.put(_dm("nnf-copy-offload-node-run01", status=running))
    kube.put(_dm("nnf-copy-offload-nostart", namespace="nnf-dm-system"))  # created, never started
    kube.put(_dm("nnf-copy-offload-node-done1", status={"state": "Finished", "status": "Success", "startTime": "2026-06-01T15:05:02Z",
                                                        "endTime": "2026-06-01T15:06:02Z"}))
    kube.put(_dm("nnf-copy-offload-node-other", workflow="fluxjob-77", status=running))
    kube.put(_dm("fluxjob-1234-copyout-1", initiator="copy_out", status=running))
    stray = os.path.join(world.hostfiles, "dm-stray123")  # a submit that died before its command started
    os.makedirs(stray)
    with open(os.path.join(stray, "hostfile"), "w") as fh:
        fh.write("localhost\n")
    foreign = os.path.join(world.hostfiles, "dm-notours")  # no hostfile: not one of ours, left alone
    os.makedirs(foreign)

    async def scenario():
        driver = await world.driver()
        doc = await status_doc(driver, "rabbit-01--nnf-copy-offload-node-run01", -1)
        recovered = driver.recovered
        await driver.close()
        return doc, recovered

    doc, recovered = run(scenario())
    assert sorted(recovered) == ["nnf-dm-system--nnf-copy-offload-nostart", "rabbit-01--nnf-copy-offload-node-run01"]
    assert doc["state"] == "completed" and doc["status"] == "failed" and doc["message"] == RESTART_MESSAGE
    assert doc["startTime"] and doc["endTime"] and doc["commandStatus"]["progress"] == 40
    untouched = {d["metadata"]["name"]: d["status"] for d in world.dms() if d["metadata"]["name"] not in ("nnf-copy-offload-node-run01", "nnf-copy-offload-nostart")}
    assert untouched["nnf-copy-offload-node-done1"]["status"] == "Success"
    assert untouched["nnf-copy-offload-node-other"]["state"] == "Running"
    assert untouched["fluxjob-1234-copyout-1"]["state"] == "Running"
    assert sorted(os.listdir(world.hostfiles)) == ["dm-notours"]
    nostart = world.dm("nnf-dm-system--nnf-copy-offload-nostart")["status"]
    assert nostart["status"] == "Failed" and nostart["startTime"] == nostart["endTime"]


def _older_api_double():
    resources = []
    from kube_double import DEFAULT_RESOURCES

    for rt in DEFAULT_RESOURCES:
        if rt.group == NNF:
            rt = ResourceType(rt.group, ("v1alpha9", "v1alpha10"), rt.plural, rt.kind, rt.namespaced, rt.status_subresource)
        elif rt.group == DWS:
            rt = ResourceType(rt.group, ("v1alpha6",), rt.plural, rt.kind, rt.namespaced, rt.status_subresource)
        elif rt.group == LUS:
            rt = ResourceType(rt.group, ("v1alpha1",), rt.plural, rt.kind, rt.namespaced, rt.status_subresource)
        resources.append(rt)
    return KubeDouble(resources=tuple(resources))


def test_nnf_factory_probes_versions_and_reports_startup_errors(tmp_path, monkeypatch):
    env_for_tests(monkeypatch)
    base = dict(workflow_name=WORKFLOW, workflow_namespace="default", node_name="rabbit-01", kube_settings=FAST)

    async def scenario():
        out = {}
        with _older_api_double() as kube:
            NnfWorld(kube, str(tmp_path / "old"))
            driver = await create_nnf_driver(kube_configuration=kube.configuration(), **base)
            out["probed"] = (driver.kinds.nnfdatamovements.version, driver.kinds.workflows.version, driver.kinds.lustrefilesystems.version)
            await driver.close()
            for key, kwargs in (("pinned", {"nnf_api_version": "v1alpha11"}), ("wrong-node", {"node_name": "rabbit-09"})):
                try:
                    await create_nnf_driver(kube_configuration=kube.configuration(), **dict(base, **kwargs))
                except NnfStartupError as exc:
                    out[key] = str(exc)
            path = kube.write_kubeconfig(str(tmp_path / "kubeconfig"))
            driver = await create_nnf_driver(kubeconfig=path, **base)
            out["kubeconfig"] = driver.kinds.nnfnodes.version
            await driver.close()
        with KubeDouble(resources=tuple(rt for rt in __import__("kube_double").DEFAULT_RESOURCES if rt.group != NNF)) as kube:
            try:
                await create_nnf_driver(kube_configuration=kube.configuration(), **base)
            except NnfStartupError as exc:
                out["no-nnf"] = str(exc)
            cfg = kube.configuration()
        try:  # the double is gone: nothing listens
            await create_nnf_driver(kube_configuration=cfg, **dict(base, kube_settings=KubeSettings(request_timeout=0.5, attempts=2, backoff=0.01)))
        except NnfStartupError as exc:
            out["unreachable"] = str(exc)
        try:
            await create_nnf_driver(kubeconfig=str(tmp_path / "nope"), **base)
        except NnfStartupError as exc:
            out["bad-kubeconfig"] = str(exc)
        return out

    out = asyncio.run(scenario())
    assert out["probed"] == ("v1alpha10", "v1alpha6", "v1alpha1")
    assert out["pinned"].startswith("Failed to retrieve my own NnfNode rabbit-01/nnf-nlc: the server could not find the requested resource")
    assert out["wrong-node"] == 'Failed to retrieve my own NnfNode rabbit-09/nnf-nlc: nnfnodes.nnf.cray.hpe.com "nnf-nlc" not found'
    assert out["kubeconfig"] == "v1alpha10"
    assert "serves none of the NNF API versions v1alpha11, v1alpha10, v1alpha9, v1alpha8" in out["no-nnf"]
    assert out["unreachable"].startswith("cannot reach the Kubernetes API server at http://127.0.0.1:")
    assert out["bad-kubeconfig"].startswith("unable to load the Kubernetes configuration")
