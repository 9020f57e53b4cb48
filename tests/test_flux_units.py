"""Pure pieces of the Flux side: config, directives, Workflow view, CLI helpers, call queue,
and the service logic on a virtual clock (no threads, no sockets)."""

from __future__ import annotations

import dataclasses
import errno
import json
import threading
import time
from typing import Any, List, Optional

import pytest
from copy_offload.flux.callqueue import CallQueue
from copy_offload.flux.cli import find_env_event, format_stats
from copy_offload.flux.config import ConfigError, ServiceConfig, parse_config
from copy_offload.flux.directives import (
    DirectiveError,
    asks_copy_offload,
    requires,
    split_directives,
)
from copy_offload.flux.kube import KubeError
from copy_offload.flux.logic import TokenService, redact
from copy_offload.flux.workflow import WorkflowView, jobid_of, workflow_name
from flux_support import CO_DW, PLAIN_DW, TOKEN, Msg, RecordingHandle, workflow

# -- config ---------------------------------------------------------------------------------


def test_config_defaults_without_a_table():
    assert parse_config(None) == ServiceConfig()
    assert parse_config({"other": {}}).namespace == "default"


def test_config_reads_every_key():
    cfg = parse_config({"copy-offload": {
        "kubeconfig": "/etc/k", "namespace": "ns", "prepare-timeout": 5,
        "api-group": "g.example", "api-versions": ["v2"], "env-keys": ["NNF_*"],
        "watch-timeout": 10, "request-timeout": 2, "backoff-min": 1, "backoff-max": 4,
        "secret-retries": 2}})
    assert cfg == ServiceConfig(kubeconfig="/etc/k", namespace="ns", prepare_timeout=5.0,
                                api_group="g.example", api_versions=("v2",),
                                env_keys=("NNF_*",), watch_timeout=10, request_timeout=2.0,
                                backoff_min=1.0, backoff_max=4.0, secret_retries=2)
    assert cfg.env_allowed("NNF_CONTAINER_PORTS") and not cfg.env_allowed("DW_JOB_x")


@pytest.mark.parametrize("table, words", [
    ({"namspace": "x"}, "unknown key(s): namspace"),
    ({"prepare-timeout": "10"}, "prepare-timeout must be a number"),
    ({"prepare-timeout": True}, "prepare-timeout must be a number"),
    ({"prepare-timeout": 0}, "prepare-timeout must be at least 0.1"),
    ({"watch-timeout": 1.5}, "watch-timeout must be a whole number"),
    ({"namespace": ""}, "namespace must not be empty"),
    ({"namespace": 3}, "namespace must be a string"),
    ({"api-versions": []}, "api-versions must be a non-empty list of strings"),
    ({"env-keys": "NNF_*"}, "env-keys must be a non-empty list of strings"),
    ({"backoff-min": 5, "backoff-max": 1}, "backoff-max must not be below backoff-min"),
])
def test_config_errors_name_the_key(table, words):
    with pytest.raises(ConfigError) as err:
        parse_config({"copy-offload": table})
    assert words in str(err.value)


def test_config_table_must_be_a_table():
    with pytest.raises(ConfigError, match="must be a table"):
        parse_config({"copy-offload": [1]})


# -- directives -----------------------------------------------------------------------------


def test_one_string_may_hold_several_directives():
    joined = " ".join(CO_DW)
    assert split_directives(joined) == CO_DW
    assert split_directives(CO_DW) == CO_DW


def test_requires_words_and_container():
    d = ["#DW jobdw name=a requires=user-container-auth,copy-offload", "#DW container name=c"]
    assert requires(d) == {"user-container-auth", "copy-offload"}
    assert asks_copy_offload(d)
    assert not asks_copy_offload(PLAIN_DW)
    assert not asks_copy_offload(None)


@pytest.mark.parametrize("dw", [7, {"a": 1}, ["#DW jobdw", 3], None])
def test_directives_of_the_wrong_type(dw):
    with pytest.raises(DirectiveError, match="string or a list of strings"):
        split_directives(dw)


# -- Workflow view --------------------------------------------------------------------------


