"""Real Flux: the job shell drains the job's copy-offload server at job end, and starts a per-job
local server for jobs that ask (``-o copy-offload.local-server``).

Copies that must still be running when the application exits use the ``gate`` profile: the
copy waits for ``<source>.go``, which the test creates when it has seen the drain waiting, so
nothing here depends on how fast a copy runs.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any, Callable, Dict, Tuple

import pytest
from copy_offload.client import Client
from copy_offload.client.errors import Unauthorized
from flux_support import CO_DW, token_secret, workflow, write_gate_profiles
from support import Material, ServerProcess, server_args

UID = os.getuid()
BIN = os.path.dirname(sys.executable)
CLI = os.path.join(BIN, "copy-offload")
SERVER = os.path.join(BIN, "copy-offload-server")
CO = " ".join(CO_DW)
LONG = 600 if os.environ.get("COPY_OFFLOAD_FLUX_VALGRIND", "") not in ("", "0") else 120


def wait_for(check: Callable[[], Any], what: str, timeout: float = LONG,
             explain: Callable[[], str] = str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{explain()}"
        time.sleep(0.1)


class Site:
    """The instance's per-job server settings and a data tree under its allowed root."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.state = os.path.join(root, "state")
        self.data = os.path.join(root, "data")
        os.makedirs(self.data)
        self.profiles = write_gate_profiles(root)

    def file(self, name: str, size: int) -> str:
        path = os.path.join(self.data, name)
        with open(path, "wb") as fh:
            fh.write(os.urandom(size))
        return path


@pytest.fixture(scope="module")
def site(instance: Any, tmp_path_factory: pytest.TempPathFactory) -> Site:
    s = Site(str(tmp_path_factory.mktemp("lifecycle")))
    instance.config = (f'local-roots = ["{s.root}"]\nlocal-server = "{SERVER}"\n'
                       f'local-state-dir = "{s.state}"\nlocal-profiles = "{s.profiles}"\n'
                       f"drain-timeout = {LONG}\n")
    instance.write_config("prepare-timeout = 2.0\n")
    instance.flux("config", "reload")
    return s


def output(instance: Any, job: str) -> str:
    return instance.flux("job", "eventlog", "-p", "guest.output", job, check=False).stdout


def events(instance: Any, job: str) -> list:
    return [e["name"] for e in instance.eventlog(job)]


def outcomes(instance: Any, job: str) -> Dict[str, Dict[str, Any]]:
    doc = json.loads(instance.flux("copy-offload", "job", "--json", job).stdout)
    return {c["name"]: c for c in doc["copies"]}


def names_in(stdout: str) -> list:
    return [line.strip() for line in stdout.splitlines() if "--nnf-copy-offload-" in line]


def test_dw_job_that_exits_with_a_copy_running_ends_with_it_complete(instance, kube, site,
                                                                      tmp_path):
    material = Material(str(tmp_path))
    server = ServerProcess(server_args(material, extra=[
        "--allow-root", site.root, "--profiles", site.profiles,
        "--state-dir", str(tmp_path / "state")]), dict(os.environ), True, material).start()
    try:
        src = site.file("dw-gated", 5000)
        job = instance.flux("submit", f"--setattr=system.dw={CO}", "--urgency=hold",
                            CLI, "copy", "--profile", "gate", src, src + ".out",
                            env={"COPY_OFFLOAD_CA_FILE": material.cert}).stdout.strip()
        jobid = instance.decimal(job)
        kube.put(token_secret(jobid, token=material.token))
        instance.put_workflow(workflow(jobid, userid=UID, env={
            "NNF_CONTAINER_LAUNCHER": "localhost", "NNF_CONTAINER_PORTS": str(server.port)}))
        instance.release(job)
        wait_for(lambda: "waiting for 1 running copies" in output(instance, job),
                 "the drain to wait for the copy", explain=lambda: "\n".join(
                     [output(instance, job), str(events(instance, job)), server.log]))
        assert "finish" not in events(instance, job)  # the job waits for its copy
        open(src + ".go", "w").close()
        out = instance.attach(job)
        assert out.returncode == 0, out.stderr
        [name] = names_in(out.stdout)
        assert f"copy {name}: success" in out.stderr
        assert "drain: 1 copies complete (1 success, 0 not)" in out.stderr
        with open(src, "rb") as a, open(src + ".out", "rb") as b:
            assert a.read() == b.read()
        got = outcomes(instance, job)[name]
        assert (got["state"], got["status"]) == ("completed", "success")
        shown = instance.flux("copy-offload", "job", job).stdout
        assert f"{name}  success" in shown
        assert material.token not in out.stderr + shown
    finally:
        server.stop()


