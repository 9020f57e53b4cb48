"""The nnf driver's pure parts: command line, hostfile, dcp output parsing, Go formats."""

from __future__ import annotations

from copy_offload.server.nnf.command import (
    build_dm_command,
    build_stat_or_mkdir_command,
    hostfile_slots,
    hostfile_text,
)
from copy_offload.server.nnf.config import missing_environment
from copy_offload.server.nnf.driver import request_state
from copy_offload.server.nnf.progress import (
    SNIP,
    OutputLog,
    format_duration,
    parse_duration,
    parse_progress,
    parse_stats,
)

PROFILE = {
    "command": "ulimit -n 2048 && mpirun --allow-run-as-root --hostfile $HOSTFILE dcp --progress 1 --uid $UID --gid $GID $SRC $DEST",
    "slots": 8,
    "maxSlots": 0,
}


def dm(**user):
    return {"spec": {"userId": 1001, "groupId": 1002, "source": {"path": "/src"}, "destination": {"path": "/dst"},
                     "userConfig": user}}


def test_nnf_command_building():
    cmd = build_dm_command(PROFILE, "/tmp/dm-1/hostfile", dm())
    assert cmd == ("ulimit -n 2048 && mpirun --mca orte_tmpdir_base /tmp/dm-1 --allow-run-as-root --hostfile "
                   "/tmp/dm-1/hostfile dcp --progress 1   /src /dst")
    cmd = build_dm_command(PROFILE, "/tmp/dm-1/hostfile", dm(mpirunOptions="-x A=1", dcpOptions="--sparse"))
    assert cmd.startswith("ulimit -n 2048 && mpirun --mca orte_tmpdir_base /tmp/dm-1 -x A=1 --allow-run-as-root")
    assert "dcp --sparse --progress 1" in cmd
    assert build_dm_command(PROFILE, "/tmp/dm-1/hostfile", dm(dryrun=True)) == "true"
    # no mpirun: no orte option, options that have no anchor are dropped; $UID kept where not --uid
    plain = {"command": "dcp --uid $UID $SRC $DEST owner=$UID:$GID"}
    assert build_dm_command(plain, "/h/hostfile", dm(mpirunOptions="-x B")) == "dcp  /src /dst owner=1001:1002"
    stat = build_stat_or_mkdir_command("mpirun -np 1 --hostfile $HOSTFILE -- $SETPRIV stat $PATH",
                                       "setpriv --euid $UID --egid $GID", uid=5, gid=6, hostfile="/d/hostfile",
                                       path="/p", use_setpriv=True)
    assert stat == "mpirun --mca orte_tmpdir_base /d -np 1 --hostfile /d/hostfile -- setpriv --euid 5 --egid 6 stat /p"
    unpriv = build_stat_or_mkdir_command("$SETPRIV mkdir -p $PATH", "setpriv", uid=5, gid=6, hostfile="/d/h",
                                         path="/p", use_setpriv=False)
    assert unpriv == " mkdir -p /p"


def test_nnf_hostfile_slots():
    assert hostfile_slots(PROFILE, dm()) == (8, 0)
    assert hostfile_slots(PROFILE, dm(slots=0, maxSlots=4)) == (0, 4)
    assert hostfile_slots({"slots": 2, "maxSlots": 3}, dm(slots=-1)) == (2, 3)
    assert hostfile_text(["a", "b", "a"], 8, 0) == "a slots=8\nb slots=8\n"
    assert hostfile_text(["a"], 0, 16) == "a max_slots=16\n"
    assert hostfile_text(["a"], 2, 3) == "a slots=2 max_slots=3\n"
    assert hostfile_text(["a"], 0, 0) == "a\n"


def _reference_trim(output):
    lines = output.split("\n")
    idx = [i for i, line in enumerate(lines) if parse_progress(line) is not None]
    if not idx or idx[-1] - idx[0] <= 1:
        return output
    return "\n".join(lines[: idx[0] + 1] + SNIP + lines[idx[-1]:])


def trim_dcp_output(output: str) -> str:
    """The reference's ``TrimDcpProgressFromOutput`` on a whole output, through our OutputLog."""
    log = OutputLog(max_chars=len(output) * 2 + 2)
    log.feed(output)
    log.flush()
    return log.text(final=True)


