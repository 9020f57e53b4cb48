"""The copy-offload service (CI tier): logic + watcher + token reader, no Flux.

A recording handle takes the replies; Kubernetes is tests/kube_double.py spoken to over HTTP by
the real ``kubernetes`` client.
"""

from __future__ import annotations

import dataclasses
import errno
import time

import pytest
from flux_support import (
    CO_DW,
    PLAIN_DW,
    TOKEN,
    UID,
    Msg,
    drive,
    set_status,
    token_secret,
    workflow,
)
from kube_double import DWS, KubeDouble

WF = "workflows"


def secret_gets(kube: KubeDouble) -> int:
    return kube.count(plural="secrets", verb="get")


# -- token present / absent / late ----------------------------------------------------------


def test_token_present_gives_token_name_namespace_and_env(kube, service):
    kube.put(workflow(11))
    kube.put(token_secret(11))
    svc = service()
    svc.synced()
    kind, _, payload = svc.wait_reply(svc.prepare(11, dw=CO_DW))
    assert kind == "ok"
    assert payload["variables"] == {
        "DW_WORKFLOW_TOKEN": TOKEN, "DW_WORKFLOW_NAME": "fluxjob-11",
        "DW_WORKFLOW_NAMESPACE": "default", "DW_JOB_my_storage": "/mnt/nnf/abc-0",
        "NNF_CONTAINER_PORTS": "5000", "NNF_CONTAINER_LAUNCHER": "rabbit-01"}
    assert secret_gets(kube) == 1
    assert kube.count(plural=WF, verb="get") == 0  # the Workflow came from the watch cache
    assert all(TOKEN not in text for _, text in svc.logs)


def test_token_absent_job_without_copy_offload_proceeds(kube, service):
    kube.put(workflow(12, token=False, dw=PLAIN_DW, env={"DW_JOB_scratch": "/mnt/x"}))
    svc = service()
    svc.synced()
    kind, _, payload = svc.wait_reply(svc.prepare(12, dw=PLAIN_DW))
    assert kind == "ok"
    assert payload["variables"] == {"DW_WORKFLOW_NAME": "fluxjob-12",
                                    "DW_WORKFLOW_NAMESPACE": "default",
                                    "DW_JOB_scratch": "/mnt/x"}
    assert secret_gets(kube) == 0


def test_token_absent_for_copy_offload_job_is_an_error(kube, service):
    kube.put(workflow(13, token=False, dw=CO_DW))
    svc = service()
    svc.synced()
    kind, _, errnum, text = svc.wait_reply(svc.prepare(13, dw=CO_DW))
    assert (kind, errnum) == ("error", errno.ENOENT)
    assert "without status.workflowToken" in text and "fluxjob-13" in text


def test_token_late_answers_on_the_watch_event(kube, service):
    kube.put(workflow(14, state="Setup", ready=False, token=False))
    svc = service()
    svc.synced()
    msg = svc.prepare(14, dw=CO_DW)
    svc.rt.run_queued()
    assert svc.handle.for_msg(msg) == []
    kube.put(token_secret(14))
    kube.modify(DWS, WF, "default", "fluxjob-14", set_status(
        state="PreRun", ready=True, status="Completed",
        workflowToken={"secretName": "fluxjob-14-token", "secretNamespace": "default"}))
    kind, _, payload = svc.wait_reply(msg)
    assert kind == "ok"
    assert payload["variables"]["DW_WORKFLOW_TOKEN"] == TOKEN
    lat = svc.logic.stats()["event-to-reply-ms"]
    assert lat["count"] == 1 and lat["last"] < 1000
    assert secret_gets(kube) == 1


def test_intermediate_states_keep_waiting(kube, service):
    kube.put(workflow(15, state="Setup", ready=False))
    kube.put(token_secret(15))
    svc = service()
    svc.synced()
    msg = svc.prepare(15, dw=CO_DW)
    for state, ready in (("Setup", True), ("DataIn", False), ("DataIn", True),
                         ("PreRun", False)):
        kube.modify(DWS, WF, "default", "fluxjob-15", set_status(state=state, ready=ready))
    kube.modify(DWS, WF, "default", "fluxjob-15", set_status(status="TransientCondition"))
    drive(svc.rt, lambda: svc.rt.watcher.events >= 5)
    svc.rt.run_queued()
    assert svc.handle.for_msg(msg) == []
    kube.modify(DWS, WF, "default", "fluxjob-15",
                set_status(ready=True, status="Completed"))
    assert svc.wait_reply(msg)[0] == "ok"


