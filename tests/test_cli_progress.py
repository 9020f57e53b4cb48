"""``copy-offload`` as a user meets it: a real server subprocess, the CLI as a subprocess on
pipes, and on a pseudo-terminal (python's ``pty``) for the bar and for Ctrl-C."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from typing import Dict, List, Optional, Tuple

import pytest
from copy_offload.client import Status, progress, units

CLI = [sys.executable, "-m", "copy_offload.client.cli"]

SLOW_COPY = r'''
import shutil, sys, time
src, dst = sys.argv[1], sys.argv[2]
for pct in (10, 30, 50, 70, 90):
    print("Copied %d MiB of 100 MiB (%d%%) in %d secs" % (pct, pct, pct // 10), flush=True)
    time.sleep(0.5)
shutil.copyfile(src, dst)
print("Copied 100 MiB of 100 MiB (100%) in 3 secs", flush=True)
'''


def local_server(server_factory, tmp_path, profiles: str = ""):
    """A local-driver server confined to ``tmp_path/root``, with a ``slow`` and a ``fail`` profile."""
    root = tmp_path / "root"
    root.mkdir()
    script = tmp_path / "slow_copy.py"
    script.write_text(SLOW_COPY)
    failing = tmp_path / "fail.py"
    failing.write_text("import sys\nsys.exit('disk on fire: ' + sys.argv[1])\n")
    toml = tmp_path / "profiles.toml"
    toml.write_text('[profiles.slow]\ncommand = "%s %s $SRC $DEST"\n[profiles.fail]\ncommand = "%s %s $SRC $DEST"\n%s'
                    % (sys.executable, script, sys.executable, failing, profiles))
    server = server_factory("local", extra=["--allow-root", str(root), "--state-dir", str(tmp_path / "state"),
                                            "--profiles", str(toml)])
    return server, root


def cli(server, *args: str, cwd: Optional[str] = None, env: Optional[Dict[str, str]] = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in pipes, as a script or a batch job runs it."""
    environment = env if env is not None else server.client_env()
    return subprocess.run([*CLI, "--ca", server.material.cert, *args], env=environment, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd)


