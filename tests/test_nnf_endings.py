"""The end of every copy is recorded, and /status tells the truth while it is not (issue 11)."""

from __future__ import annotations

import logging
import os

import pytest
from copy_offload.server.app import http_code
from copy_offload.server.nnf.progress import explain_output
from nnf_support import outage_scenario, run, until, wait_done
from support import status_doc


@pytest.fixture
def warnings(caplog):
    """The driver's WARNING messages, as a function returning those logged so far."""
    caplog.set_level(logging.WARNING, logger="copy_offload.server.nnf")
    return lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_nnf_status_outage_then_the_end_is_recorded(world, monkeypatch, warnings):
    monkeypatch.setenv("FAKE_DCP_STEPS", "4")
    monkeypatch.setenv("FAKE_DCP_SLEEP", "0.2")
    src = world.source_tree("outage")
    out = run(outage_scenario(world, src, world.lus + "/outage-out"), timeout=120)
    during, after = out["during"], out["after"]
    # the copy ended during the outage: the resource could not be told, the server knows
    assert during["resource"]["state"] == "Running" and "endTime" not in during["resource"]
    assert during["status"]["state"] == "completed" and during["status"]["status"] == "success"
    assert during["status"]["commandStatus"]["progress"] == 100 and during["status"]["endTime"]
    assert during["waited"] == during["status"]
    assert during["active"] == [out["name"]]  # so /shutdown answers 409 until the end is recorded
    assert out["virtual"] >= 25 and max(out["pauses"]) <= 5.0
    # after recovery: Finished/Success in the resource, nothing listed
    res = after["resource"]
    assert res["state"] == "Finished" and res["status"] == "Success" and res["endTime"]
    assert res["commandStatus"]["progress"] == 100 and res["commandStatus"]["files"] == 3
    assert after["status"]["status"] == "success"
    assert os.path.exists(world.lus + "/outage-out/rabbit-01-0/outage/f0")
    ends = [w for w in warnings() if "end of the copy" in w]
    assert any("not recorded yet" in w and "etcdserver: request timed out" in w for w in ends)
    assert any("recorded after" in w for w in ends)
    assert os.listdir(world.hostfiles) == []


def test_nnf_final_write_404_is_checked_and_a_warning(world, warnings):
    src = world.source_tree("nf")
    kube = world.kube

    async def scenario():
        driver = await world.driver()
        name = await driver.submit(world.request(src, world.lus + "/nf-out"))
        kube.fail(404, count=1, method="PUT", path="/status$", message="the server could not find the requested resource")
        doc = await wait_done(driver, name)
        # a resource deleted under a running copy: its end has nowhere to go, and we say so
        gone = await driver.submit(world.request(src, world.lus + "/nf-gone"))
        namespace, dm_name = gone.split("--")
        kube.remove("nnf.cray.hpe.com", "nnfdatamovements", namespace, dm_name)
        await until(lambda: not driver.active(), 20, "the gone request to end")
        await driver.close()
        return name, doc

    name, doc = run(scenario())
    assert doc["status"] == "success" and world.dm(name)["status"]["state"] == "Finished"
    messages = warnings()
    assert any("answered 404" in m for m in messages)
    assert any("cannot be recorded: the NnfDataMovement is gone (404)" in m for m in messages)


BANNER = """stat: cannot statx '/nonexist': No such file or directory
--------------------------------------------------------------------------
Primary job  terminated normally, but 1 process returned
a non-zero exit code. Per user-direction, the job has been aborted.
--------------------------------------------------------------------------
--------------------------------------------------------------------------
mpirun detected that one or more processes exited with non-zero status, thus causing
the job to be terminated. The first process to do so was:

  Process name: [[26079,1],0]
  Exit code:    1
--------------------------------------------------------------------------
"""

UNREACHABLE = """--------------------------------------------------------------------------
ORTE was unable to reliably start one or more daemons.
This usually is caused by:
--------------------------------------------------------------------------
"""


def test_nnf_explain_output_keeps_what_explains():
    assert explain_output(BANNER) == "stat: cannot statx '/nonexist': No such file or directory\n"
    noise = "[vm:13569] plm:rsh: Warning: setpgid(13574,13574) failed in parent with errno=Permission denied(13)\n"
    assert explain_output(noise + BANNER) == explain_output(BANNER)  # mpirun's launcher talking about itself
    assert explain_output(UNREACHABLE) == "ORTE was unable to reliably start one or more daemons.\nThis usually is caused by:\n"
    noisy = "\n".join(["[t] Walking /x %d" % i for i in range(100)] + ["[t] ERROR: Could not read `/x' (errno=2)"])
    assert explain_output(noisy) == "[t] ERROR: Could not read `/x' (errno=2)"
    long_error = "ERROR: " + "x" * 1000
    cut = explain_output(long_error)
    assert len(cut) == 400 and cut.endswith("...")
    assert explain_output("") == ""


def _slow_copy_env(world, steps: int, pause: float, **extra: str):
    from nnf_support import server_env

    world.set_profile("default", setprivCommand="")  # the server runs as root here; keep the private paths readable
    return server_env(world, FAKE_DCP_STEPS=str(steps), FAKE_DCP_SLEEP=str(pause), **extra)


def test_nnf_restart_adopts_a_surviving_copy(world, server_factory):
    from nnf_support import restart_scenario

    src = world.source_tree("surv")
    gate = os.path.join(world.tmp, "surv-gate")  # the copy ends only once the new server has listed it
    out = restart_scenario(world, server_factory, _slow_copy_env(world, 4, 0.1, FAKE_DCP_GATE=gate), src,
                           world.lus + "/surv-out", "survives", gate=gate)
    assert out["adopted"] == [out["name"]]  # listed (and /shutdown refused) while it runs on
    assert out["status"].done and out["status"].status == "success", out["status"]
    assert out["status"].progress == 100 and out["resource"]["commandStatus"]["files"] == 3
    assert out["resource"]["state"] == "Finished" and out["resource"]["status"] == "Success"
    assert out["listed after"] == [] and not out["run dir left"]
    assert os.path.exists(world.lus + "/surv-out/rabbit-01-0/surv/f2")
    assert "its copy still runs" in out["second"].log


