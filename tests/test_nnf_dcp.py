"""The real-dcp tier (``pytest -m dcp``): the nnf driver with real Open MPI ``mpirun`` and mpiFileUtils ``dcp``.

Skipped unless both are on ``PATH`` (mpiFileUtils is not packaged in Debian; build it anywhere
and run e.g. ``PATH=/opt/mpifileutils/bin:$PATH pytest -m dcp``). The profile command is the
shipped one (``mpirun --hostfile $HOSTFILE dcp --progress 1 $SRC $DEST``); the worker pod's
host names in the hostfile reach this machine through Open MPI's ``plm_rsh_agent``, pointed at
a two-line script that runs the remote command here. Sparse files make copies that take a few
seconds (dcp writes them in full), long enough for real progress lines, a cancel, an outage
and a restart in the middle.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time

import pytest
from copy_offload.server.app import http_code
from copy_offload.server.nnf.survivor import alive, process_start_time
from kube_double import KubeDouble
from nnf_support import (
    COMPUTE_GFS2,
    NnfWorld,
    outage_scenario,
    prepare_outcomes,
    restart_scenario,
    run,
    server_env,
    submit_error,
    until,
    wait_done,
)
from support import command_lines, status_doc

pytestmark = [
    pytest.mark.dcp,
    pytest.mark.skipif(not (shutil.which("mpirun") and shutil.which("dcp")),
                       reason="needs mpirun (Open MPI) and dcp (mpiFileUtils) on PATH, e.g. PATH=/opt/mpifileutils/bin:$PATH"),
]

AGENT = "#!/bin/sh\n# every remote host is this machine: run the command orted would be started with\nshift\nexec /bin/sh -c \"$*\"\n"


@pytest.fixture
def real(tmp_path, monkeypatch):
    """The NNF scenario with the real tools on PATH (no fakes) and Open MPI set up to run here."""
    agent = tmp_path / "rsh-agent"
    agent.write_text(AGENT)
    agent.chmod(0o755)
    env = {"OMPI_MCA_plm_rsh_agent": str(agent), "OMPI_MCA_btl": "self,vader,tcp", "OMPI_MCA_btl_tcp_if_include": "lo",
           "OMPI_MCA_oob_tcp_if_include": "lo"}
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with KubeDouble() as double:
        world = NnfWorld(double, str(tmp_path))
        # the server runs as root here: an empty $SETPRIV keeps the test's private paths readable
        world.set_profile("default", setprivCommand="", progressIntervalSeconds=1)
        # one Rabbit for Lustre copies: two orted daemons posing as two hosts on one machine
        # sometimes fail to call back to mpirun under load, which would test the machine, not us
        with open(world.mpi_hostfile, "w") as fh:
            fh.write("fluxjob-1234-worker-0.fluxjob-1234.default.svc slots=4\n")
        world.env = env
        yield world
    shutil.rmtree(world.root, ignore_errors=True)  # gigabytes of copies: not for pytest's kept temp dirs


def _digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tree(top):
    out = {}
    for base, _, files in os.walk(top):
        for f in files:
            full = os.path.join(base, f)
            out[os.path.relpath(full, top)] = _digest(full)
    return out


def _random_tree(world, name):
    top = os.path.join(world.rabbit_gfs2, name)
    for i in range(12):
        sub = os.path.join(top, "d%d" % (i % 3), "e%d" % (i % 2))
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, "f%d" % i), "wb") as fh:
            fh.write(os.urandom(1000 * i + 7))
    os.makedirs(os.path.join(top, "empty"), exist_ok=True)
    return top


def _sparse(world, name, size):
    path = os.path.join(world.rabbit_gfs2, name)
    with open(path, "wb") as fh:
        fh.write(os.urandom(4096))
        fh.truncate(size)
    return path


def _compute(world, rabbit_path):
    """The compute-side path of a file under the Rabbit's gfs2 mount."""
    return COMPUTE_GFS2 + rabbit_path[len(world.rabbit_gfs2):]


def _dcp_ranks(marker):
    """Live processes whose command line names ``marker`` and runs dcp."""
    found = []
    for pid, argv in command_lines():
        named = argv and os.path.basename(argv[0]) == b"dcp" and any(marker.encode() in a for a in argv)
        if named and alive(pid, process_start_time(pid)):
            found.append(pid)
    return found


