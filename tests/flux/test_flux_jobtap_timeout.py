"""Real Flux: the jobtap plugin's own timeout, when the service does not answer in time."""

from __future__ import annotations

import os

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
    assert instance.flux("jobtap", "query", "copy-offload.so").returncode == 0
