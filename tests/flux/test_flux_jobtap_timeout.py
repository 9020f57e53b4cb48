"""Real Flux: the jobtap plugin's own timeout, when the service does not answer in time."""

from __future__ import annotations

import os
import time

from flux_support import CO_DW, workflow

# The service would wait a minute; the plugin gives up after one second.
INSTANCE_OPTIONS = {"prepare_timeout": 60.0, "jobtap_timeout": 1.0}


def test_no_answer_in_time_gives_an_exception_naming_the_service(instance, kube):
    job = instance.submit("true", dw=" ".join(CO_DW), hold=True)
    jobid = instance.decimal(job)
    instance.put_workflow(workflow(jobid, userid=os.getuid(), state="DataIn", ready=False))
    instance.release(job)
    assert instance.attach(job).returncode != 0
    exc = [e for e in instance.eventlog(job) if e["name"] == "exception"]
    assert exc[0]["context"]["type"] == "copy-offload"
    assert "no answer from the copy-offload service within 1s" in exc[0]["context"]["note"]
    # The service answers the abandoned request once the job is inactive (ECANCELED): that
    # late answer must not be taken for a job-manager KVS commit (which would end the
    # job-manager: "commit_continuation: eventlog update failed: Operation canceled").
    deadline = time.monotonic() + 60
    while instance.stats()["pending"] != 0:
        assert time.monotonic() < deadline, "the service still holds the request"
        time.sleep(0.1)
    assert "job-manager" in instance.flux("module", "list").stdout
    assert instance.flux("jobtap", "query", "copy-offload.so").returncode == 0
    assert "runtime failure" not in instance.broker_log()