def test_plain_flux_job_uses_its_own_server_through_the_unchanged_cli(instance, site):
    src = site.file("local-plain", 3 << 20)
    script = (f"{CLI} copy {src} {src}.out --wait >/dev/null && {CLI} list && "
              f"{CLI} copy {src} {src}.late && printenv NNF_CONTAINER_PORTS")
    job = instance.submit("-o", "copy-offload.local-server", "sh", "-c", script)
    out = instance.attach(job)
    assert out.returncode == 0, out.stderr
    assert "per-job server on localhost:" in out.stderr
    port = int(out.stdout.strip().splitlines()[-1])
    with open(src, "rb") as a, open(src + ".out", "rb") as b:
        assert a.read() == b.read()
    got = outcomes(instance, job)
    assert len(got) == 2, got
    assert all(c["status"] == "success" and c["bytes"] == 3 << 20 for c in got.values())
    assert os.path.getsize(src + ".late") == 3 << 20  # drained before the server stopped
    records = os.path.join(site.state, str(instance.decimal(job)), socket.gethostname())
    assert os.stat(records).st_uid == UID
    with open(os.path.join(records, "server.log")) as fh:
        assert "Ready addr=" in fh.read()
    with pytest.raises(OSError):  # stopped at job end
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def gated_job(instance: Any, site: Site, tag: str, option: str) -> Tuple[str, Any, str, str]:
    """A per-job server job whose one copy is still running when its task exits."""
    src = site.file(f"{tag}-gated", 100)
    job = instance.submit("-o", "copy-offload.local-server", "-o", option,
                          CLI, "copy", "--profile", "gate", src, src + ".out")
    out = instance.attach(job)
    assert out.returncode == 0, out.stderr
    [name] = names_in(out.stdout)
    return job, out, name, src


def test_drain_off_ends_the_job_with_the_copy_running(instance, site):
    job, out, name, src = gated_job(instance, site, "off", "copy-offload.drain=false")
    assert f"drain is off; not waited for: {name}" in out.stderr
    assert "waiting for" not in out.stderr
    assert outcomes(instance, job)[name]["state"] != "completed"
    assert not os.path.exists(src + ".out")


def test_drain_limit_warns_naming_the_requests_left(instance, site):
    job, out, name, _ = gated_job(instance, site, "limit", "copy-offload.drain-timeout=1")
    assert f"drain limit of 1s reached; still running, not waited for: {name}" in out.stderr
    doc = json.loads(instance.flux("copy-offload", "job", "--json", job).stdout)
    assert doc["drains"][0]["left"] == [name]
    assert f"still running at the limit: {name}" in instance.flux(
        "copy-offload", "job", job).stdout


def test_another_jobs_token_is_refused(instance, site):
    gate = os.path.join(site.data, "token-a.go")
    env_a, env_b = (os.path.join(site.data, f"token-{x}.env") for x in "ab")
    job_a = instance.submit("-o", "copy-offload.local-server", "sh", "-c",
                            f"printenv > {env_a}.tmp && mv {env_a}.tmp {env_a}; "
                            f"while [ ! -e {gate} ]; do sleep 0.1; done")
    job_b = instance.submit("-o", "copy-offload.local-server", "sh", "-c", f"printenv > {env_b}")
    try:
        assert instance.attach(job_b).returncode == 0
        wait_for(lambda: os.path.exists(env_a), "job A's environment")

        def read(path: str) -> Dict[str, str]:
            with open(path) as fh:
                return dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)

        a, b = read(env_a), read(env_b)
        assert a["DW_WORKFLOW_TOKEN"] != b["DW_WORKFLOW_TOKEN"]
        with Client(env=dict(a, DW_WORKFLOW_TOKEN=b["DW_WORKFLOW_TOKEN"])) as client, \
                pytest.raises(Unauthorized):
            client.list()
        with Client(env=a) as client:
            assert client.list() == []
    finally:
        open(gate, "w").close()
    assert instance.attach(job_a).returncode == 0


def test_bad_local_server_option_fails_the_job_in_one_line(instance, site):
    job = instance.submit("-o", "copy-offload.local-server=maybe", "true")
    out = instance.attach(job)
    assert out.returncode != 0
    assert "-o copy-offload.local-server must be true or false, not 'maybe'" in out.stderr
    assert "Traceback" not in out.stderr
    shown = instance.flux("copy-offload", "job", job, check=False)
    assert shown.returncode == 1
    assert shown.stderr.strip() == (f"flux-copy-offload: job {job} recorded no copy outcomes (no "
                                    "drain ran: not a copy-offload job, or it has not ended yet)")


def test_a_server_gone_before_job_end_is_a_warning_not_a_failure(instance, site):
    pid = ('python3 -c "import json, os; print(json.load(open(os.path.join('
           "os.environ['FLUX_JOB_TMPDIR'], 'copy-offload', 'server.json')))['pid'])\"")
    script = f"pid=$({pid}); kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.05; done"
    job = instance.submit("-o", "copy-offload.local-server", "sh", "-c", script)
    out = instance.attach(job)
    assert out.returncode == 0, out.stderr
    assert "cannot drain the job's copy-offload server:" in out.stderr
    assert "Traceback" not in out.stderr and "helper 'finish' failed" not in out.stderr
    assert "per-job server stopped" in out.stderr
