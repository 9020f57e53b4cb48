"""Real Flux: jobs in a ``flux start`` instance get their copy-offload variables (or a clear error).

Without flux-coral2 there is nobody to create Workflows, so each test puts the job's Workflow
(and token Secret) into the Kubernetes double itself, holding the job (urgency 0) until it is
there when the test needs it to exist before RUN.
"""

from __future__ import annotations

import json
import os
import time
import uuid

from flux_support import (
    CO_DW,
    PLAIN_DW,
    assert_job_got_variables,
    env_of,
    set_status,
    token_secret,
    workflow,
)
from kube_double import DWS

UID = os.getuid()
CO = " ".join(CO_DW)
PLAIN = " ".join(PLAIN_DW)


def names(events: list) -> list:
    return [e["name"] for e in events]


def test_non_dw_job_is_unaffected(instance):
    job = instance.submit("printenv")
    out = instance.attach(job)
    assert out.returncode == 0
    assert not [k for k in env_of(out.stdout) if k.startswith("DW_")]
    events = names(instance.eventlog(job))
    assert "prolog-start" not in events and "copy-offload-env" not in events


def test_dw_job_with_token_gets_variables_in_its_tasks(instance, kube):
    token = f"tok-{uuid.uuid4().hex}"
    job = instance.submit("printenv", dw=CO, hold=True)
    jobid = instance.decimal(job)
    kube.put(token_secret(jobid, token=token))
    instance.put_workflow(workflow(jobid, userid=UID))
    instance.release(job)
    out = instance.attach(job)
    assert out.returncode == 0, out.stderr
    assert_job_got_variables(out.stdout, jobid, token)
    events = names(instance.eventlog(job))
    assert events.index("copy-offload-env") < events.index("prolog-finish") < events.index("start")
    shown = instance.flux("copy-offload", "env", job).stdout
    assert "DW_WORKFLOW_TOKEN=<redacted>" in shown and token not in shown
    assert token not in instance.flux("dmesg").stdout
    assert token not in instance.broker_log()