def test_workflow_view_reads_the_fields_it_needs():
    view = WorkflowView.from_raw(workflow(1234))
    assert (view.name, view.namespace, view.state, view.ready) == \
        ("fluxjob-1234", "default", "PreRun", True)
    assert view.token_ref == ("fluxjob-1234-token", "default")
    assert view.user_id == 1001 and view.at_prerun_ready and not view.failed
    assert view.describe() == "state=PreRun ready=true status=Completed"


def test_workflow_view_tolerates_odd_objects():
    view = WorkflowView.from_raw({"metadata": {"name": "fluxjob-1"},
                                  "status": {"env": {"A": "1", "B": 2}, "ready": "yes",
                                             "workflowToken": {}}, "spec": {"userID": True}})
    assert view.env == (("A", "1"),) and view.ready is False
    assert view.token_ref is None and view.user_id is None


def test_names():
    assert workflow_name(42) == "fluxjob-42"
    assert jobid_of("fluxjob-42") == 42
    assert jobid_of("fluxjob-x") is None and jobid_of("other-42") is None


# -- CLI helpers ----------------------------------------------------------------------------


def test_find_env_event_takes_the_last_one():
    log = "\n".join([
        '{"timestamp": 1, "name": "submit", "context": {}}',
        '{"timestamp": 2, "name": "copy-offload-env", "context": {"variables": {"A": "1"}}}',
        "not json",
        '{"timestamp": 3, "name": "copy-offload-env", '
        '"context": {"variables": {"DW_WORKFLOW_TOKEN": "t", "B": 2}}}'])
    assert find_env_event(log) == {"DW_WORKFLOW_TOKEN": "t"}
    assert find_env_event('{"name": "start"}') is None
    assert redact({"DW_WORKFLOW_TOKEN": "t", "X": "y"}) == {"DW_WORKFLOW_TOKEN": "<redacted>",
                                                             "X": "y"}


def test_format_stats_is_readable():
    text = format_stats({"synced": False, "lost-reason": "HTTP 500: boom",
                         "watch": {"api-version": "v1alpha7", "errors": 2,
                                   "last-error": "HTTP 500: boom"},
                         "counts": {"requests": 3}, "event-to-reply-ms": {"count": 0}})
    assert "in sync:            no (HTTP 500: boom)" in text
    assert "last watch error:   HTTP 500: boom" in text


# -- call queue -----------------------------------------------------------------------------


def test_call_queue_wakes_the_loop_and_keeps_order():
    q = CallQueue()
    seen: List[int] = []
    assert not q.wait(0.01)
    t = threading.Thread(target=lambda: [q.post(seen.append, i) for i in range(100)])
    t.start()
    t.join()
    assert q.wait(1.0)
    assert q.drain() == 100 and seen == list(range(100))
    assert not q.wait(0.01)
    q.close()
    q.post(seen.append, 1)  # after close: dropped, no error
    assert len(seen) == 100


# -- the logic on a virtual clock -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Reader:
    """Records Secret reads; the test completes them with ``finish``."""

    def __init__(self) -> None:
        self.calls: List[tuple] = []
        self.gets = 0

    def read(self, name: str, namespace: str, done: Any) -> None:
        self.gets += 1
        self.calls.append((name, namespace, done))

    def finish(self, token: Optional[str], error: Optional[KubeError] = None) -> None:
        _, _, done = self.calls.pop(0)
        done(token, error)


@pytest.fixture
def logic():
    clock, handle, reader = Clock(), RecordingHandle(), Reader()
    svc = TokenService(ServiceConfig(prepare_timeout=30.0), handle, clock=clock)
    svc.attach(1, reader, dict)
    svc.clock, svc.handle, svc.reader = clock, handle, reader
    return svc


def prepare(svc: TokenService, jobid: int, dw: Any = CO_DW) -> Msg:
    msg = Msg(str(jobid))
    svc.prepare(msg, {"id": jobid, "userid": 1001, "dw": dw}, from_owner=True)
    return msg


