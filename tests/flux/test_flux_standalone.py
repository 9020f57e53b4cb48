"""Real Flux: the service run standalone (``flux python -m copy_offload.flux.service``), as the
systemd unit runs it, instead of the broker module."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from flux_support import CO_DW, token_secret, workflow

INSTANCE_OPTIONS = {"module": False}


def start_service(instance) -> subprocess.Popen:
    return subprocess.Popen(["flux", "python", "-m", "copy_offload.flux.service"],
                            env=instance.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_standalone_service_serves_jobs_follows_config_and_stops_cleanly(instance, kube):
    down = instance.flux("copy-offload", "status", check=False)
    assert down.returncode != 0 and "copy-offload service is not running" in down.stderr
    svc = start_service(instance)
    try:
        instance.wait_service()
        second = start_service(instance)  # the name is taken: exit 2 with the reason
        _, second_err = second.communicate(timeout=30)
        assert second.returncode == 2
        assert "cannot register the copy-offload service" in second_err

        job = instance.submit("printenv", dw=" ".join(CO_DW), hold=True)
        jobid = instance.decimal(job)
        kube.put(token_secret(jobid, token="standalone-token"))
        instance.put_workflow(workflow(jobid, userid=os.getuid()))
        instance.release(job)
        out = instance.attach(job)
        assert "DW_WORKFLOW_TOKEN=standalone-token" in out.stdout

        instance.write_config("env-keys = [\"NNF_*\"]\n")
        instance.flux("config", "reload")
        deadline = time.monotonic() + 10
        while instance.stats()["config"]["env-keys"] != ["NNF_*"]:
            assert time.monotonic() < deadline, "config reload did not reach the service"
            time.sleep(0.1)
    finally:
        svc.send_signal(signal.SIGTERM)
        _, err = svc.communicate(timeout=30)
    assert svc.returncode == 0, err
    assert "standalone-token" not in err
    assert "started (standalone)" in err
