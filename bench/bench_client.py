"""Client cost on a compute node: ``import copy_offload.client`` and import + one ``hello``
against a local ``--driver mock`` server over TLS with a token, each in a fresh process.

    python bench/bench_client.py [--runs 30]

Every sample is a new interpreter, as a job step's first call would be. ``curl`` doing the same
hello (fresh process, TLS, token) is the peer when it is installed; a bare ``python -c pass`` is
the floor every Python figure contains.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from support import HOST, Material, ServerProcess, server_args  # noqa: E402

HELLO = """
from copy_offload.client import Client
c = Client(host=%r, port=%d, tls=True, ca_file=%r, token=open(%r).read(), env={})
assert c.hello() == "hello back at ya"
"""


def timed(cmd: Sequence[str], runs: int, env: Dict[str, str]) -> List[float]:
    """Wall time of ``cmd`` in ms, one fresh process per run; a failing run stops the bench."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def p90(xs: List[float]) -> float:
    return statistics.quantiles(xs, n=10)[-1] if len(xs) >= 2 else xs[0]


def import_breakdown(env: Dict[str, str]) -> List[tuple]:
    """The heaviest modules by cumulative import time (``-X importtime``), top-level first."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import copy_offload.client"],
                         env=env, capture_output=True, text=True, check=True).stderr
    rows = []
    for line in err.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 2:
            rows.append((int(parts[1]) / 1000.0, name.strip()))
    return sorted(rows, reverse=True)[:8]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="fresh processes per figure")
    args = ap.parse_args()
    env = dict(os.environ)
    tmp = tempfile.mkdtemp(prefix="bench-client-")
    material = Material(tmp)
    server = ServerProcess(args=server_args(material, extra=["--driver", "mock"]), env=env, tls=True,
                           material=material).start()
    try:
        py = sys.executable
        rows = [("python -c pass (floor)", timed([py, "-c", "pass"], args.runs, env)),
                ("import copy_offload.client", timed([py, "-c", "import copy_offload.client"],
                                                     args.runs, env)),
                ("import + Client.hello (TLS, token)",
                 timed([py, "-c", HELLO % (HOST, server.port, material.cert, material.token_file)],
                       args.runs, env))]
        curl = shutil.which("curl")
        if curl:
            rows.append(("curl hello (TLS, token)", timed(
                [curl, "-sf", "--cacert", material.cert, "-H", "Accepts-version: 1.0",
                 "-H", "@" + _header_file(tmp, material.token), "https://%s:%d/hello" % (HOST, server.port)],
                args.runs, env)))
        print("client: fresh process per sample, %d samples, wall ms (machine has %d CPUs)"
              % (args.runs, os.cpu_count() or 0))
        print("%-36s | %8s %8s %8s" % ("what", "median", "p90", "min"))
        for name, xs in rows:
            print("%-36s | %8.1f %8.1f %8.1f" % (name, statistics.median(xs), p90(xs), min(xs)))
        med = {name: statistics.median(xs) for name, xs in rows}
        hello_py = med["import + Client.hello (TLS, token)"]
        if curl:
            print("ratio: python hello / curl hello = %.2fx" % (hello_py / med["curl hello (TLS, token)"]))
        print("heaviest imports under copy_offload.client (-X importtime, cumulative ms, one run):")
        for ms, name in import_breakdown(env):
            print("  %7.1f  %s" % (ms, name))
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _header_file(tmp: str, token: str) -> str:
    """The Authorization header in a 0600 file, so the token is not on curl's command line."""
    path = os.path.join(tmp, "auth-header")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("Authorization: Bearer %s\n" % token)
    return path


if __name__ == "__main__":
    sys.exit(main())
