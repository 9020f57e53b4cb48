"""Local profiles: the TOML file, argv substitution without a shell, and command jobs."""

from __future__ import annotations

import os
import threading
import time

import pytest
from copy_offload.server.app import http_code
from copy_offload.server.drivers.errors import DriverError
from copy_offload.server.local.command import CommandJob
from copy_offload.server.local.engine import CopyCancelled, CopyError
from copy_offload.server.local.profiles import ProfileConfigError, Profiles, unknown_profile_text
from copy_offload.server.local.progress import trim_progress_output

FAKE_DCP = """#!/bin/sh
echo "[dcp] Walking $1"
echo "Copied 1.000 MiB of 4.000 MiB (25%) in 0.100 secs (10.0 MiB/s) 1 secs left ..."
echo "Copied 2.000 MiB of 4.000 MiB (50%) in 0.200 secs (10.0 MiB/s) 1 secs left ..."
echo "Copied 3.000 MiB of 4.000 MiB (75%) in 0.300 secs (10.0 MiB/s) 1 secs left ..."
printf 'Copied 4.000 MiB of 4.000 MiB (100%%) in 0.400 secs (10.0 MiB/s) done\\n'
cp "$1" "$2" || exit 7
echo "[dcp] Done: $2" >&2
exit "${FAKE_EXIT:-0}"
"""


def write_profiles(tmp_path, text):
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    return str(path)


def test_builtin_profile_and_unknown_names():
    profiles = Profiles(None)
    assert profiles.get("").builtin and profiles.get("default").builtin
    with pytest.raises(DriverError) as info:
        profiles.get("fast")
    assert (http_code(info.value), info.value.message) == (400, unknown_profile_text("fast"))
    assert info.value.message == "unable to retrieve NnfDataMovementProfile: fast"


def test_templates_substitute_inside_arguments_without_a_shell(tmp_path):
    path = write_profiles(tmp_path, """
default = "rsync"
[profiles.rsync]
command = "rsync -a --info=progress2 $SRC $DEST"
[profiles.odd]
command = "tool --from=$SRC --to '$DEST/with space'"
storeStdout = true
""")
    profiles = Profiles(path)
    assert profiles.names() == ["default", "odd", "rsync", "verify"]
    assert profiles.get("").name == "rsync"
    evil = "/r/a; rm -rf / #$(x)"
    assert profiles.get("rsync").argv(evil, "/r/b") == ["rsync", "-a", "--info=progress2", evil, "/r/b"]
    odd = profiles.get("odd")
    assert odd.argv("/s", "/d") == ["tool", "--from=/s", "--to", "/d/with space"] and odd.store_stdout


@pytest.mark.parametrize("text, words", [
    ("[profiles.x]\ncommand = 'cp $SRC'\n", "must contain $DEST"),
    ("[profiles.x]\ncommand = ''\n", "non-empty command"),
    ("[profiles.default]\ncommand = 'cp $SRC $DEST'\n", "reserved"),
    ("[profiles.x]\ncommand = 'cp $SRC $DEST'\nshell = true\n", "unknown keys: shell"),
    ("[profiles.x]\ncommand = 'cp \"$SRC $DEST'\n", "cannot split"),
    ("default = 'nope'\n", "default profile 'nope' is not defined"),
    ("profiles = 3\n", "must be a table"),
    ("[profiles\n", "not valid TOML"),
])
def test_bad_profile_files_say_what_is_wrong(tmp_path, text, words):
    path = write_profiles(tmp_path, text)
    with pytest.raises(ProfileConfigError) as info:
        Profiles(path)
    assert words in str(info.value) and path in str(info.value)


def test_missing_profile_file(tmp_path):
    with pytest.raises(ProfileConfigError, match="cannot read the profiles file"):
        Profiles(str(tmp_path / "absent.toml"))


@pytest.fixture
def fake_dcp(tmp_path):
    script = tmp_path / "fake-dcp"
    script.write_text(FAKE_DCP)
    script.chmod(0o755)
    return str(script)


def test_command_job_parses_progress_and_keeps_trimmed_output(tmp_path, fake_dcp):
    (tmp_path / "src").write_bytes(b"payload")
    job = CommandJob([fake_dcp, str(tmp_path / "src"), str(tmp_path / "dst")])
    job.prepare()
    job.run()
    assert (tmp_path / "dst").read_bytes() == b"payload"
    assert job.percent() == 100
    assert job.message() == "[dcp] Done: %s\n" % (tmp_path / "dst")
    lines = job.output.split("\n")
    assert lines[1].endswith("(25%) in 0.100 secs (10.0 MiB/s) 1 secs left ...")
    assert lines[2:5] == ["...", "<snipped dcp progress output>", "..."]
    assert "(100%)" in lines[5] and "50%" not in job.output


def test_command_job_failure_reports_exit_status_and_output(tmp_path, fake_dcp, monkeypatch):
    monkeypatch.setenv("FAKE_EXIT", "3")
    (tmp_path / "src").write_bytes(b"x")
    job = CommandJob([fake_dcp, str(tmp_path / "src"), str(tmp_path / "dst")])
    with pytest.raises(CopyError) as info:
        job.run()
    assert info.value.message.startswith("exit status 3: [dcp] Walking")
    assert "<snipped dcp progress output>" in info.value.message


def test_command_job_cancel_kills_the_process_group(tmp_path):
    marker = tmp_path / "child-alive"
    # A child of the command keeps running unless the whole group is signalled.
    job = CommandJob(["sh", "-c", "echo started; (sleep 30; touch %s) & sleep 30" % marker, "x", "y"])
    outcome = []

    def run():
        try:
            job.run()
        except CopyCancelled as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while job.message() != "started\n" and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    job.cancel()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 10  # not the command's 30 s
    assert len(outcome) == 1
    time.sleep(0.2)
    assert not marker.exists()


def test_command_job_dryrun_runs_nothing(tmp_path):
    job = CommandJob(["definitely-not-installed-tool", "/a", "/b"], dryrun=True)
    job.prepare()
    job.run()
    assert job.message() == "Dry run: would run definitely-not-installed-tool /a /b\n"
    assert job.percent() == 100


def test_command_job_missing_program():
    job = CommandJob(["definitely-not-installed-tool", "/a", "/b"])
    with pytest.raises(CopyError, match="was not found on this server"):
        job.prepare()


def test_rsync_progress2_lines_are_understood(tmp_path):
    if not os.path.exists("/usr/bin/rsync"):
        pytest.skip("rsync is not installed")
    (tmp_path / "src").write_bytes(os.urandom(1 << 20))
    job = CommandJob(["rsync", "-a", "--info=progress2", str(tmp_path / "src"), str(tmp_path / "dst")])
    job.run()
    assert job.percent() == 100
    assert (tmp_path / "dst").read_bytes() == (tmp_path / "src").read_bytes()


def test_trim_keeps_short_outputs():
    two = "a\nCopied 1 B of 2 B (50%) x\nCopied 2 B of 2 B (100%) x\nb"
    assert trim_progress_output(two) == two
    assert trim_progress_output("no progress") == "no progress"