def test_deadline_is_exact_on_virtual_time(logic):
    logic.on_synced(1, [workflow(5, state="Setup", ready=False)], "v1alpha7")
    msg = prepare(logic, 5)
    assert logic.next_deadline() == 130.0
    logic.clock.now = 129.9
    logic.expire()
    assert logic.handle.replies == []
    logic.clock.now = 130.0
    logic.expire()
    assert logic.handle.one(msg)[2] == errno.ETIMEDOUT
    assert logic.next_deadline() is None


def test_one_secret_read_serves_every_waiter_of_a_workflow(logic):
    logic.on_synced(1, [workflow(6, state="Setup", ready=False)], "v1alpha7")
    first, second = prepare(logic, 6), Msg("again")
    logic.prepare(second, {"id": 6, "userid": 1001}, from_owner=True)
    logic.on_event(1, "MODIFIED", workflow(6), time.monotonic())
    assert len(logic.reader.calls) == 1
    logic.reader.finish(TOKEN)
    for msg in (first, second):
        assert logic.handle.one(msg)[2]["variables"]["DW_WORKFLOW_TOKEN"] == TOKEN


def test_events_of_an_old_generation_are_ignored(logic):
    logic.on_synced(0, [workflow(7)], "v1alpha7")
    assert not logic.synced
    logic.on_synced(1, [], "v1alpha7")
    logic.on_event(0, "ADDED", workflow(7), 0.0)
    assert logic.cache == {}


def test_a_lost_watch_defers_absent_answers(logic):
    logic.on_synced(1, [], "v1alpha7")
    logic.on_lost(1, "HTTP 500: boom")
    msg = prepare(logic, 8)
    assert logic.handle.replies == []
    logic.clock.now += 30
    logic.expire()
    kind, _, errnum, text = logic.handle.one(msg)
    assert errnum == errno.ETIMEDOUT and "not in sync" in text and "HTTP 500: boom" in text


def test_forget_during_the_secret_read_keeps_no_token(logic):
    logic.on_synced(1, [workflow(9)], "v1alpha7")
    msg = prepare(logic, 9)
    assert len(logic.reader.calls) == 1
    logic.forget(9)
    assert logic.handle.one(msg)[2] == errno.ECANCELED
    logic.reader.finish(TOKEN)  # the GET comes back after the job went inactive
    assert logic.handle.for_msg(msg) == [logic.handle.replies[0]]
    assert logic.stats()["jobs-with-token"] == 0 and logic.given(9) is None


# -- a Workflow that does not exist yet: waited for within workflow-grace ---------------------


def with_grace(logic: TokenService, grace: float) -> TokenService:
    logic.cfg = dataclasses.replace(logic.cfg, workflow_grace=grace)
    logic.on_synced(1, [], "v1alpha7")
    return logic


def test_missing_workflow_that_appears_within_the_grace_is_served(logic):
    msg = prepare(with_grace(logic, 10.0), 40)
    assert logic.handle.replies == [] and logic.next_deadline() == 110.0
    logic.clock.now = 105.0
    logic.on_event(1, "ADDED", workflow(40), 105.0)
    logic.reader.finish(TOKEN)
    assert logic.handle.one(msg)[2]["variables"]["DW_WORKFLOW_TOKEN"] == TOKEN
    assert logic.next_deadline() is None


def test_missing_workflow_fails_when_the_grace_ends_naming_it_and_what_to_check(logic):
    co, plain = prepare(with_grace(logic, 10.0), 41), prepare(logic, 42, dw=PLAIN_DW)
    logic.clock.now = 109.9
    logic.expire()
    assert logic.handle.replies == []
    logic.clock.now = 110.0
    logic.expire()
    kind, _, errnum, text = logic.handle.one(co)
    assert (kind, errnum) == ("error", errno.ENOENT)
    assert "Workflow default/fluxjob-41 did not appear within 10s" in text
    assert "workflow-grace" in text and "coral2_dws" in text
    assert "kubectl get workflows.dataworkflowservices.github.io -n default fluxjob-41" in text
    assert logic.handle.one(plain) == ("ok", plain, {"variables": {}})  # asked for nothing
    assert logic.next_deadline() is None  # the 30 s timeouts are no longer armed