# -- failures -------------------------------------------------------------------------------


def test_workflow_error_fails_fast(kube, service):
    kube.put(workflow(21, state="Setup", ready=False))
    svc = service(prepare_timeout=30.0)
    svc.synced()
    msg = svc.prepare(21, dw=CO_DW)
    kube.modify(DWS, WF, "default", "fluxjob-21", set_status(
        status="Error", message="DW Directive 1: container profile not found"))
    took = drive(svc.rt, lambda: bool(svc.handle.for_msg(msg)))
    kind, _, errnum, text = svc.handle.one(msg)
    assert (kind, errnum) == ("error", errno.EIO)
    assert "fluxjob-21" in text and "container profile not found" in text
    assert took < 5


def test_timeout_for_copy_offload_job_names_the_state(kube, service):
    kube.put(workflow(22, state="DataIn", ready=False))
    svc = service(prepare_timeout=0.4)
    svc.synced()
    msg = svc.prepare(22, dw=CO_DW)
    took = drive(svc.rt, lambda: bool(svc.handle.for_msg(msg)))
    kind, _, errnum, text = svc.handle.one(msg)
    assert (kind, errnum) == ("error", errno.ETIMEDOUT)
    assert "timed out after 0.4s" in text and "state=DataIn ready=false" in text
    assert 0.3 < took < 3
    assert svc.logic.stats()["counts"]["timeouts"] == 1


def test_timeout_for_job_without_copy_offload_proceeds_without_token(kube, service):
    kube.put(workflow(23, state="DataIn", ready=False, token=False, dw=PLAIN_DW))
    svc = service(prepare_timeout=0.3)
    svc.synced()
    kind, _, payload = svc.wait_reply(svc.prepare(23, dw=PLAIN_DW))
    assert kind == "ok"
    assert payload["variables"] == {"DW_WORKFLOW_NAME": "fluxjob-23",
                                    "DW_WORKFLOW_NAMESPACE": "default"}


def test_missing_workflow_is_answered_at_once_without_a_grace(kube, service):
    svc = service(prepare_timeout=60.0, workflow_grace=0.0)
    svc.synced()
    t0 = time.monotonic()
    plain = svc.prepare(31, dw=PLAIN_DW)
    co = svc.prepare(32, dw=CO_DW)
    assert time.monotonic() - t0 < 30  # at once: not after the 60 s prepare timeout
    assert svc.handle.one(plain) == ("ok", plain, {"variables": {}})
    kind, _, errnum, text = svc.handle.one(co)
    assert (kind, errnum) == ("error", errno.ENOENT)
    assert "fluxjob-32 did not appear within 0s" in text and "coral2_dws" in text


def test_missing_workflow_created_later_is_served_from_the_watch(kube, service):
    kube.put(token_secret(35))
    svc = service(prepare_timeout=60.0, workflow_grace=30.0)
    svc.synced()
    msg = svc.prepare(35, dw=CO_DW)
    svc.settle()
    assert svc.handle.for_msg(msg) == []  # waiting, not "does not exist"
    kube.put(workflow(35))  # flux-coral2 (re)creates it
    kind, _, payload = svc.wait_reply(msg)
    assert kind == "ok" and payload["variables"]["DW_WORKFLOW_TOKEN"] == TOKEN
    assert kube.count(plural=WF, verb="get") == 0


def test_workflow_past_prerun_or_deleted_fails(kube, service):
    kube.put(workflow(33, state="DataIn", ready=False))
    kube.put(workflow(34, state="DataIn", ready=False))
    svc = service()
    svc.synced()
    m33, m34 = svc.prepare(33, dw=CO_DW), svc.prepare(34, dw=CO_DW)
    kube.modify(DWS, WF, "default", "fluxjob-33", set_status(state="Teardown", ready=False))
    kube.remove(DWS, WF, "default", "fluxjob-34")
    drive(svc.rt, lambda: len(svc.handle.replies) == 2)
    assert svc.handle.one(m33)[2:] == (errno.ECANCELED, "Workflow default/fluxjob-33 moved on "
                                       "to Teardown before the job started")
    assert svc.handle.one(m34)[2] == errno.ENOENT


# -- the watch: 410 resync, API errors ------------------------------------------------------