def test_token_arriving_after_run_is_delivered(instance, kube):
    token = f"late-{uuid.uuid4().hex}"
    job = instance.submit("printenv", "DW_WORKFLOW_TOKEN", dw=CO, hold=True)
    jobid = instance.decimal(job)
    instance.put_workflow(workflow(jobid, userid=UID, state="Setup", ready=False, token=False))
    instance.release(job)
    deadline = time.monotonic() + 10
    while "prolog-start" not in names(instance.eventlog(job)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    kube.put(token_secret(jobid, token=token))
    kube.modify(DWS, "workflows", "default", f"fluxjob-{jobid}", set_status(
        state="PreRun", ready=True,
        workflowToken={"secretName": f"fluxjob-{jobid}-token", "secretNamespace": "default"}))
    out = instance.attach(job)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == token


def test_copy_offload_without_container_is_rejected_at_submit(instance):
    bad = instance.flux("submit", "--setattr=system.dw=#DW jobdw type=xfs capacity=1GiB "
                        "name=s requires=copy-offload", "true", check=False)
    assert bad.returncode != 0
    assert "requires=copy-offload needs a '#DW container' directive" in bad.stderr
    wrong = instance.flux("submit", "--setattr=system.dw=[1, 2]", "true", check=False)
    assert wrong.returncode != 0
    assert "attributes.system.dw must be a string or a list of strings" in wrong.stderr


def test_workflow_without_token_gives_a_job_without_one(instance, kube):
    job = instance.submit("printenv", dw=PLAIN, hold=True)
    jobid = instance.decimal(job)
    instance.put_workflow(workflow(jobid, userid=UID, token=False, dw=PLAIN_DW,
                      env={"DW_JOB_scratch": "/mnt/nnf/x-0"}))
    instance.release(job)
    out = instance.attach(job)
    assert out.returncode == 0, out.stderr
    env = env_of(out.stdout)
    assert "DW_WORKFLOW_TOKEN" not in env
    assert env["DW_WORKFLOW_NAME"] == f"fluxjob-{jobid}"
    assert env["DW_JOB_scratch"] == "/mnt/nnf/x-0"


def test_workflow_never_ready_gives_an_exception(instance, kube):
    job = instance.submit("true", dw=CO, hold=True)
    jobid = instance.decimal(job)
    instance.put_workflow(workflow(jobid, userid=UID, state="Setup", ready=False))
    instance.release(job)
    out = instance.attach(job)
    assert out.returncode != 0
    exc = [e for e in instance.eventlog(job) if e["name"] == "exception"]
    assert len(exc) == 1 and exc[0]["context"]["type"] == "copy-offload"
    note = exc[0]["context"]["note"]
    assert "timed out after 2s waiting for PreRun" in note and "state=Setup" in note
    assert "start" not in names(instance.eventlog(job))


def test_only_the_instance_owner_may_prepare(instance):
    guest = {"FLUX_HANDLE_ROLEMASK": "0x2", "FLUX_HANDLE_USERID": str(UID + 4242)}
    code = ("import flux, sys\n"
            "try:\n"
            "    flux.Flux().rpc('copy-offload.prepare', {'id': 5, 'userid': 1}).get()\n"
            "except OSError as e:\n"
            "    print(e.errno, e.strerror)\n")
    out = instance.flux("python", "-c", code, env=guest).stdout
    assert out.startswith("1 ") and "instance owner" in out  # EPERM


def test_status_reports_the_watch(instance):
    stats = instance.stats()
    assert stats["synced"] is True
    assert stats["watch"]["api-version"] == "v1alpha7"
    assert stats["counts"]["requests"] >= 1
    human = instance.flux("copy-offload", "status").stdout
    assert "in sync:            yes" in human


def test_service_down_gives_an_exception_then_recovers(instance, kube):
    instance.flux("module", "remove", "copy-offload")
    try:
        job = instance.submit("true", dw=CO)
        out = instance.attach(job)
        assert out.returncode != 0
        exc = [e for e in instance.eventlog(job) if e["name"] == "exception"]
        assert "copy-offload service is not running" in exc[0]["context"]["note"]
        plain = instance.submit("printenv", dw=PLAIN)
        out = instance.attach(plain)  # asked for nothing: proceeds, with a warning logged
        assert out.returncode == 0 and "DW_WORKFLOW_NAME" not in out.stdout
        assert "proceeds without copy-offload variables" in instance.flux("dmesg").stdout
    finally:
        instance.flux("module", "load", "copy-offload")
    instance.wait_service()
    job = instance.submit("printenv", dw=CO, hold=True)
    jobid = instance.decimal(job)
    kube.put(token_secret(jobid))
    instance.put_workflow(workflow(jobid, userid=UID))
    instance.release(job)
    assert "DW_WORKFLOW_TOKEN=" in instance.attach(job).stdout
    assert json.loads(instance.flux("copy-offload", "status", "--json").stdout)["synced"]


def test_config_reload_applies_and_rejects(instance, kube):
    instance.write_config("prepare-timeout = 2.0\nenv-keys = [\"NNF_CONTAINER_*\"]\n")
    try:
        instance.flux("config", "reload")
        job = instance.submit("printenv", dw=PLAIN, hold=True)
        jobid = instance.decimal(job)
        instance.put_workflow(workflow(jobid, userid=UID, token=False, dw=PLAIN_DW))
        instance.release(job)
        env = env_of(instance.attach(job).stdout)
        assert env["NNF_CONTAINER_PORTS"] == "5000" and "DW_JOB_my_storage" not in env
        instance.write_config("prepare-timeout = \"soon\"\n")
        bad = instance.flux("config", "reload", check=False)
        assert bad.returncode != 0
        assert "prepare-timeout must be a number" in bad.stderr
    finally:
        instance.write_config("prepare-timeout = 2.0\n")
        instance.flux("config", "reload")
    assert instance.stats()["config"]["env-keys"] == ["*"]


def test_shell_plugin_without_the_jobtap_plugin_fails_the_job_clearly(instance):
    so = os.path.join(instance.plugins, "copy-offload.so")
    bad = instance.flux("jobtap", "load", so, "timeout=soon", check=False)
    assert bad.returncode != 0
    assert "conf takes only timeout=SECONDS" in instance.flux("dmesg").stdout
    instance.flux("jobtap", "remove", "copy-offload.so")
    try:
        t0 = time.monotonic()
        job = instance.submit("true", dw=PLAIN)
        out = instance.attach(job)
        assert out.returncode != 0
        assert "no copy-offload-env event before the job's start event" in out.stderr
        assert "is the copy-offload jobtap plugin loaded" in out.stderr
        assert time.monotonic() - t0 < 10  # no waiting out the shell plugin's timeout
        bad = instance.submit("-o", "copy-offload.timeout=-1", "true", dw=PLAIN)
        assert "copy-offload.timeout must be a positive number" in instance.attach(bad).stderr
    finally:
        instance.flux("jobtap", "load", so, f"timeout={instance.jobtap_timeout}")
    assert "timeout" in instance.flux("jobtap", "query", "copy-offload.so").stdout


def test_cancel_while_waiting_ends_the_prolog_and_the_wait(instance, kube):
    job = instance.submit("true", dw=CO, hold=True)
    jobid = instance.decimal(job)
    instance.put_workflow(workflow(jobid, userid=UID, state="Setup", ready=False))
    instance.release(job)
    instance.flux("job", "wait-event", "-t", "10", job, "prolog-start")
    before = instance.stats()
    assert before["pending"] == 1
    t0 = time.monotonic()
    instance.flux("cancel", job)
    instance.flux("job", "wait-event", "-t", "10", job, "clean")
    assert time.monotonic() - t0 < 5  # not the 2 s prepare-timeout plus the jobtap timeout
    events = instance.eventlog(job)
    assert [e["context"]["status"] for e in events if e["name"] == "prolog-finish"] == [1]
    while instance.stats()["pending"] != 0:  # job inactive -> copy-offload.forget
        assert time.monotonic() - t0 < 1.8, "the wait was not ended by the job going inactive"
        time.sleep(0.05)
    after = instance.stats()["counts"]
    assert after["timeouts"] == before["counts"]["timeouts"]
    assert after["errors"] == before["counts"]["errors"] + 1  # the cancelled wait's ECANCELED


def test_a_slow_kubernetes_api_never_blocks_the_service(instance, kube):
    job = instance.submit("printenv", "DW_WORKFLOW_TOKEN", dw=CO, hold=True)
    jobid = instance.decimal(job)
    kube.put(token_secret(jobid, token="slow-token"))
    instance.put_workflow(workflow(jobid, userid=UID))
    kube.delay(3.0, path=rf"/secrets/fluxjob-{jobid}-token$")  # the token GET hangs 3 s
    instance.release(job)
    instance.flux("job", "wait-event", "-t", "10", job, "prolog-start")
    stats = instance.stats()
    assert stats["secret-reads-in-flight"] == 1  # answered while the GET still hangs
    out = instance.attach(job)
    assert out.stdout.strip() == "slow-token"
