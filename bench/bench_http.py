"""Authenticated ``/status`` throughput and latency of copy-offload-server against a bare Tornado
TLS handler, side by side in one run (issue target: >= 0.7x the bare handler).

    python bench/bench_http.py [--duration 5] [--rounds 3] [--concurrency 1 16 64]

Load comes from ``wrk`` (Debian package ``wrk``) with one thread, so the server under test has
the other core. Rounds alternate ours/bare; the table shows medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from support import Material, ServerProcess, server_args  # noqa: E402

LUA = """
wrk.headers["Accepts-version"] = "1.0"
wrk.headers["Authorization"] = "Bearer %s"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrk(url: str, concurrency: int, duration: float, script: str) -> Tuple[float, float, float]:
    out = subprocess.run(["wrk", "-t1", "-c%d" % concurrency, "-d%ds" % duration, "--latency", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p: str) -> float:
        value, unit = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)" % p, out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    if "Non-2xx" in out:
        raise RuntimeError("wrk saw errors:\n" + out)
    return rps, pct("50"), pct("99")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("bench_http: needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="bench-http-")
    material = Material(tmp)
    ours = ServerProcess(args=server_args(material, extra=["--driver", "mock"]),
                         env=dict(os.environ), tls=True, material=material).start()
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, os.path.join(HERE, "bare_tornado.py"), material.cert, material.key,
                             str(bare_port)], stdout=subprocess.PIPE, text=True)
    assert bare.stdout is not None and bare.stdout.readline().strip() == "Ready"
    script = os.path.join(tmp, "headers.lua")
    with open(script, "w") as f:
        f.write(LUA % material.token)
    try:
        with httpx.Client(verify=material.context(), headers={"Accepts-version": "1.0",
                          "Authorization": "Bearer " + material.token}) as c:
            name = c.post(ours.url + "/trial", content=json.dumps(
                {"computeName": "bench", "sourcePath": "/a", "destinationPath": "/b"})).text.split("=")[1].strip()
        targets = {"ours": "%s/status/%s?maxWaitSecs=0" % (ours.url, name),
                   "bare": "https://127.0.0.1:%d/status/%s?maxWaitSecs=0" % (bare_port, name)}
        results: Dict[Tuple[str, int], List[Tuple[float, float, float]]] = {}
        for _ in range(args.rounds):
            for c in args.concurrency:
                for which, url in targets.items():
                    results.setdefault((which, c), []).append(wrk(url, c, args.duration, script))
                    time.sleep(0.2)
        print("authenticated GET /status over TLS 1.3, wrk -t1, %d s x %d rounds, medians"
              % (args.duration, args.rounds))
        print("%5s | %12s %8s %8s | %12s %8s %8s | %6s" % ("conc", "ours req/s", "p50 ms", "p99 ms",
                                                         "bare req/s", "p50 ms", "p99 ms", "ratio"))
        for c in args.concurrency:
            row = []
            for which in ("ours", "bare"):
                runs = results[(which, c)]
                row.append(tuple(statistics.median(r[i] for r in runs) for i in range(3)))
            print("%5d | %12.0f %8.2f %8.2f | %12.0f %8.2f %8.2f | %5.2fx"
                  % (c, *row[0], *row[1], row[0][0] / row[1][0]))
    finally:
        with httpx.Client(verify=material.context()) as c:
            c.delete(ours.url + "/cancel/" + name, headers={"Accepts-version": "1.0",
                                                             "Authorization": "Bearer " + material.token})
        ours.stop()
        bare.terminate()
        bare.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