@pytest.mark.parametrize("gone_as_http", [False, True], ids=["error-event", "http-410"])
def test_410_gone_relists_and_catches_up(kube, service, gone_as_http):
    kube.watch_gone_as_http = gone_as_http
    kube.put(workflow(41, state="DataIn", ready=False))
    kube.put(token_secret(41))
    svc = service()
    svc.synced()
    msg = svc.prepare(41, dw=CO_DW)
    lists_before = kube.count(plural=WF, verb="list")
    # Hold the next watch request, cut the open one, change the Workflow and forget the
    # history: the held watch resumes from a version older than the compaction -> 410.
    kube.delay(0.5, path=r"/workflows$", method="GET")
    kube.close_watches()
    kube.modify(DWS, WF, "default", "fluxjob-41", set_status(state="PreRun", ready=True))
    kube.compact()
    kind, _, payload = svc.wait_reply(msg)
    assert kind == "ok" and payload["variables"]["DW_WORKFLOW_TOKEN"] == TOKEN
    assert svc.rt.watcher.resyncs == 1
    assert kube.count(plural=WF, verb="list") == lists_before + 1
    assert svc.logic.synced


def test_api_500s_back_off_then_sync(kube, service):
    kube.put(workflow(51))
    kube.put(token_secret(51))
    kube.fail(500, count=3, path=r"/workflows$")
    svc = service(backoff_min=0.05, backoff_max=1.0)
    msg = svc.prepare(51, dw=CO_DW)
    assert svc.handle.for_msg(msg) == []  # not in sync yet: waits rather than guessing
    t0 = time.monotonic()
    kind, _, payload = svc.wait_reply(msg)
    assert kind == "ok" and payload["variables"]["DW_WORKFLOW_TOKEN"] == TOKEN
    assert time.monotonic() - t0 >= 0.05 + 0.1 + 0.2 - 0.05  # 3 failures, doubling waits
    assert svc.rt.watcher.errors == 3 and "HTTP 500" in svc.rt.watcher.last_error
    levels = [lvl for lvl, text in svc.logs if "retrying in" in text]
    assert levels == [3, 7, 7]  # one error per streak, then debug lines
    assert any("recovered after 3 failed attempt(s)" in text for _, text in svc.logs)


def test_secret_get_500_is_retried_once(kube, service):
    kube.put(workflow(52))
    kube.put(token_secret(52))
    svc = service()
    svc.synced()
    kube.fail(503, count=1, path=r"/secrets/fluxjob-52-token$")
    kind, _, payload = svc.wait_reply(svc.prepare(52, dw=CO_DW))
    assert kind == "ok" and payload["variables"]["DW_WORKFLOW_TOKEN"] == TOKEN
    assert secret_gets(kube) == 2
    assert svc.logic.stats()["kubernetes-gets"] == 2


def test_secret_missing_or_forbidden_is_a_clear_error(kube, service):
    kube.put(workflow(53))
    kube.put(workflow(54))
    kube.put(token_secret(54))
    svc = service()
    svc.synced()
    kube.fail(403, count=1, path=r"/secrets/fluxjob-54-token$", message="forbidden")
    kind, _, errnum, text = svc.wait_reply(svc.prepare(53, dw=CO_DW))
    assert errnum == errno.EIO and "default/fluxjob-53-token" in text and "missing" in text
    kind, _, errnum, text = svc.wait_reply(svc.prepare(54, dw=CO_DW))
    assert errnum == errno.EIO and "needs 'get' on secrets" in text
    assert secret_gets(kube) == 2  # neither is retried


def test_api_down_then_back(kube, service):
    kube.refuse_connections()
    svc = service(backoff_min=0.05, backoff_max=0.1, request_timeout=1.0)
    msg = svc.prepare(55, dw=CO_DW)
    drive(svc.rt, lambda: "unreachable" in svc.logic.lost_reason)
    stats = svc.logic.stats()
    assert stats["synced"] is False and "unreachable" in stats["lost-reason"]
    assert svc.handle.for_msg(msg) == []
    kube.accept_connections()
    kube.put(workflow(55))
    kube.put(token_secret(55))
    assert svc.wait_reply(msg)[0] == "ok"


# -- who may ask, and forgetting ------------------------------------------------------------


def test_only_the_instance_owner_is_answered(kube, service):
    kube.put(workflow(61))
    kube.put(token_secret(61))
    svc = service()
    svc.synced()
    msg = svc.prepare(61, dw=CO_DW, from_owner=False)
    kind, _, errnum, text = svc.handle.one(msg)
    assert (kind, errnum) == ("error", errno.EPERM) and "instance owner" in text
    assert secret_gets(kube) == 0


