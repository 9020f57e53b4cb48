"""Job lifecycle logic without Flux: the drain against a real local server, the per-job server
(started from this installation's ``copy-offload-server``), options, settings, the outcome view.

A "gate" profile makes a copy that stays running until the test creates ``<source>.go``, so a
test decides when a copy ends instead of guessing how long a big one takes.
"""

from __future__ import annotations

import os
import sys
import threading

import pytest
from copy_offload.client import Client
from copy_offload.client.errors import Unauthorized
from copy_offload.flux import drain as draining
from copy_offload.flux import jobserver
from copy_offload.flux.cli import format_outcomes, job_outcomes
from copy_offload.flux.config import ConfigError, parse_config
from flux_support import write_gate_profiles
from support import Material, ServerProcess, server_args

BIN = os.path.dirname(sys.executable)
SERVER = os.path.join(BIN, "copy-offload-server")
@pytest.fixture
def server(tmp_path):
    material = Material(str(tmp_path))
    root = tmp_path / "data"
    root.mkdir()
    proc = ServerProcess(server_args(material, extra=[
        "--allow-root", str(root), "--profiles", write_gate_profiles(str(tmp_path)),
        "--state-dir", str(tmp_path / "state")]), dict(os.environ), True, material).start()
    try:
        yield proc, root
    finally:
        proc.stop()


def make_file(path, size: int) -> None:
    with open(path, "wb") as fh:
        fh.write(os.urandom(size))


def test_drain_waits_for_a_running_copy_and_reports_it(server):
    proc, root = server
    make_file(root / "gated", 1000)
    make_file(root / "plain", 3 << 20)
    lines, announced = [], threading.Event()

    def say(line: str) -> None:
        lines.append(line)
        if line.startswith("waiting for"):
            announced.set()

    with Client(**proc.client_kwargs()) as client:
        gated = client.copy(str(root / "gated"), str(root / "gated.out"), profile="gate")
        plain = client.copy(str(root / "plain"), str(root / "plain.out"))
        client.wait(plain, timeout=60)
        box = {}
        worker = threading.Thread(target=lambda: box.update(
            r=draining.drain(client, 120, say, known=[plain, gated])))
        worker.start()
        assert announced.wait(60), lines
        assert gated in lines[0] and worker.is_alive()
        (root / "gated.go").touch()
        worker.join(60)
    result = box["r"]
    assert not result.left and result.warning() is None
    by_name = {o.name: o for o in result.outcomes}
    assert by_name[gated].status == "success" and by_name[plain].status == "success"
    assert by_name[plain].bytes == 3 << 20
    assert (root / "gated.out").read_bytes() == (root / "gated").read_bytes()
    assert any(line.startswith(f"copy {gated}: success") for line in lines)
    assert "2 copies complete (2 success, 0 not)" in result.summary()


def test_drain_limit_names_the_requests_left(server):
    proc, root = server
    make_file(root / "gated", 10)
    with Client(**proc.client_kwargs()) as client:
        name = client.copy(str(root / "gated"), str(root / "gated.out"), profile="gate")
        result = draining.drain(client, 0.5, lambda line: None)
        assert result.left == [name]
        assert result.warning() == (f"drain limit of 0.5s reached; still running, not waited "
                                    f"for: {name}")
        assert [o.state for o in result.outcomes] != ["completed"]
        off = draining.drain(client, 0, lambda line: None)
        assert off.left == [name]
        (root / "gated.go").touch()
        assert client.wait(name, timeout=60).ok


@pytest.mark.parametrize("options, expected", [
    ({}, (300.0, None)),
    ({"drain": False}, (0.0, None)),
    ({"drain": "false"}, (0.0, None)),
    ({"drain": "yes", "drain-timeout": 30}, (30.0, None)),
    ({"drain-timeout": "5"}, (5.0, None)),
])
def test_drain_limit_from_options(options, expected):
    assert draining.drain_limit(300.0, options) == expected


def test_drain_limit_is_capped_by_the_site_and_bad_values_are_one_line():
    limit, note = draining.drain_limit(60.0, {"drain-timeout": 600})
    assert limit == 60.0 and "above the site's limit" in note
    for bad in ({"drain": "maybe"}, {"drain-timeout": "soon"}, {"drain-timeout": -1},
                {"drain-timeout": True}):
        with pytest.raises(draining.OptionError, match=r"^-o copy-offload\.drain"):
            draining.drain_limit(60.0, bad)
    assert draining.wants_local_server({"local-server": 1})
    assert not draining.wants_local_server({"local-server": "false"})
    assert not draining.wants_local_server({})


