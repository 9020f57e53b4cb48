"""Real Flux: every path of both plugins that the other modules do not take.

An error reply from the service (the path that used to read freed memory), an exception
raised while the prolog waits, a Workflow missing and then appearing (workflow-grace), a
plain dw job whose Workflow fails, and a burst of 50 jobs whose tokens each carry a per-job
claim, so a token handed to the wrong job shows. In the valgrind mode
(``COPY_OFFLOAD_FLUX_VALGRIND=1``) each of them also fails on a memcheck error in our plugins.
"""

from __future__ import annotations

import os
import time
import uuid

from flux_support import CO_DW, PLAIN_DW, env_of, set_status, token_secret, workflow
from kube_double import DWS

UID = os.getuid()
CO = " ".join(CO_DW)
PLAIN = " ".join(PLAIN_DW)
GRACE = 3.0
INSTANCE_OPTIONS = {"prepare_timeout": 30.0, "jobtap_timeout": 120.0,
                    "config": f"workflow-grace = {GRACE}\n"}


def exceptions(instance, job: str) -> list:
    return [e["context"] for e in instance.eventlog(job) if e["name"] == "exception"]


def prolog_status(instance, job: str) -> list:
    return [e["context"]["status"] for e in instance.eventlog(job)
            if e["name"] == "prolog-finish"]


def waiting_job(instance, dw: str = CO, *args: str) -> tuple:
    """A held job whose Workflow is in Setup; released, and in its copy-offload prolog."""
    job = instance.submit(*(args or ("true",)), dw=dw, hold=True)
    jobid = instance.decimal(job)
    instance.put_workflow(workflow(jobid, userid=UID, state="Setup", ready=False,
                                   dw=None if dw == CO else PLAIN_DW))
    instance.release(job)
    instance.flux("job", "wait-event", "-t", "60", job, "prolog-start")
    return job, jobid


def test_error_reply_fails_the_job_once_and_the_broker_stays_up(instance, kube):
    job, jobid = waiting_job(instance)
    kube.modify(DWS, "workflows", "default", f"fluxjob-{jobid}",
                set_status(status="Error", message="nnf-sos: allocation failed"))
    assert instance.attach(job).returncode != 0
    exc = exceptions(instance, job)
    assert len(exc) == 1 and exc[0]["type"] == "copy-offload" and exc[0]["severity"] == 0
    assert f"Workflow default/fluxjob-{jobid} failed" in exc[0]["note"]
    assert "nnf-sos: allocation failed" in exc[0]["note"]
    assert prolog_status(instance, job) == [1]
    assert "start" not in [e["name"] for e in instance.eventlog(job)]
    assert instance.flux("jobtap", "list").returncode == 0  # the job-manager is alive


def test_exception_raised_while_the_prolog_waits_ends_it(instance, kube):
    job, _ = waiting_job(instance)
    instance.flux("job", "raise", "--type=site-check", job, "node failed its health check")
    instance.flux("job", "wait-event", "-t", "60", job, "clean")
    exc = exceptions(instance, job)
    assert [e["type"] for e in exc] == ["site-check"]  # ours adds none
    assert prolog_status(instance, job) == [1]
    deadline = time.monotonic() + 30
    while instance.stats()["pending"] != 0:  # inactive -> copy-offload.forget
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_non_fatal_exception_while_waiting_keeps_the_job_waiting(instance, kube):
    token = f"sev1-{uuid.uuid4().hex}"
    job, jobid = waiting_job(instance, CO, "printenv", "DW_WORKFLOW_TOKEN")
    instance.flux("job", "raise", "--severity=1", "--type=note", job, "just a note")
    kube.put(token_secret(jobid, token=token))
    kube.modify(DWS, "workflows", "default", f"fluxjob-{jobid}", set_status(
        state="PreRun", ready=True,
        workflowToken={"secretName": f"fluxjob-{jobid}-token", "secretNamespace": "default"}))
    out = instance.attach(job)
    assert out.stdout.strip() == token
    assert prolog_status(instance, job) == [0]


def test_workflow_missing_then_appearing_is_waited_for(instance, kube):
    token = f"late-wf-{uuid.uuid4().hex}"
    job = instance.submit("printenv", "DW_WORKFLOW_TOKEN", dw=CO)
    jobid = instance.decimal(job)
    instance.flux("job", "wait-event", "-t", "60", job, "prolog-start")
    kube.put(token_secret(jobid, token=token))
    kube.put(workflow(jobid, userid=UID))  # flux-coral2 (re)creates it within the grace
    out = instance.attach(job)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == token


