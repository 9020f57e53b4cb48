"""Kubernetes calls per request: planning reads come from watch-fed caches, the Workflow does not."""

from __future__ import annotations

import copy

from copy_offload.server.nnf.driver import WATCHED_KINDS
from kube_double import DWS
from nnf_support import run, submit_error, until, wait_done


def _calls(kube):
    """(verb, plural, subresource) of every logged call except discovery and the caches' watches."""
    return [(e.verb, e.plural, e.subresource or "") for e in kube.log() if e.verb not in ("discovery", "watch")]


def _copy_and_wait(driver, world, src, dest):
    async def go():
        name = await driver.submit(world.request(src, dest))
        await until(lambda: not driver.active(), 30, "the copy to end")
        return name
    return go()


def test_nnf_steady_state_costs_four_calls(world):
    gsrc, lsrc = world.source_tree("g"), world.source_tree("l", lustre=True)
    world.set_profile("default", progressIntervalSeconds=60)  # no progress write, however slow this machine is today

    async def scenario():
        driver = await world.driver()
        assert sum(len(c) for c in driver.reads.caches.values()) == WATCHED_KINDS  # the connection pool has room for them
        await _copy_and_wait(driver, world, gsrc, world.lus + "/warm")
        per = {}
        for label, src in (("gfs2", gsrc), ("lustre", lsrc)):
            world.kube.clear_log()
            for i in range(3):
                await _copy_and_wait(driver, world, src, world.lus + "/%s-%d" % (label, i))
            per[label] = _calls(world.kube)
        await driver.close()
        return per

    per = run(scenario(), timeout=60)
    expected = [("get", "workflows", ""), ("create", "nnfdatamovements", ""), ("update", "nnfdatamovements", "status"),
                ("update", "nnfdatamovements", "status")] * 3
    assert per["gfs2"] == expected
    assert per["lustre"] == expected


def test_nnf_cached_reads_keep_the_reference_semantics(world):
    src = world.source_tree("s")
    kube = world.kube

    async def scenario():
        driver = await world.driver()
        out = {}
        world.workflow_status(state="PostRun")  # the Workflow is read at the moment of each request
        out["postrun"] = (await submit_error(driver, world.request(src, world.lus + "/a"))).message
        world.workflow_status(state="PreRun")
        # a profile change reaches the next request (the cache follows its watch)
        world.set_profile("default", createDestDir=False)
        profiles = driver.reads.caches[driver.kinds.nnfdatamovementprofiles][0]
        await until(lambda: profiles.get("nnf-system", "default")["data"]["createDestDir"] is False, 10, "the profile watch event")
        unprepared = await driver.submit(world.request(src, world.lus + "/missing-parent/x"))
        out["no-prep"] = (await wait_done(driver, unprepared))["status"]
        world.set_profile("default", createDestDir=True)
        # a compute that appears after startup: its ClientMount reaches the cache, or is read directly
        cm = copy.deepcopy(kube.get(DWS, "clientmounts", "compute-01", "default-fluxjob-1234-0-computes"))
        cm["metadata"] = {"name": cm["metadata"]["name"], "namespace": "compute-02", "labels": cm["metadata"]["labels"]}
        kube.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "compute-02"}})
        kube.put(cm)
        kube.modify(DWS, "systemconfigurations", "default", "default",
                    lambda o: o["spec"]["storageNodes"][0]["computesAccess"].append({"name": "compute-02", "index": 1}))
        late = await driver.submit(world.request(src, world.lus + "/late", computeName="compute-02"))
        out["late"] = (await wait_done(driver, late))["status"]
        # a refusal made from the cache is asked again of the API server before it is answered
        kube.clear_log()
        out["unknown compute"] = (await submit_error(driver, world.request(src, world.lus + "/b", computeName="compute-77"))).message
        out["asked"] = [c for c in _calls(kube) if c[1] == "clientmounts"]
        # broken watches relist, and requests go on meanwhile
        kube.close_watches()
        again = await driver.submit(world.request(src, world.lus + "/again"))
        out["again"] = (await wait_done(driver, again))["status"]
        world.set_profile("default", slots=3)  # seen through the resumed watch
        await until(lambda: profiles.get("nnf-system", "default")["data"]["slots"] == 3, 20, "the resumed watch")
        # history compacted under a broken watch: 410 Expired, so every cache lists again
        world.set_profile("default", slots=4)
        kube.compact()
        kube.close_watches()
        await until(lambda: all(c.relists >= 2 and c.synced.is_set() for cs in driver.reads.caches.values() for c in cs), 20, "relists")
        out["after relist"] = profiles.get("nnf-system", "default")["data"]["slots"]
        await driver.close()
        return out

    out = run(scenario(), timeout=90)
    assert out["postrun"] == "workflow must be in 'PreRun' state and 'Completed' status"
    # createDestDir off: nothing made the missing parent, so the copy itself failed
    assert out["no-prep"] == "failed"
    assert out["late"] == "success" and out["again"] == "success"
    assert out["unknown compute"] == "no client mounts found for node 'compute-77'"
    assert ("list", "clientmounts", "") in out["asked"]
    assert out["after relist"] == 4


def test_nnf_a_kind_it_may_not_watch_is_read_directly(world):
    """An older ClusterRole without list/watch on a kind: that cache gives up, reads go direct."""
    src = world.source_tree("rbac")
    world.kube.fail(403, count=10**6, method="GET", path="/systemconfigurations$",
                    message='systemconfigurations.dataworkflowservices.github.io is forbidden: cannot list resource')

    async def scenario():
        driver = await world.driver()
        cache = driver.reads.caches[driver.kinds.systemconfigurations][0]
        world.kube.clear_log()
        name = await driver.submit(world.request(src, world.lus + "/rbac-out"))
        doc = await wait_done(driver, name)
        calls = _calls(world.kube)
        await driver.close()
        return cache.given_up, doc, calls

    given_up, doc, calls = run(scenario())
    assert given_up is not None and given_up.startswith("403")
    assert doc["status"] == "success"
    assert ("get", "systemconfigurations", "") in calls and ("get", "workflows", "") in calls


def test_nnf_an_api_server_that_does_not_stream_watches(world):
    """Answers to ?watch=1 that are not watch events: that cache gives up after three tries."""
    world.kube.fail(200, count=10**6, method="GET", path="/lustrefilesystems$", message="not a watch stream")
    src = world.source_tree("nw")

    async def scenario():
        driver = await world.driver(cache_sync_wait=0.5)
        cache = driver.reads.caches[driver.kinds.lustrefilesystems][0]
        await until(lambda: cache.given_up is not None, 30, "the cache to give up")
        doc = await wait_done(driver, await driver.submit(world.request(src, world.lus + "/nw-out")))
        await driver.close()
        return cache.given_up, doc

    given_up, doc = run(scenario(), timeout=60)
    assert "not a stream of watch events" in given_up and doc["status"] == "success"