def test_lifecycle_settings_parse_and_reject_bad_values():
    cfg = parse_config({"copy-offload": {"drain-timeout": 12, "local-roots": ["/scratch"],
                                         "local-server": "/opt/co/bin/copy-offload-server",
                                         "local-profiles": "/etc/co/profiles.toml"}})
    assert cfg.drain_timeout == 12.0 and cfg.local_roots == ("/scratch",)
    assert cfg.local_profiles == "/etc/co/profiles.toml"
    assert parse_config({}).local_roots == () and parse_config({}).drain_timeout == 300.0
    for bad, key in (({"local-roots": ["scratch"]}, "local-roots"),
                     ({"drain-timeout": -1}, "drain-timeout"),
                     ({"local-server": ""}, "local-server")):
        with pytest.raises(ConfigError, match=key):
            parse_config({"copy-offload": bad})


def test_per_job_server_serves_its_job_and_refuses_another_jobs_token(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    make_file(root / "a", 4096)
    envs = []
    for job in ("1001", "1002"):
        tmpdir = tmp_path / f"jobtmp-{job}"
        tmpdir.mkdir()
        envs.append(jobserver.start(jobid=job, job_tmpdir=str(tmpdir), roots=[str(root)],
                                    program=SERVER, state_base=str(tmp_path / "state")))
    first, second = envs
    key_dir = jobserver.key_dir(str(tmp_path / "jobtmp-1001"))
    assert os.stat(key_dir).st_mode & 0o777 == 0o700
    assert first["DW_WORKFLOW_TOKEN"] != second["DW_WORKFLOW_TOKEN"]
    try:
        with Client(env=first) as client:
            name = client.copy(str(root / "a"), str(root / "b"))
            assert client.wait(name, timeout=60).ok
        stolen = dict(first, DW_WORKFLOW_TOKEN=second["DW_WORKFLOW_TOKEN"])
        with Client(env=stolen) as client, pytest.raises(Unauthorized):
            client.list()
        assert jobserver.known_requests(first["COPY_OFFLOAD_STATE_DIR"]) == [name]
    finally:
        for job in ("1001", "1002"):
            facts = jobserver.info(str(tmp_path / f"jobtmp-{job}"))
            assert jobserver.stop(int(facts["pid"]))
    assert "Ready addr=" in (tmp_path / "state" / "1001").joinpath(
        os.uname().nodename, "server.log").read_text()


def test_per_job_server_without_roots_or_program_says_why(tmp_path):
    with pytest.raises(jobserver.JobServerError, match="local-roots is empty"):
        jobserver.start(jobid="1", job_tmpdir=str(tmp_path), roots=[], program=SERVER,
                        state_base=str(tmp_path))
    with pytest.raises(jobserver.JobServerError, match="was not found"):
        jobserver.start(jobid="1", job_tmpdir=str(tmp_path), roots=["/tmp"],
                        program="no-such-copy-offload-server", state_base=str(tmp_path))
    wrapper = tmp_path / "copy-offload-server"
    wrapper.write_text("#!/usr/bin/env python3\n")
    wrapper.chmod(0o755)
    with pytest.raises(jobserver.JobServerError, match="does not name its Python"):
        jobserver.start(jobid="1", job_tmpdir=str(tmp_path), roots=["/tmp"],
                        program=str(wrapper), state_base=str(tmp_path))


def test_job_view_keeps_the_last_entry_per_copy():
    log = "\n".join([
        '{"timestamp":1,"name":"copy","context":{"name":"b","state":"running","status":"",'
        '"bytes":null,"rank":0}}',
        '{"timestamp":2,"name":"copy","context":{"name":"a","state":"completed",'
        '"status":"success","bytes":10,"message":"","rank":0}}',
        '{"timestamp":3,"name":"drain","context":{"host":"n1","rank":0,"copies":2,'
        '"waited":1.5,"limit":2,"left":["b"]}}',
        "not json",
    ])
    doc = job_outcomes(log)
    assert [c["name"] for c in doc["copies"]] == ["a", "b"]
    failed = draining.Outcome("c", "completed", "failed", 3, "cp: no space\nsecond line")
    assert failed.line() == "c: failed, 3 bytes (cp: no space)"
    text = format_outcomes(doc)
    assert text.splitlines() == [
        "a  success  10 bytes", "b  running  ? bytes",
        "drain on n1 (rank 0): 2 copies, waited 1.5s of 2s; still running at the limit: b"]
