"""Real Flux: ``flux jobtap remove copy-offload.so`` while jobs wait in its prolog.

The jobs must not be left stuck with an active prolog: a job that asked for copy-offload ends
with an exception of type copy-offload that says the plugin was removed; a plain dw job
proceeds without variables, as it would on any other failure. The broker stays up, the plugin
can be loaded again, and the service's late answers to the abandoned requests reach no job.
"""

from __future__ import annotations

import os
import time
import uuid

from flux_support import CO_DW, PLAIN_DW, env_of, set_status, token_secret, workflow
from kube_double import DWS

UID = os.getuid()
INSTANCE_OPTIONS = {"prepare_timeout": 60.0, "jobtap_timeout": 120.0}
REMOVED = "the copy-offload jobtap plugin was removed"


def waiting_job(instance, kube, dw, *command: str) -> tuple:
    """A job in its copy-offload prolog (Workflow in Setup), with its token Secret stored."""
    job = instance.submit(*command, dw=" ".join(dw), hold=True)
    jobid = instance.decimal(job)
    token = f"jobid={jobid}.nonce={uuid.uuid4().hex}"
    kube.put(token_secret(jobid, token=token))
    instance.put_workflow(workflow(jobid, userid=UID, state="Setup", ready=False, dw=dw))
    instance.release(job)
    instance.flux("job", "wait-event", "-t", "120", job, "prolog-start", timeout=150)
    return job, jobid, token


def ready(kube, jobid: int) -> None:
    kube.modify(DWS, "workflows", "default", f"fluxjob-{jobid}",
                set_status(state="PreRun", ready=True))


def test_remove_while_jobs_wait_ends_them_and_the_broker_stays_up(instance, kube):
    # The instance has two cores: one job of each kind waits at once.
    asking, asking_id, _ = waiting_job(instance, kube, CO_DW, "true")
    plain, plain_id, _ = waiting_job(instance, kube, PLAIN_DW, "printenv")
    assert instance.stats()["pending"] == 2

    instance.flux("jobtap", "remove", "copy-offload.so")
    assert "copy-offload" not in instance.flux("jobtap", "list").stdout

    instance.flux("job", "wait-event", "-t", "120", asking, "clean", timeout=150)
    events = instance.eventlog(asking)
    exc = [e["context"] for e in events if e["name"] == "exception"]
    assert len(exc) == 1 and exc[0]["type"] == "copy-offload", exc
    assert exc[0]["severity"] == 0 and REMOVED in exc[0]["note"]
    assert [e["context"]["status"] for e in events if e["name"] == "prolog-finish"] == [1]
    assert "start" not in [e["name"] for e in events]
    out = instance.attach(plain)  # did not ask for copy-offload: runs without variables
    assert out.returncode == 0, out.stderr
    assert "DW_WORKFLOW_TOKEN" not in env_of(out.stdout)
    assert f"job {plain_id} proceeds without copy-offload variables: {REMOVED}" \
        in instance.flux("dmesg").stdout

    assert "job-manager" in instance.flux("module", "list").stdout
    instance.flux("jobtap", "load", f"{instance.plugins}/copy-offload.so",
                  f"timeout={instance.jobtap_timeout}")
    assert instance.flux("jobtap", "query", "copy-offload.so").returncode == 0

    # The service still holds the two abandoned requests (no plugin was there to send
    # copy-offload.forget when those jobs ended); their Workflows turning ready makes it
    # answer them now, while a new job's prepare is out.
    job, jobid, token = waiting_job(instance, kube, CO_DW, "printenv", "DW_WORKFLOW_TOKEN")
    answered = instance.stats()["counts"]["answered"]
    ready(kube, asking_id)
    ready(kube, plain_id)
    deadline = time.monotonic() + 60
    while instance.stats()["counts"]["answered"] < answered + 2:
        assert time.monotonic() < deadline, "the service never answered the abandoned requests"
        time.sleep(0.05)
    ready(kube, jobid)
    out = instance.attach(job)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == token
    assert "job-manager" in instance.flux("module", "list").stdout
    assert "runtime failure" not in instance.broker_log()
