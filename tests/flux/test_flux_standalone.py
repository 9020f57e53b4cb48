"""Real Flux: the service run standalone (``flux python -m copy_offload.flux.service``), as the
systemd unit runs it, instead of the broker module."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import pytest
from flux_support import CO_DW, token_secret, workflow

INSTANCE_OPTIONS = {"module": False}


def start_service(instance, stderr: Any = subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(["flux", "python", "-m", "copy_offload.flux.service"],
                            env=instance.env, stdout=subprocess.PIPE,
                            stderr=stderr, text=True)


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


def serve_one_job(instance, kube, token: str) -> str:
    job = instance.submit("printenv", "DW_WORKFLOW_TOKEN", dw=" ".join(CO_DW), hold=True)
    jobid = instance.decimal(job)
    kube.put(token_secret(jobid, token=token))
    instance.put_workflow(workflow(jobid, userid=os.getuid()))
    instance.release(job)
    return instance.attach(job).stdout.strip()


@pytest.mark.parametrize("stop_while", ["connected", "reconnecting"])
def test_standalone_service_reconnects_after_a_broker_restart(tmp_path, start_instance, kube,
                                                              stop_while):
    """Broker restart under the service (same FLUX_URI); then SIGTERM, either while it serves
    the new broker or while it tries to reconnect after that broker stopped too."""
    rundir = tmp_path / "run"
    rundir.mkdir(mode=0o700)
    first = start_instance(str(tmp_path / "first"), module=False, rundir=str(rundir))
    log = tmp_path / "service.err"
    with open(log, "w") as err_file:
        svc = start_service(first, stderr=err_file)
    second = None
    try:
        first.wait_service()
        assert serve_one_job(first, kube, "before-restart") == "before-restart"
        first.stop_clean()  # the broker goes away under the running service
        second = start_instance(str(tmp_path / "second"), module=False, rundir=str(rundir))
        assert second.env["FLUX_URI"] == first.env["FLUX_URI"]
        second.wait_service(timeout=120)  # the same process registered itself again
        assert svc.poll() is None
        assert serve_one_job(second, kube, "after-restart") == "after-restart"
    finally:
        if second is not None and stop_while == "reconnecting":
            second.stop_clean()
            deadline = time.monotonic() + 60
            while log.read_text().count("reconnecting") < 2:
                assert time.monotonic() < deadline and svc.poll() is None, log.read_text()
                time.sleep(0.1)
        svc.send_signal(signal.SIGTERM)
        svc.communicate(timeout=60)
        err = log.read_text()
        if second is not None and stop_while == "connected":
            second.stop_clean()
    assert svc.returncode == 0, err
    assert "lost the connection to the broker" in err and "reconnected to the broker" in err
    assert err.count("started (standalone)") >= 2  # more if it caught a broker going down
    assert "before-restart" not in err and "after-restart" not in err
