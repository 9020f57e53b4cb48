"""A per-job ``copy-offload-server --driver local`` on one node of a job, started by its shell.

Clusters without Rabbits still have node-local storage and a parallel file system; this gives
a job the same server, client and environment a Rabbit job has. Each job gets its own token
signing key, TLS certificate and token in a 0700 directory of the job shell's temporary
directory (removed by the shell at job end), so no other job's token opens it. The server
listens on a free loopback port; its records (state directory and log) stay under the site's
``local-state-dir`` in the job user's home, so ``copy-offload status`` answers after the job.
The key material is made by the server's own Python (the server extra's ``pki`` module), so
flux's own Python needs nothing beyond the client.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from typing import Callable, Dict, List, Optional, Sequence

from copy_offload.flux.vocabulary import TOKEN_VAR

HOST = "localhost"
READY = re.compile(r"Ready addr=[^ ]+:(\d+)")
INFO_FILE = "server.json"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


class JobServerError(RuntimeError):
    """The per-job server could not be started; the text says why in one line."""


def _which(program: str) -> str:
    found = shutil.which(program) if os.sep not in program else program
    if not found or not os.access(found, os.X_OK):
        raise JobServerError(f"the per-job server program {program!r} was not found "
                             "([copy-offload] local-server, or PATH)")
    return found


# Run by the server's own Python (the one its launcher script names): one process makes the
# job's token key, token and TLS pair with the server's pki module, so flux's Python needs no
# cryptography and the job starts one interpreter instead of three copy-offload-admin runs.
_MINT = """
import os, sys
from copy_offload.server import pki
keys = sys.argv[1]
key_pem = pki.generate_token_key_pem()
pki.write_secret(os.path.join(keys, "token.key"), key_pem)
cert, key = pki.generate_tls(sys.argv[2:])
pki.write_public(os.path.join(keys, "tls.crt"), cert)
pki.write_secret(os.path.join(keys, "tls.key"), key)
print(pki.mint_token(pki.pem_der(key_pem)))
"""


def _server_python(server: str) -> str:
    """The interpreter of an installed ``copy-offload-server`` launcher (its ``#!`` line)."""
    try:
        with open(server, "rb") as fh:
            first = fh.readline(4096).decode(errors="replace").strip()
    except OSError as exc:
        raise JobServerError(f"cannot read {server}: {exc.strerror}") from None
    python = first[2:].split()[0] if first.startswith("#!") and len(first) > 2 else ""
    if not python or os.path.basename(python) == "env" or not os.access(python, os.X_OK):
        raise JobServerError(f"{server} does not name its Python in its first line")
    return python


def _mint(server: str, keys: str) -> str:
    """Make the job's key material in ``keys``; return the job's token."""
    proc = subprocess.run([_server_python(server), "-c", _MINT, keys, HOST, "127.0.0.1"],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise JobServerError(f"cannot make the job's token and certificate: {last}")
    return proc.stdout.strip()


def key_dir(job_tmpdir: str) -> str:
    """Where this job's key, certificate and server facts live (inside the shell's tmpdir)."""
    return os.path.join(job_tmpdir, "copy-offload")


def state_dir(base: str, jobid: str) -> str:
    """The per-job, per-node records directory under the site's ``local-state-dir``."""
    return os.path.join(os.path.expanduser(base), jobid, socket.gethostname())


def _wait_ready(proc: subprocess.Popen, log_path: str, timeout: float,
                clock: Callable[[], float] = time.monotonic) -> int:
    deadline = clock() + timeout
    while True:
        with open(log_path, errors="replace") as fh:
            text = fh.read()
        found = READY.search(text)
        if found:
            return int(found.group(1))
        if proc.poll() is not None:
            last = (text.strip().splitlines() or ["(no output)"])[-1]
            raise JobServerError(f"the per-job server exited ({proc.returncode}) before it "
                                 f"was ready: {last}")
        if clock() >= deadline:
            proc.kill()
            raise JobServerError(f"the per-job server was not ready within {timeout:g}s "
                                 f"(log: {log_path})")
        time.sleep(0.05)


def start(*, jobid: str, job_tmpdir: str, roots: Sequence[str], program: str,
          state_base: str, profiles: Optional[str] = None,
          timeout: float = START_TIMEOUT) -> Dict[str, str]:
    """Start the server; return the variables the job's tasks need (token among them)."""
    if not roots:
        raise JobServerError("the site allows the per-job server no directories "
                             "([copy-offload] local-roots is empty)")
    server = _which(program)
    keys = key_dir(job_tmpdir)
    os.makedirs(keys, mode=0o700, exist_ok=True)
    os.chmod(keys, 0o700)
    token_key = os.path.join(keys, "token.key")
    token = _mint(server, keys)
    records = state_dir(state_base, jobid)
    os.makedirs(records, mode=0o700, exist_ok=True)
    log_path = os.path.join(records, "server.log")
    args: List[str] = [server, "--driver", "local", "-addr", "127.0.0.1:0",
                       "-cert", os.path.join(keys, "tls.crt"),
                       "-cakey", os.path.join(keys, "tls.key"), "-tokenkey", token_key,
                       "--state-dir", records]
    for root in roots:
        args += ["--allow-root", root]
    if profiles:
        args += ["--profiles", profiles]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NNF_", "DW_", "TLS_", "TOKEN_KEY"))}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    port = _wait_ready(proc, log_path, timeout)
    with open(os.path.join(keys, INFO_FILE), "w") as fh:
        json.dump({"pid": proc.pid, "port": port, "state-dir": records}, fh)
    return {
        "NNF_CONTAINER_LAUNCHER": HOST,
        "NNF_CONTAINER_PORTS": str(port),
        TOKEN_VAR: token,
        "COPY_OFFLOAD_CA_FILE": os.path.join(keys, "tls.crt"),
        "COPY_OFFLOAD_STATE_DIR": records,
    }


def info(job_tmpdir: str) -> Optional[Dict[str, object]]:
    """What ``start`` wrote for this job on this node, or None (no per-job server here)."""
    try:
        with open(os.path.join(key_dir(job_tmpdir), INFO_FILE)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def known_requests(records: str) -> List[str]:
    """Every request name the per-job server recorded (finished ones too)."""
    import sqlite3

    path = os.path.join(records, "local-requests.sqlite3")
    if not os.path.exists(path):
        return []
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return sorted(row[0] for row in db.execute("SELECT name FROM requests"))
        finally:
            db.close()
    except sqlite3.Error:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def stop(pid: int, timeout: float = STOP_TIMEOUT,
         clock: Callable[[], float] = time.monotonic) -> bool:
    """SIGTERM the server, SIGKILL it after ``timeout`` s; True when it stopped by itself."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = clock() + timeout
    while _alive(pid):
        if clock() >= deadline:
            os.kill(pid, signal.SIGKILL)
            return False
        time.sleep(0.05)
    return True


__all__ = ["JobServerError", "info", "key_dir", "known_requests", "start", "state_dir", "stop"]