def test_workflow_of_another_user_is_refused(kube, service):
    kube.put(workflow(62, userid=4242))
    kube.put(token_secret(62))
    svc = service()
    svc.synced()
    kind, _, errnum, text = svc.wait_reply(svc.prepare(62, dw=CO_DW, owner=UID))
    assert (kind, errnum) == ("error", errno.EPERM)
    assert "uid 4242" in text and "uid 1001" in text and TOKEN not in text
    assert secret_gets(kube) == 0


@pytest.mark.parametrize("payload", [None, [], {"id": "x", "userid": 1}, {"id": 5},
                                     {"id": 5, "userid": -1}, {"id": 5, "userid": 1, "dw": 7}])
def test_malformed_prepare_is_rejected(kube, service, payload):
    svc = service()
    msg = Msg("bad")
    svc.logic.prepare(msg, payload, from_owner=True)
    kind, _, errnum, text = svc.handle.one(msg)
    assert (kind, errnum) == ("error", errno.EPROTO) and text.startswith("copy-offload.prepare:")


def test_forget_on_inactive_drops_the_token(kube, service):
    kube.put(workflow(71))
    kube.put(token_secret(71))
    svc = service()
    svc.synced()
    assert svc.wait_reply(svc.prepare(71, dw=CO_DW))[0] == "ok"
    again = svc.prepare(71, dw=CO_DW)  # a repeat (plugin reload) is served from memory
    assert svc.handle.one(again)[2]["variables"]["DW_WORKFLOW_TOKEN"] == TOKEN
    assert secret_gets(kube) == 1
    assert svc.logic.given(71)["DW_WORKFLOW_TOKEN"] == "<redacted>"
    assert svc.logic.stats()["jobs-with-token"] == 1
    svc.logic.forget(71)
    stats = svc.logic.stats()
    assert stats["jobs-with-token"] == 0 and stats["jobs-with-variables"] == 0
    assert svc.logic.given(71) is None
    state = {k: v for k, v in vars(svc.logic).items() if k != "_replier"}
    assert TOKEN not in repr(state)


def test_forget_cancels_a_waiting_request(kube, service):
    kube.put(workflow(72, state="Setup", ready=False))
    svc = service()
    svc.synced()
    msg = svc.prepare(72, dw=CO_DW)
    svc.logic.forget(72)
    assert svc.handle.one(msg)[2] == errno.ECANCELED
    assert svc.logic.stats()["pending"] == 0


# -- config ---------------------------------------------------------------------------------


def test_env_keys_limit_what_status_env_passes(kube, service):
    kube.put(workflow(81))
    kube.put(token_secret(81))
    svc = service(env_keys=("NNF_CONTAINER_*",))
    svc.synced()
    variables = svc.wait_reply(svc.prepare(81, dw=CO_DW))[2]["variables"]
    assert sorted(variables) == ["DW_WORKFLOW_NAME", "DW_WORKFLOW_NAMESPACE",
                                 "DW_WORKFLOW_TOKEN", "NNF_CONTAINER_LAUNCHER",
                                 "NNF_CONTAINER_PORTS"]


def test_api_version_probe_falls_back(kube, service):
    kube.put(workflow(82, version="v1alpha6"))
    kube.put(token_secret(82))
    svc = service(api_versions=("v1alpha99", "v1alpha6"))
    svc.synced()
    assert svc.rt.watcher.version == "v1alpha6"
    assert svc.wait_reply(svc.prepare(82, dw=CO_DW))[0] == "ok"


def test_reconfigure_namespace_starts_a_new_watch(kube, service):
    kube.put(workflow(83, namespace="other"))
    kube.put(token_secret(83, namespace="other"))
    svc = service(workflow_grace=0.0)  # absent from "default": answered at once
    svc.synced()
    assert svc.handle.one(svc.prepare(83, dw=PLAIN_DW))[2] == {"variables": {}}
    svc.logic.forget(83)
    old = svc.rt.watcher
    svc.rt.reconfigure(dataclasses.replace(svc.cfg, namespace="other"))
    assert svc.rt.watcher is not old and old.stopped
    svc.synced()
    variables = svc.wait_reply(svc.prepare(83, dw=CO_DW))[2]["variables"]
    assert variables["DW_WORKFLOW_NAMESPACE"] == "other"
    assert variables["DW_WORKFLOW_TOKEN"] == TOKEN
