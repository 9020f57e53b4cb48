"""Client cost on a compute node: ``import copy_offload.client`` and import + one ``hello``
against a local ``--driver mock`` server over TLS with a token, each in a fresh process.

    python bench/bench_client.py [--runs 30]

Every sample is a new interpreter, as a job step's first call would be. ``curl`` doing the same
hello (fresh process, TLS, token) is the peer when it is installed; a bare ``python -c pass`` is
the floor every Python figure contains. The commands take turns, one sample of each per round,
so a busy machine weighs on all of them alike; the ratio is the median of the rounds' ratios
(paired), not a ratio of medians taken at different moments.
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
from typing import Dict, List, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from support import HOST, Material, ServerProcess, server_args  # noqa: E402

HELLO = """
from copy_offload.client import Client
c = Client(host=%r, port=%d, tls=True, ca_file=%r, token=open(%r).read(), env={})
assert c.hello() == "hello back at ya"
"""


def once(cmd: Sequence[str], env: Dict[str, str]) -> float:
    """Wall time of one fresh process of ``cmd`` in ms; a failing run stops the bench."""
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000.0


def paired(commands: List[Tuple[str, Sequence[str]]], runs: int, env: Dict[str, str]) -> Dict[str, List[float]]:
    """``runs`` rounds, each running every command once in turn: sample i of each is paired."""
    samples: Dict[str, List[float]] = {name: [] for name, _ in commands}
    for _ in range(runs):
        for name, cmd in commands:
            samples[name].append(once(cmd, env))
    return samples


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
        hello = "import + Client.hello (TLS, token)"
        commands: List[Tuple[str, Sequence[str]]] = [
            ("python -c pass (floor)", [py, "-c", "pass"]),
            ("import copy_offload.client", [py, "-c", "import copy_offload.client"]),
            (hello, [py, "-c", HELLO % (HOST, server.port, material.cert, material.token_file)]),
        ]
        curl = shutil.which("curl")
        if curl:
            commands.append(("curl hello (TLS, token)", [
                curl, "-sf", "--cacert", material.cert, "-H", "Accepts-version: 1.0",
                "-H", "@" + _header_file(tmp, material.token), "https://%s:%d/hello" % (HOST, server.port)]))
        samples = paired(commands, args.runs, env)
        print("client: fresh process per sample, %d paired rounds, wall ms (machine has %d CPUs)"
              % (args.runs, os.cpu_count() or 0))
        print("%-36s | %8s %8s %8s" % ("what", "median", "p90", "min"))
        for name, xs in samples.items():
            print("%-36s | %8.1f %8.1f %8.1f" % (name, statistics.median(xs), p90(xs), min(xs)))
        if curl:
            ratios = [a / b for a, b in zip(samples[hello], samples["curl hello (TLS, token)"])]
            print("ratio: python hello / curl hello = %.2fx (median of paired rounds)" % statistics.median(ratios))
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