def test_workflow_that_never_appears_fails_after_the_grace_naming_it(instance):
    t0 = time.monotonic()
    job = instance.submit("true", dw=CO)
    jobid = instance.decimal(job)
    assert instance.attach(job).returncode != 0
    assert time.monotonic() - t0 >= GRACE
    exc = exceptions(instance, job)
    assert len(exc) == 1 and exc[0]["type"] == "copy-offload"
    note = exc[0]["note"]
    assert f"Workflow default/fluxjob-{jobid} did not appear within {GRACE:g}s" in note
    assert "workflow-grace" in note and "coral2_dws" in note
    assert prolog_status(instance, job) == [1]


def test_plain_dw_job_whose_workflow_fails_runs_and_warns(instance, kube):
    """flux-coral2 raises the job's exception for a Workflow error itself; for a job that did
    not ask for copy-offload, this plugin only warns (no second exception of its own)."""
    job, jobid = waiting_job(instance, PLAIN, "printenv")
    kube.modify(DWS, "workflows", "default", f"fluxjob-{jobid}",
                set_status(status="Error", message="nnf-sos: teardown"))
    out = instance.attach(job)
    assert out.returncode == 0, out.stderr
    assert "DW_WORKFLOW_TOKEN" not in env_of(out.stdout)
    assert exceptions(instance, job) == []
    assert prolog_status(instance, job) == [0]
    dmesg = instance.flux("dmesg").stdout
    assert f"job {jobid} proceeds without copy-offload variables" in dmesg
    assert f"fluxjob-{jobid} failed" in dmesg


def test_dw_job_without_copy_offload_gets_names_and_no_token(instance, kube):
    job = instance.submit("printenv", dw=PLAIN, hold=True)
    jobid = instance.decimal(job)
    instance.put_workflow(workflow(jobid, userid=UID, token=False, dw=PLAIN_DW))
    instance.release(job)
    out = instance.attach(job)
    assert out.returncode == 0, out.stderr
    env = env_of(out.stdout)
    assert env["DW_WORKFLOW_NAME"] == f"fluxjob-{jobid}" and "DW_WORKFLOW_TOKEN" not in env


def test_burst_of_fifty_jobs_each_task_sees_its_own_token(instance, kube):
    count = 50
    ids = instance.flux("submit", f"--cc=1-{count}", "--urgency=hold",
                        f"--setattr=system.dw={CO}", "printenv",
                        "DW_WORKFLOW_TOKEN").stdout.split()
    assert len(ids) == count
    tokens = {}
    before = instance.stats()["watch"]["events"]
    for job in ids:
        jobid = instance.decimal(job)
        tokens[job] = f"jobid={jobid}.nonce={uuid.uuid4().hex}"  # the per-job claim
        kube.put(token_secret(jobid, token=tokens[job]))
        kube.put(workflow(jobid, userid=UID))
    deadline = time.monotonic() + 120
    while instance.stats()["watch"]["events"] < before + count:
        assert time.monotonic() < deadline, "the service never saw every Workflow"
        time.sleep(0.2)
    for job in ids:
        instance.release(job)
    seen = {}
    for job in ids:
        out = instance.attach(job)
        assert out.returncode == 0, out.stderr
        seen[job] = out.stdout.strip()
    wrong = {job: got for job, got in seen.items() if got != tokens[job]}
    assert wrong == {}, f"tokens handed to the wrong job: {wrong}"
    assert len(set(seen.values())) == count
    for job in ids:
        assert seen[job].startswith(f"jobid={instance.decimal(job)}.")


def test_stats_show_guests_no_file(instance):
    guest = {"FLUX_HANDLE_ROLEMASK": "0x2", "FLUX_HANDLE_USERID": str(UID + 4242)}
    code = ("import flux, json\n"
            "print(json.dumps(flux.Flux().rpc('copy-offload.stats', {}).get()))\n")
    shown = instance.flux("python", "-c", code, env=guest).stdout
    assert '"synced": true' in shown and "kubeconfig" not in shown
    assert instance.kubeconfig not in shown
    assert instance.stats()["config"]["kubeconfig"] == instance.kubeconfig  # the owner