def test_a_deleted_workflow_fails_at_once_without_a_grace(logic):
    logic.cfg = dataclasses.replace(logic.cfg, workflow_grace=10.0)
    logic.on_synced(1, [workflow(43, state="Setup", ready=False)], "v1alpha7")
    msg = prepare(logic, 43)
    logic.on_event(1, "DELETED", workflow(43, state="Setup", ready=False), 101.0)
    kind, _, errnum, text = logic.handle.one(msg)
    assert errnum == errno.ENOENT and "fluxjob-43 of job 43 was deleted" in text


def test_zero_grace_answers_a_missing_workflow_at_once(logic):
    msg = prepare(with_grace(logic, 0.0), 44)
    assert logic.handle.one(msg)[2] == errno.ENOENT


def test_stats_name_no_file_for_guests(logic):
    logic.cfg = dataclasses.replace(logic.cfg, kubeconfig="/etc/flux/system/kubeconfig")
    assert logic.stats()["config"]["kubeconfig"] == "/etc/flux/system/kubeconfig"
    guest = json.dumps(logic.stats(files=False))
    assert "kubeconfig" not in guest and "/etc/flux" not in guest


def test_workflow_grace_is_parsed_and_checked():
    assert parse_config({"copy-offload": {"workflow-grace": 5}}).workflow_grace == 5.0
    assert parse_config(None).workflow_grace == 60.0
    with pytest.raises(ConfigError, match="workflow-grace must be at least 0"):
        parse_config({"copy-offload": {"workflow-grace": -1}})


# -- the memcheck log reader of the real-Flux valgrind mode ---------------------------------

VALGRIND_LOG = """==77== Memcheck, a memory error detector
==77== Command: /opt/flux/libexec/flux/cmd/flux-broker -c/tmp/conf
==77==
==77== Thread 15 job-manager:
==77== Invalid read of size 1
==77==    at 0xED678DA: prolog_done (copy-offload.c:175)
==77==    by 0xED67A29: prepare_failed (copy-offload.c:204)
==77==  Address 0x1216f45e is 62 bytes inside a block of size 64 free'd
==77==    at 0x484417B: free (vg_replace_malloc.c:872)
==77==    by 0xED678B8: prep_destroy (copy-offload.c:168)
==77==
==77== Conditional jump or move depends on uninitialised value(s)
==77==    at 0x4A1B2C3: zhashx_lookup (zhashx.c:120)
==77==
==77== HEAP SUMMARY:
==77==     in use at exit: 59,822 bytes in 162 blocks
==77==
==77== ERROR SUMMARY: 2 errors from 2 contexts (suppressed: 0 from 0)
"""


def test_memcheck_reader_keeps_only_reports_that_name_our_plugins():
    from flux_support import memcheck_errors

    errors = memcheck_errors(VALGRIND_LOG)
    assert len(errors) == 1
    assert "Invalid read of size 1" in errors[0] and "prep_destroy" in errors[0]
    assert memcheck_errors(VALGRIND_LOG.replace("copy-offload.c", "other.c")) == []
    assert memcheck_errors("==5== Memcheck, a memory error detector\n==5== \n"
                           "==5== ERROR SUMMARY: 0 errors from 0 contexts\n") == []


def test_a_secret_read_in_flight_across_a_reconfigure_is_read_again_not_failed(logic):
    logic.on_synced(1, [workflow(50)], "v1alpha7")
    msg = prepare(logic, 50)
    old_reader, new_reader = logic.reader, Reader()
    assert len(old_reader.calls) == 1
    logic.attach(2, new_reader, dict)  # new Kubernetes settings: the old client is closed
    old_reader.finish(None, KubeError("Kubernetes API unreachable: client closed"))
    assert logic.handle.for_msg(msg) == []  # not failed by the old client's error
    logic.on_synced(2, [workflow(50)], "v1alpha7")
    assert len(new_reader.calls) == 1
    new_reader.finish(TOKEN)
    assert logic.handle.one(msg)[2]["variables"]["DW_WORKFLOW_TOKEN"] == TOKEN