def test_nnf_restart_records_a_copy_that_ended_meanwhile(world, server_factory):
    from nnf_support import restart_scenario

    src = world.source_tree("meanwhile")
    gate = os.path.join(world.tmp, "mw-gate")  # released right after the kill: the copy ends while no server runs
    out = restart_scenario(world, server_factory, _slow_copy_env(world, 4, 0.1, FAKE_DCP_GATE=gate), src,
                           world.lus + "/mw-out", "ended", gate=gate)
    assert out["adopted"] in ([], [out["name"]])  # it had ended: listed at most while its end is being written
    assert out["status"].status == "success" and out["resource"]["status"] == "Success", out["resource"]
    assert out["resource"]["commandStatus"]["progress"] == 100 and not out["run dir left"]


def test_nnf_restart_says_the_result_of_a_dead_copy_is_unknown(world, server_factory):
    from copy_offload.server.nnf.job import UNKNOWN_RESULT
    from nnf_support import restart_scenario

    src = world.source_tree("dead")
    gate = os.path.join(world.tmp, "dead-gate")  # never released before the kill
    out = restart_scenario(world, server_factory, _slow_copy_env(world, 4, 0.1, FAKE_DCP_GATE=gate), src,
                           world.lus + "/dead-out", "killed", gate=gate)
    assert out["status"].status == "failed" and out["resource"]["message"] == UNKNOWN_RESULT
    assert "unknown" in out["status"].message and not out["run dir left"] and not out["still alive"]


def test_nnf_server_refuses_shutdown_until_the_end_is_recorded(world, server_factory):
    """Over HTTP, with the server's real backoff: a status-write outage across the end of a copy."""
    import time

    import copy_offload.client as co

    src = world.source_tree("http-outage")
    server = server_factory("nnf", env=_slow_copy_env(world, 3, 0.3))
    kube = world.kube
    with co.Client(**server.client_kwargs()) as client:
        name = client.copy(src, world.lus + "/http-outage-out", compute_name="compute-01")
        kube.fail(503, count=10**6, method="PUT", path="/status$", message="etcdserver: leader changed")
        during = client.status(name, 30)  # the copy ends; its end cannot be written
        listed = client.list()
        with pytest.raises(co.CopyOffloadError) as refused:
            client.shutdown()
        resource = world.dm(name)["status"]
        kube.clear_faults()
        recovered = time.monotonic()
        # Recorded, then forgotten: the write lands in the API before the server drops the request.
        while world.dm(name)["status"].get("state") != "Finished" or client.list():
            assert time.monotonic() - recovered < 30, "the end was not recorded within 30 s of the recovery"
            time.sleep(0.1)
        took = time.monotonic() - recovered
        after = client.status(name, 0)
    assert during.done and during.status == "success" and during.progress == 100
    assert resource["state"] == "Running" and "endTime" not in resource
    assert listed == [name] and "unable to shutdown server: requests in progress" in str(refused.value)
    assert after.status == "success" and world.dm(name)["status"]["status"] == "Success" and took < 30
    assert "is not recorded yet" in server.log and "etcdserver: leader changed" in server.log


def test_nnf_status_of_a_running_copy_survives_an_unavailable_api(world, monkeypatch, warnings):
    monkeypatch.setenv("FAKE_DCP_STEPS", "10")
    monkeypatch.setenv("FAKE_DCP_SLEEP", "0.2")

    async def scenario():
        driver = await world.driver()
        name = await driver.submit(world.request(world.source_tree("reads"), world.lus + "/reads-out"))
        kube = world.kube
        kube.fail(503, count=10**6, method="GET", path="/nnfdatamovements/")
        during = await status_doc(driver, name, 0)
        kube.clear_faults()
        done = await wait_done(driver, name)
        try:
            await status_doc(driver, "rabbit-01--nnf-copy-offload-node-zzzzz", 0)  # an unknown name is still a 404
        except Exception as exc:  # noqa: BLE001 - the DriverError is what we look at
            unknown = exc
        await driver.close()
        return during, done, unknown

    during, done, unknown = run(scenario())
    assert during["state"] == "running" and during["commandStatus"]["command"].startswith("/bin/bash -c ")
    assert done["status"] == "success"
    assert http_code(unknown) == 404
    assert any("status answered from memory" in w for w in warnings())


def test_nnf_start_keeps_the_run_dir_of_a_copy_still_running(world):
    """A run dir no resource of this Workflow claims is removed at start, unless its copy still runs
    (another server's, or one whose resource was deleted): its wrapper still writes there."""
    from copy_offload.server.nnf.survivor import process_start_time, write_record

    def run_dir(name: str, pid: int, start_time) -> str:
        path = os.path.join(world.hostfiles, "dm-" + name)
        os.makedirs(path)
        with open(os.path.join(path, "hostfile"), "w") as fh:
            fh.write("rabbit-01 slots=1\n")
        write_record(path, {"name": "other--" + name, "pid": pid, "start_time": start_time})
        return path

    live = run_dir("live", os.getpid(), process_start_time(os.getpid()))
    dead = run_dir("dead", os.getpid(), 1)  # a start time this pid never had: that process is gone

    async def scenario():
        driver = await world.driver()
        await driver.close()

    run(scenario())
    assert os.path.isdir(live) and not os.path.exists(dead)
