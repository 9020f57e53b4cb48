"""The copy-offload service restarted while jobs wait (CI tier: logic + watcher + token reader,
no Flux; Kubernetes is tests/kube_double.py over HTTP).

A restarted service keeps nothing in memory: it re-learns every Workflow from its first list
and answers each ``prepare`` it is sent from that cache and the watch. What these tests pin is
the service's half: a prepare that reaches the new process (jobs waiting when it went down,
sent again) gets the job's variables, whether its Workflow turned ready while the service was
down or after it came back. The other half, sending the prepare again, is the jobtap plugin's
(see the report on issue 6: it does not re-send today).
"""

from __future__ import annotations

from typing import Any

import pytest
from flux_support import (
    CO_DW,
    ENV,
    TOKEN,
    drive,
    set_status,
    token_secret,
    workflow,
)
from kube_double import DWS, KubeDouble

WF = "workflows"


@pytest.fixture
def services(service: Any) -> Any:
    """Successive service processes, each started and synced with the Workflows."""

    def make() -> Any:
        svc = service(prepare_timeout=10.0)
        svc.synced()
        return svc

    return make


def expected(jobid: int) -> dict:
    return {"DW_WORKFLOW_TOKEN": TOKEN, "DW_WORKFLOW_NAME": f"fluxjob-{jobid}",
            "DW_WORKFLOW_NAMESPACE": "default", **ENV}


def make_ready(kube: KubeDouble, jobid: int) -> None:
    kube.modify(DWS, WF, "default", f"fluxjob-{jobid}",
                set_status(state="PreRun", ready=True, status="Completed"))


def test_jobs_waiting_across_a_restart_get_their_variables(kube, services):
    jobs = (31, 32, 33)
    for jobid in jobs:
        kube.put(workflow(jobid, state="DataIn", ready=False))
        kube.put(token_secret(jobid))
    old = services()
    waiting = {jobid: old.prepare(jobid, dw=CO_DW) for jobid in jobs}
    old.settle()
    assert old.handle.replies == []  # all three wait on their Workflows
    assert old.rt.logic.stats()["pending"] == 3

    old.close()  # the process is gone: its cache, pending requests and watch with it
    make_ready(kube, 31)  # turns ready while no service runs

    new = services()
    assert new.rt.logic.cache.keys() >= {f"fluxjob-{j}" for j in jobs}  # re-learnt by the list
    again = {jobid: new.prepare(jobid, dw=CO_DW) for jobid in jobs}
    drive(new.rt, lambda: bool(new.handle.for_msg(again[31])))
    assert new.handle.one(again[31]) == ("ok", again[31], {"variables": expected(31)})
    assert new.handle.for_msg(again[32]) == [] and new.handle.for_msg(again[33]) == []

    make_ready(kube, 32)
    make_ready(kube, 33)
    drive(new.rt, lambda: all(new.handle.for_msg(again[j]) for j in (32, 33)))
    for jobid in (32, 33):
        assert new.handle.one(again[jobid]) == ("ok", again[jobid], {"variables": expected(jobid)})
    assert all(not old.handle.for_msg(m) for m in waiting.values())  # nothing from the dead one
    assert kube.count(plural="secrets", verb="get") == 3  # one Secret read per job, after restart
    assert kube.count(plural=WF, verb="get") == 0  # Workflows come from the list and the watch
    assert all(TOKEN not in text for svc in (old, new) for _, text in svc.logs)


def test_job_answered_before_a_restart_is_answered_again_after(kube, services):
    kube.put(workflow(34))
    kube.put(token_secret(34))
    old = services()
    first = old.prepare(34, dw=CO_DW)
    drive(old.rt, lambda: bool(old.handle.for_msg(first)))
    assert old.handle.one(first)[2] == {"variables": expected(34)}
    old.close()

    new = services()
    again = new.prepare(34, dw=CO_DW)
    drive(new.rt, lambda: bool(new.handle.for_msg(again)))
    assert new.handle.one(again) == ("ok", again, {"variables": expected(34)})
    new.rt.logic.forget(34)  # job.state.inactive reaching the new process: token dropped
    assert new.rt.logic.given(34) is None


def test_restarted_service_still_fails_a_workflow_in_error(kube, services):
    """A restart must not turn a broken Workflow into a silent wait."""
    kube.put(workflow(35, state="DataIn", ready=False))
    kube.put(token_secret(35))
    old = services()
    old.prepare(35, dw=CO_DW)
    old.settle()
    old.close()
    kube.modify(DWS, WF, "default", "fluxjob-35",
                set_status(status="Error", message="data movement failed"))

    new = services()
    msg = new.prepare(35, dw=CO_DW)
    drive(new.rt, lambda: bool(new.handle.for_msg(msg)))
    kind, _, _errnum, text = new.handle.one(msg)
    assert kind == "error" and "fluxjob-35" in text
    assert new.rt.logic.stats()["pending"] == 0
