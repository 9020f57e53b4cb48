"""dev.sh, the README's entry point: a taken or bad PORT is one clear line before anything is set
up, and `clean` removes the demo's state and says what it removed. (CI runs `dev.sh test` itself;
the demo is run whole on a fresh clone, not here.)
"""

from __future__ import annotations

import os
import socket
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV_SH = os.path.join(REPO, "dev.sh")


def dev_sh(*args: str, state, **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, COPY_OFFLOAD_DEV_STATE=str(state), **env)
    return subprocess.run(["bash", DEV_SH, *args], capture_output=True, text=True, timeout=120, env=environ)


def test_demo_on_a_port_in_use_is_one_line_before_set_up(tmp_path):
    state = tmp_path / "state"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        proc = dev_sh("demo", state=state, PORT=str(port), VENV=str(tmp_path / "no-venv"))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("dev.sh: port %d on 127.0.0.1 is in use; pick another: PORT=" % port)
    assert not state.exists() and not (tmp_path / "no-venv").exists()  # nothing was set up


def test_demo_with_a_port_that_is_no_number(tmp_path):
    for value in ("abc", "0", "70000", "4000x"):
        proc = dev_sh("demo", state=tmp_path / "state", PORT=value, VENV=str(tmp_path / "no-venv"))
        assert proc.returncode == 2, (value, proc)
        assert proc.stderr == "dev.sh: PORT=%s is not a port number (1-65535); e.g. PORT=4100 bash dev.sh demo\n" % (
            str(int(value)) if value.isdigit() else value)


def test_clean_removes_the_state_and_says_so(tmp_path):
    state = tmp_path / "state"
    (state / "demo" / "src").mkdir(parents=True)
    (state / "demo" / "src" / "big.bin").write_bytes(b"x" * 100_000)
    (state / "token").write_text("secret")
    proc = dev_sh("clean", state=state)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("removed %s (" % state) and "secret" not in proc.stdout
    assert not state.exists()
    proc = dev_sh("clean", state=state)
    assert proc.returncode == 0 and proc.stdout == "nothing to clean: %s does not exist\n" % state


def test_readme_names_port_and_clean():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    assert "PORT=" in readme and "bash dev.sh clean" in readme