def on_terminal(argv: List[str], env: Dict[str, str], interrupt_after: Optional[str] = None,
                timeout: float = 120) -> Tuple[int, str]:
    """Run ``argv`` on a new pseudo-terminal as its controlling terminal (so ^C is a real SIGINT
    from the line discipline); type ^C once ``interrupt_after`` shows up. Returns (code, screen)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal's size
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm"},
                            close_fds=True, start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            screen += chunk
            if interrupt_after and interrupt_after.encode() in screen:
                os.write(master, b"\x03")
                interrupt_after = None
        elif proc.poll() is not None:
            break
    code = proc.wait(30)
    os.close(master)
    return code, screen.decode(errors="replace")


def test_progress_bar_on_a_terminal(server_factory, tmp_path):
    server, root = local_server(server_factory, tmp_path)
    (root / "in").write_text("payload\n")
    code, text = on_terminal([*CLI, "--ca", server.material.cert, "copy", str(root / "in"), str(root / "out"),
                              "--profile", "slow", "--wait"], server.client_env())
    assert code == 0, text
    name = re.search(r"started (\S+):", text).group(1)
    assert text.index("started " + name) < text.index("%")  # the name comes first, at submit
    # One line redrawn in place: several distinct percentages, each frame a bar.
    frames = [part for part in text.split("\r") if re.match(r"\s*\d+% \|", part)]
    assert len({f.split("%")[0].strip() for f in frames}) >= 3, repr(text)
    assert re.search(r"100% \|\S+\|", text) and "status: success" in text
    assert "Traceback" not in text and (root / "out").read_text() == "payload\n"


def test_bar_figures_are_the_servers_own():
    """Rate and time left from bytesPerSecond and the totals; one unit system; the first draw
    starts at what was already copied."""
    gib = 1024 ** 3
    with open(os.devnull, "w", encoding="utf-8") as devnull:
        bar = progress.Bar(devnull)
    first = Status(state="running", bytes_total=2 * gib, bytes_copied=gib, bytes_per_second=512 * 1024 ** 2)
    line = bar.line(first)
    assert line.startswith("  50% |") and "1.00 GiB / 2.00 GiB" in line
    assert "512 MiB/s" in line and "0:02 left" in line
    assert not re.search(r"\d(kB|MB|GB|TB)", line)  # never SI beside IEC
    unknown = bar.line(Status(state="running", progress=30))
    assert unknown.startswith("  30% |") and "left" not in unknown and "/s" not in unknown
    assert "pending" in bar.line(Status(state="pending"))
    done = bar.line(Status(state="completed", status="success", bytes_total=10, bytes_copied=7))
    assert done.startswith(" 100% |") and "10 B / 10 B" in done
    assert (units.size(1536), units.rate(721 * 1024 ** 2), units.duration(3725)) == ("1.50 KiB", "721 MiB/s", "1:02:05")


def test_plain_lines_come_at_the_interval_whatever_the_status_rate():
    now = [0.0]
    stream = io.StringIO()
    lines = progress.Lines("n--1", stream, interval=10, clock=lambda: now[0])
    for second in range(26):  # a status a second for 25 s
        now[0] = float(second)
        lines(Status(state="running", bytes_total=100, bytes_copied=4 * second, bytes_per_second=4))
    lines(Status(state="completed", status="success", bytes_total=100, bytes_copied=100))
    assert stream.getvalue().splitlines() == [
        "copy-offload: n--1: running, 0%, 0 B / 100 B, 4 B/s, 0:25 left",
        "copy-offload: n--1: running, 40%, 40 B / 100 B, 4 B/s, 0:15 left",
        "copy-offload: n--1: running, 80%, 80 B / 100 B, 4 B/s, 0:05 left",
    ]


def test_plain_progress_lines_in_a_pipe(server_factory, tmp_path):
    server, root = local_server(server_factory, tmp_path)
    (root / "in").write_text("payload\n")
    r = cli(server, "copy", str(root / "in"), str(root / "out"), "--profile", "slow", "--wait",
            "--progress-interval", "0.5")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    name = re.match(r"copy-offload: started (\S+): ", lines[0]).group(1)
    progress_lines = [line for line in lines[1:] if line.startswith("copy-offload: %s: running" % name)]
    assert len(progress_lines) >= 2 and len(progress_lines) == len(lines) - 1, r.stderr
    assert re.search(r"running, \d+%", r.stderr) and "\r" not in r.stderr
    assert "status: success" in r.stdout and "name: %s" % name in r.stdout


def test_json_in_a_pipe_has_the_name_and_nothing_on_stderr(server_factory, tmp_path):
    server, root = local_server(server_factory, tmp_path)
    (root / "in").write_text("x")
    r = cli(server, "--json", "copy", str(root / "in"), str(root / "out"), "--wait")
    assert r.returncode == 0 and r.stderr == ""
    doc = json.loads(r.stdout)
    assert doc["status"] == "success" and doc["name"].endswith("--nnf-copy-offload-0")


def test_ctrl_c_during_wait_says_the_copy_goes_on(mock_server):
    code, text = on_terminal([*CLI, "--ca", mock_server.material.cert, "copy", "/a", "/b", "--wait"],
                             mock_server.client_env(), interrupt_after="started ")
    name = re.search(r"started (\S+):", text).group(1)
    assert code == 130, text
    assert "interrupted; %s: it continues on the server" % name in text
    assert "copy-offload cancel %s" % name in text and "Traceback" not in text
    assert text.count("interrupted") == 1


def test_a_closed_pipe_is_no_traceback(mock_server):
    """``copy-offload list | head -1`` when head has gone: exit 141, nothing on stderr."""
    env = mock_server.client_env()
    for i in range(20):
        cli(mock_server, "copy", "/a", "/b%d" % i)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write
    proc = subprocess.run([*CLI, "--ca", mock_server.material.cert, "list"], env=env,
                          stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write_end)
    assert proc.returncode == 141 and "Traceback" not in proc.stderr, proc.stderr


def test_options_after_the_command_and_values_that_start_with_a_dash(mock_server):
    r = cli(mock_server, "list", "--json")
    assert (r.returncode, r.stdout) == (0, '{"active": []}\n')
    r = cli(mock_server, "copy", "/a", "/b", "--dcp-options", "--sparse", "--mpirun-options", "-x FOO", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["name"].startswith("mock-rabbit-01--"), r.stderr
    r = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and re.fullmatch(r"copy-offload \S+\n", r.stdout)


def test_relative_paths_and_several_sources_as_cp(server_factory, tmp_path):
    server, root = local_server(server_factory, tmp_path)
    for name in ("a", "b", "c"):
        (root / name).write_text(name * 3)
    (root / "out").mkdir()
    r = cli(server, "copy", "a", "b", "c", "out", "--wait", cwd=str(root))
    assert r.returncode == 0, r.stderr
    assert [(root / "out" / n).read_text() for n in "abc"] == ["aaa", "bbb", "ccc"]
    assert len(re.findall(r"started \S+: %s/. -> %s/out" % (root, root), r.stderr)) == 3
    assert r.stdout.count("status: success") == 3
    r = cli(server, "copy", "a", "b", "nowhere", cwd=str(root))
    assert r.returncode == 2 and "must be an existing directory" in r.stderr


def test_status_in_human_units(server_factory, tmp_path):
    server, root = local_server(server_factory, tmp_path)
    (root / "in").write_bytes(b"x" * 3000)
    name = cli(server, "copy", str(root / "in"), str(root / "out")).stdout.strip()
    cli(server, "status", name, "--wait", "--quiet")
    r = cli(server, "status", name)
    assert r.returncode == 0 and "copied: 2.93 KiB of 2.93 KiB" in r.stdout and "files: 1 of 1" in r.stdout
    assert re.search(r"^rate: [\d.]+ (B|KiB|MiB|GiB)/s$", r.stdout, re.M), r.stdout
    assert "bytes per second" not in r.stdout


def test_a_failed_copy_says_why_on_stderr(server_factory, tmp_path):
    server, root = local_server(server_factory, tmp_path)
    (root / "in").write_text("x")
    r = cli(server, "copy", str(root / "in"), str(root / "out"), "--profile", "fail", "--wait")
    assert r.returncode == 1, r.stderr
    assert re.search(r"copy-offload: \S+ failed \(failed\): .*disk on fire", r.stderr), r.stderr
    assert "status: failed" in r.stdout and not re.search("^message:", r.stdout, re.M)  # the why is on stderr


def test_quiet_and_dry_run_wait_and_cancel_of_a_finished_copy(mock_server):
    r = cli(mock_server, "copy", "/a", "/b", "--dryrun", "--wait", "--quiet")
    assert r.returncode == 0 and r.stderr == "" and "status: success" in r.stdout
    name = re.search(r"name: (\S+)", r.stdout).group(1)
    r = cli(mock_server, "cancel", name)
    assert r.returncode == 0 and r.stdout == "%s had already finished (the server no longer lists it); " \
        "nothing to cancel\n" % name
    running = cli(mock_server, "copy", "/a", "/b").stdout.strip()
    r = cli(mock_server, "--json", "cancel", running)
    assert json.loads(r.stdout) == {"cancelled": running, "already_finished": False}


def test_timeout_bounds_the_whole_wait(mock_server):
    started = time.monotonic()
    r = cli(mock_server, "copy", "/a", "/b", "--wait", "--timeout", "2")
    assert r.returncode == 124 and time.monotonic() - started < 60
    assert "state: running" in r.stdout and re.search(r"still running after 2 s; it continues", r.stderr)


def test_errors_say_what_to_do(mock_server, server_factory):
    r = cli(mock_server, "list", env=mock_server.client_env(token=False))
    assert r.returncode == 1 and "no token was set" in r.stderr and "DW_WORKFLOW_TOKEN" in r.stderr
    r = cli(mock_server, "--no-tls", "hello")
    assert r.returncode == 3 and "leave out --no-tls" in r.stderr
    r = subprocess.run([*CLI, "hello"], env={**mock_server.client_env(), "NNF_CONTAINER_PORTS": "1"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "--ca" in r.stderr and "/etc/nnf-dm-usercontainer/cert.pem" in r.stderr
    r = cli(mock_server, "copy", "/a", "/b", "--verify", "--profile", "fast")
    assert r.returncode == 2 and "leave out --profile fast" in r.stderr
    help_text = subprocess.run([*CLI, "--help"], capture_output=True, text=True, timeout=60).stdout
    for code in ("0 ", "1 ", "2 ", "3 ", "124", "130", "141"):
        assert "\n  %s" % code in help_text
    assert all("Traceback" not in text for text in (r.stderr, help_text))


@pytest.mark.parametrize("argv", [["copy", "/only-one"], ["status"], ["--timeout", "0", "list"]])
def test_usage_errors_exit_2(mock_server, argv):
    r = cli(mock_server, *argv)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("usage:")


MAN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "share", "man", "man1")


def man_text(name: str) -> str:
    with open(os.path.join(MAN, name), encoding="utf-8") as handle:
        return handle.read().replace("\\-", "-")


def test_the_man_page_covers_every_command_option_and_exit_code():
    from copy_offload.client import cli as cli_module

    text = man_text("copy-offload.1")
    parser = cli_module._parser()
    commands = next(a for a in parser._actions if isinstance(getattr(a, "choices", None), dict)).choices
    options = {o for a in parser._actions for o in a.option_strings}
    for command, sub in commands.items():
        assert re.search(r"^\.BI? %s\b|\b%s\b" % (command, command), text, re.M), command
        options |= {o for a in sub._actions for o in a.option_strings}
    for option in options - {"-h", "--help"}:
        assert option in text, option
    for code in (0, 1, 2, 3, 124, 130, 141):
        assert re.search(r"^\.B %d$" % code, text, re.M), code


def test_the_tester_man_page_covers_every_flag():
    from copy_offload.client.tester import OPTSTRING

    text = man_text("copy-offload-tester.1")
    for flag in OPTSTRING.replace(":", ""):
        assert re.search(r"(^\.B(I|R)? |\s)-%s\b" % flag, text, re.M), flag


def test_losing_the_server_mid_wait_names_the_copy(server_factory):
    server = server_factory("mock")
    proc = subprocess.Popen([*CLI, "--ca", server.material.cert, "copy", "/a", "/b", "--wait"],
                            env=server.client_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()  # the wait has begun once the name is out
    name = re.match(r"copy-offload: started (\S+):", first).group(1)
    server.stop()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "%s: it may continue on the server" % name in err and "Traceback" not in err


def test_copy_verify_end_to_end(server_factory, tmp_path):
    """``copy --verify`` reaches the local driver's verifying profile; status shows the figures."""
    server, root = local_server(server_factory, tmp_path)
    (root / "tree" / "sub").mkdir(parents=True)
    (root / "tree" / "sub" / "f").write_bytes(os.urandom(70000))
    (root / "tree" / "g").write_bytes(b"g" * 5000)
    r = cli(server, "--json", "copy", str(root / "tree"), str(root / "out"), "--verify", "--wait")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["bytes_verified"], doc["verify_mismatches"]) == (75000, 0), doc
    assert (root / "out" / "sub" / "f").read_bytes() == (root / "tree" / "sub" / "f").read_bytes()
    r = cli(server, "status", doc["name"])
    assert "verified: 73.2 KiB, 0 mismatch(es)" in r.stdout, r.stdout
    r = cli(server, "copy", str(root / "tree"), str(root / "out2"), "--verify", "--profile", "slow")
    assert r.returncode == 2 and "--verify" in r.stderr