def test_nnf_output_trimming_matches_reference():
    p = "Copied 1.000 GiB (%d%%) in 1.001 secs (4.174 GiB/s) 9 secs left ..."
    cases = [
        "",
        "no progress\nat all\n",
        "head\n" + p % 10 + "\n" + p % 20 + "\ndone\n",
        "head\n" + p % 10 + "\nmiddle\n" + p % 20 + "\ntail\n",
        "\n".join(["start"] + [p % i for i in range(1, 60)] + ["Copied 9 GiB (100%) in 3 secs done", "Seconds: 1.5", "Items: 4"]),
        p % 5 + "\nstderr line\n" + p % 6,
    ]
    for output in cases:
        assert trim_dcp_output(output) == _reference_trim(output), output
    trimmed = trim_dcp_output(cases[4])
    assert trimmed.count("<snipped dcp progress output>") == 1 and "(1%)" in trimmed and "(100%)" in trimmed
    # streaming: the same result however the output is chunked
    log = OutputLog()
    text = cases[3]
    lines = []
    for i in range(0, len(text), 3):
        lines += log.feed(text[i:i + 3])
    lines += log.flush()
    assert log.text(final=True) == _reference_trim(text)
    assert lines[1] == p % 10 + "\n"
    # a chatty command keeps a bounded output
    small = OutputLog(max_chars=1000)
    small.feed("x" * 50 + "\n" * 1)
    for _ in range(500):
        small.feed("y" * 50 + "\n")
    assert len(small.text()) < 1500 and "dropped" in small.text()


def test_nnf_progress_and_stats_parsing():
    assert parse_progress("Copied 4.200 GiB (42%) in 12.002 secs (358.349 MiB/s) 17 secs left ...") == 42
    assert parse_progress("Copy data: 18.626 GiB (20000000000 bytes)") is None
    stats = {}
    for line in ["Seconds: 171.458", "Items: 2", "  Directories: 1", "  Files: 1", "  Links: 0",
                 "Data: 18.626 GiB (20000000000 bytes)", "Rate: 111.243 MiB/s (20000000000 bytes in 171.458 seconds)",
                 "Copy rate: 111.258 MiB/s (x)", "Started: Jul-25-2024,16:44:33"]:
        parse_stats(line, stats)
    assert stats == {"seconds": "171.458", "items": 2, "directories": 1, "files": 1,
                     "data": "18.626 GiB (20000000000 bytes)", "rate": "111.243 MiB/s (20000000000 bytes in 171.458 seconds)"}
    state = request_state({"status": {"startTime": "2026-06-01T15:05:02.481935Z", "state": "Finished", "status": "Success",
                                      "commandStatus": dict(stats, command="/bin/bash -c x", progress=100, elapsedTime="1m2.5s")}})
    assert state.bytes_total == 20000000000 and state.files_total == 1 and state.elapsed == 62.5
    assert abs(state.rate - 20000000000 / 171.458) < 1


def test_nnf_go_durations():
    for text, seconds in [("12.004183592s", 12.004183592), ("1m30.5s", 90.5), ("250ms", 0.25), ("1h2m5s", 3725.0),
                          ("1.5\u00b5s", 1.5e-6), ("0s", 0.0)]:
        assert abs(parse_duration(text) - seconds) < 1e-9
        assert format_duration(seconds) == text
    assert parse_duration("junk") == 0.0


def test_nnf_missing_environment():
    full = {"NNF_NODE_NAME": "rabbit-01", "DW_WORKFLOW_NAME": "w", "DW_WORKFLOW_NAMESPACE": "default", "ENVIRONMENT": "test"}
    assert missing_environment(full) is None
    text = missing_environment({"DW_WORKFLOW_NAME": "w"})
    assert "missing NNF_NODE_NAME, DW_WORKFLOW_NAMESPACE, ENVIRONMENT" in text
    assert "invalid value for NNF_REST_CONFIG_QPS" in missing_environment(dict(full, NNF_REST_CONFIG_QPS="fast"))
    assert missing_environment(dict(full, NNF_REST_CONFIG_QPS="50", NNF_REST_CONFIG_BURST="100")) is None
