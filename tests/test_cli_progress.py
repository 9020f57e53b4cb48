"""``copy-offload copy --wait`` on a terminal shows a live progress bar (tqdm) fed by status
long-polls; the same command in a pipe prints only the final status."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

SLOW_COPY = r'''
import shutil, sys, time
src, dst = sys.argv[1], sys.argv[2]
for pct in (10, 30, 50, 70, 90):
    print("Copied %d MiB of 100 MiB (%d%%) in %d secs" % (pct, pct, pct // 10), flush=True)
    time.sleep(0.5)
shutil.copyfile(src, dst)
print("Copied 100 MiB of 100 MiB (100%) in 3 secs", flush=True)
'''


def test_progress_bar_on_a_terminal(server_factory, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "in").write_text("payload\n")
    script = tmp_path / "slow_copy.py"
    script.write_text(SLOW_COPY)
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('[profiles.slow]\ncommand = "%s %s $SRC $DEST"\n' % (sys.executable, script))
    server = server_factory("local", extra=["--allow-root", str(root), "--state-dir", str(tmp_path / "state"),
                                            "--profiles", str(profiles)])
    env = {**server.client_env(), "COLUMNS": "100", "TERM": "xterm"}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a real terminal's size
    proc = subprocess.Popen([sys.executable, "-m", "copy_offload.client.cli", "--ca", server.material.cert, "copy",
                             str(root / "in"), str(root / "out"), "--profile", "slow", "--wait"],
                            stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    screen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    proc.wait(10)
    os.close(master)
    text = screen.decode(errors="replace")
    assert proc.returncode == 0, text
    # tqdm redraws the bar in place: several distinct percentages on one terminal line.
    frames = [part for part in text.split("\r") if "%|" in part]
    assert len({f.split("%|")[0][-3:] for f in frames}) >= 3, repr(text)
    assert "100%|" in text
    assert "status: success" in text
    assert (root / "out").read_text() == "payload\n"


def test_no_bar_in_a_pipe(server_factory, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "in").write_text("x")
    server = server_factory("local", extra=["--allow-root", str(root), "--state-dir", str(tmp_path / "state")])
    r = subprocess.run([sys.executable, "-m", "copy_offload.client.cli", "--ca", server.material.cert, "--json",
                        "copy", str(root / "in"), str(root / "out"), "--wait"],
                       env=server.client_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    assert '"status": "success"' in r.stdout and "%|" not in r.stdout