def test_dcp_file_and_tree_byte_for_byte_with_real_progress(real):
    tree = _random_tree(real, "tree")
    big = _sparse(real, "big.bin", 700 * 1024 * 1024)

    async def scenario():
        driver = await real.driver()
        names = [await driver.submit(real.request(_compute(real, tree), real.lus + "/tree-out", slots=2)),
                 await driver.submit(real.request(_compute(real, big), real.lus + "/big-out/copy.bin", slots=2))]
        docs = [await wait_done(driver, n, 180) for n in names]
        await driver.close()
        return names, docs

    names, docs = run(scenario(), timeout=240)
    assert [d["status"] for d in docs] == ["success", "success"], docs
    assert _tree(real.lus + "/tree-out/rabbit-01-0/tree") == _tree(tree)
    assert _digest(real.lus + "/big-out/rabbit-01-0/copy.bin") == _digest(big)
    cs = real.dm(names[1])["status"]["commandStatus"]
    assert cs["progress"] == 100 and cs["files"] == 1 and "(734003200 bytes" in cs["data"]
    assert cs["lastMessage"].startswith("[") and "Rate: " in cs["lastMessage"]  # dcp's own timestamped summary
    tree_cs = real.dm(names[0])["status"]["commandStatus"]
    assert tree_cs["progress"] == 100 and tree_cs["files"] == 12 and tree_cs["directories"] >= 8


def test_dcp_progress_while_running_and_cancel_kills_every_rank(real):
    big = _sparse(real, "cancel.bin", 4 * 1024 * 1024 * 1024)

    async def scenario():
        driver = await real.driver()
        name = await driver.submit(real.request(_compute(real, big), real.lus + "/cancel-out/c.bin", slots=2))
        namespace, dm_name = name.split("--")

        def progressed():
            cs = (real.dm(name).get("status") or {}).get("commandStatus") or {}
            return 0 < cs.get("progress", 0) < 100

        await until(progressed, 120, "a progress percentage from dcp")
        progress = real.dm(name)["status"]["commandStatus"]["progress"]
        ranks = _dcp_ranks("cancel.bin")
        assert await driver.cancel(name) is True
        doc = await status_doc(driver, name, 30)
        await driver.close()
        return progress, ranks, doc

    progress, ranks, doc = run(scenario(), timeout=240)
    assert 0 < progress < 100 and len(ranks) == 2  # two dcp ranks (slots=2) were running
    assert doc["status"] == "cancelled"
    deadline = time.monotonic() + 20
    while _dcp_ranks("cancel.bin") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _dcp_ranks("cancel.bin") == []


def test_dcp_missing_source_error_is_short(real):
    async def scenario():
        driver = await real.driver()
        err = await submit_error(driver, real.request(_compute(real, real.rabbit_gfs2 + "/nothing-here"), real.lus + "/x",
                                                      slots=1))
        await driver.close()
        return err

    err = run(scenario(), timeout=120)
    assert http_code(err) == 500 and err.message.startswith("internal error: could not determine source type: could not stat path")
    external = err.message.split(" - stderr: ", 1)[1]
    assert "No such file or directory" in external and "Primary job" not in external and len(external) < 400


def test_dcp_status_outage_then_recorded(real):
    big = _sparse(real, "outage.bin", 300 * 1024 * 1024)
    out = run(outage_scenario(real, _compute(real, big), real.lus + "/outage-out/o.bin"), timeout=240)
    assert out["during"]["status"]["status"] == "success" and out["during"]["resource"]["state"] == "Running"
    assert out["after"]["resource"]["state"] == "Finished" and out["after"]["resource"]["status"] == "Success"
    assert _digest(real.lus + "/outage-out/rabbit-01-0/o.bin") == _digest(big)


@pytest.mark.parametrize("fate", ["survives", "killed"])
def test_dcp_restart(real, server_factory, fate):
    big = _sparse(real, "restart-%s.bin" % fate, (3 if fate == "survives" else 1) * 1024 * 1024 * 1024)
    env = server_env(real, PATH=os.environ["PATH"], **real.env)
    out = restart_scenario(real, server_factory, env, _compute(real, big), real.lus + "/restart-%s/r.bin" % fate, fate)
    if fate == "survives":
        # a fast disk may finish the copy before the new server is up; then it is "ended meanwhile"
        if out["alive after restart"]:
            assert "its copy still runs" in out["second"].log
        assert out["status"].status == "success" and out["resource"]["commandStatus"]["progress"] == 100
        assert _digest(real.lus + "/restart-survives/rabbit-01-0/r.bin") == _digest(big)
    else:
        assert out["status"].status == "failed" and "unknown" in out["resource"]["message"]
        assert _dcp_ranks("restart-killed.bin") == []
    assert not out["run dir left"] and out["listed after"] == []


@pytest.mark.parametrize("mode", ["launch", "local"])
def test_dcp_prepare_in_one_launch_or_none_matches_the_reference_steps(real, mode):
    """With real mpirun and stat: the same decisions and error texts as a launch per step."""
    reference, reference_made = prepare_outcomes(real, "each")
    results, made = prepare_outcomes(real, mode)
    assert {k: v[0] for k, v in results.items()} == {k: v[0] for k, v in reference.items()}
    assert made == reference_made
    missing = reference["missing source"][0]
    assert missing[0] == "error" and "No such file or directory" in missing[2] and "Primary job" not in missing[2]
