"""Real Flux: the service restarted while a dw job waits in its prolog still delivers the
job's variables (the jobtap plugin re-sends copy-offload.prepare after the broker answers
EHOSTUNREACH for the unloaded module)."""

from __future__ import annotations

import os
import time
import uuid

from flux_support import (
    CO_DW,
    assert_job_got_variables,
    set_status,
    token_secret,
    workflow,
)
from kube_double import DWS

# The service would wait a minute; the plugin gives the job 30 s in all, retries included.
INSTANCE_OPTIONS = {"prepare_timeout": 60.0, "jobtap_timeout": 30.0}


def wait_pending(instance, count: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = instance.flux("copy-offload", "status", "--json", check=False)
        if proc.returncode == 0 and instance.stats()["pending"] == count:
            return
        assert time.monotonic() < deadline, f"the service never held {count} request(s)"
        time.sleep(0.1)


def test_service_reloaded_while_a_job_waits_still_delivers_its_variables(instance, kube):
    token = f"restart-{uuid.uuid4().hex}"
    job = instance.submit("printenv", dw=" ".join(CO_DW), hold=True)
    jobid = instance.decimal(job)
    instance.put_workflow(workflow(jobid, userid=os.getuid(), state="Setup", ready=False,
                                   token=False))
    instance.release(job)
    instance.flux("job", "wait-event", "-t", "10", job, "prolog-start")
    wait_pending(instance, 1)  # the first service holds the job's request

    instance.flux("module", "reload", "copy-offload")
    instance.wait_service()
    wait_pending(instance, 1)  # the re-sent request reached the new service
    kube.put(token_secret(jobid, token=token))
    kube.modify(DWS, "workflows", "default", f"fluxjob-{jobid}", set_status(
        state="PreRun", ready=True,
        workflowToken={"secretName": f"fluxjob-{jobid}-token", "secretNamespace": "default"}))

    out = instance.attach(job)
    assert out.returncode == 0, out.stderr
    assert_job_got_variables(out.stdout, jobid, token)
    events = instance.eventlog(job)
    assert not [e for e in events if e["name"] == "exception"]
    assert [e["context"]["status"] for e in events if e["name"] == "prolog-finish"] == [0]
    dmesg = instance.flux("dmesg").stdout
    assert f"job {jobid}: the copy-offload service went away" in dmesg
    assert "re-sending copy-offload.prepare in 1s (retry 1)" in dmesg
    assert token not in dmesg
    assert token not in instance.broker_log()


def test_service_gone_for_good_fails_the_job_at_the_timeout_saying_so(instance, kube):
    so = os.path.join(instance.plugins, "copy-offload.so")
    instance.flux("jobtap", "remove", "copy-offload.so")
    instance.flux("jobtap", "load", so, "timeout=4")
    try:
        job = instance.submit("true", dw=" ".join(CO_DW), hold=True)
        jobid = instance.decimal(job)
        instance.put_workflow(workflow(jobid, userid=os.getuid(), state="Setup",
                                       ready=False))
        instance.release(job)
        instance.flux("job", "wait-event", "-t", "10", job, "prolog-start")
        wait_pending(instance, 1)
        instance.flux("module", "remove", "copy-offload")
        t0 = time.monotonic()
        assert instance.attach(job).returncode != 0
        assert time.monotonic() - t0 < 10
        exc = [e for e in instance.eventlog(job) if e["name"] == "exception"]
        assert len(exc) == 1 and exc[0]["context"]["type"] == "copy-offload"
        note = exc[0]["context"]["note"]
        assert "the copy-offload service went away and was not back within 4s" in note
        assert "flux module list" in note
        dmesg = instance.flux("dmesg").stdout
        assert f"job {jobid}: the copy-offload service went away (Function not " \
               "implemented); re-sending" in dmesg  # ENOSYS: not back yet, still retried
    finally:
        instance.flux("module", "load", "copy-offload", check=False)
        instance.flux("jobtap", "remove", "copy-offload.so")
        instance.flux("jobtap", "load", so, f"timeout={instance.jobtap_timeout}")
    instance.wait_service()
