"""Offload while computing against ``cp`` at the end: job wall times in a real Flux instance.

One job writes ``--gib`` GiB (``--data``, default zeros: a fast write) to node-local storage
(a temporary directory) as ``--steps`` checkpoints, "computing" ``--compute`` seconds after each one (a sleep: the node's cores stay
free for the copy engine, as on a compute node whose application waits on the network or a
GPU). Two ways to get the checkpoints to the destination (another directory, standing in for
the parallel file system):

- offload: ``-o copy-offload.local-server``; after each checkpoint the job runs
  ``copy-offload copy`` (no wait) and goes on computing; the job shell drains the last copies.
- cp: the same job without the server, ``cp`` of every checkpoint after the last step.

Each job's wall time is its eventlog's ``start`` to ``finish`` (the drain is inside it; the
per-job server's start-up is inside ``start`` .. first task, so it counts too). Jobs are
interleaved, ``--reps`` of each; every job's destination is checked (size and its first MiB)
before the next. Medians are printed, with the spread, and the fixed cost of the per-job server
(an empty job with and without it).

    PATH=/opt/flux/bin:$PATH python bench/bench_lifecycle.py [--gib 1] [--steps 4]
        [--compute 1.0] [--reps 5] [--json]

Needs ``flux`` on PATH (flux-core with its pkg-config files), make and a C compiler, and this
installation's ``copy-offload-server`` next to the running Python.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)


def job_script(mode: str, src: str, dst: str, steps: int, mib: int, compute: float,
               source: str = "/dev/zero") -> str:
    if steps == 0:  # the fixed cost: an empty job, with or without the per-job server
        return f"mkdir -p {src} {dst}\n"
    cli = os.path.join(BIN, "copy-offload")
    lines = [f"set -e; mkdir -p {src} {dst}", f"for i in $(seq 1 {steps}); do",
             f"  head -c {mib}M {source} > {src}/ckpt-$i",
             f"  sleep {compute}"]
    if mode == "offload":
        lines.append(f"  {cli} copy {src}/ckpt-$i {dst}/ckpt-$i > /dev/null")
    lines.append("done")
    if mode == "cp":
        lines.append(f"cp {src}/ckpt-* {dst}/")
    return "\n".join(lines) + "\n"


def flux(*args: str, env: Dict[str, str]) -> str:
    proc = subprocess.run(["flux", *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"flux {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def run_job(mode: str, work: str, n: int, opts: argparse.Namespace, env: Dict[str, str],
            steps: int) -> float:
    src, dst = os.path.join(work, f"local-{mode}-{n}"), os.path.join(work, f"pfs-{mode}-{n}")
    mib = max(1, int(opts.gib * 1024 / max(1, opts.steps)))
    extra = ["-o", "copy-offload.local-server"] if mode == "offload" else []
    job = flux("submit", *extra, "sh", "-c", job_script(
        mode, src, dst, steps, mib, opts.compute, opts.data), env=env).strip()
    flux("job", "wait-event", "-t", "3600", job, "clean", env=env)
    events = {}
    for line in flux("job", "eventlog", "--format=json", job, env=env).splitlines():
        entry = json.loads(line)
        events.setdefault(entry["name"], entry)
    status = events.get("finish", {}).get("context", {}).get("status")
    if status != 0:
        sys.exit(f"{mode} job {job} failed (status {status}):\n"
                 + flux("job", "attach", job, env=env))
    for i in range(1, steps + 1):
        a, b = os.path.join(src, f"ckpt-{i}"), os.path.join(dst, f"ckpt-{i}")
        with open(a, "rb") as fa, open(b, "rb") as fb:
            if os.path.getsize(a) != os.path.getsize(b) or fa.read(1 << 20) != fb.read(1 << 20):
                sys.exit(f"{mode} job {job}: {b} differs from {a}")
    shutil.rmtree(src)
    shutil.rmtree(dst)
    return events["finish"]["timestamp"] - events["start"]["timestamp"]


def inner(opts: argparse.Namespace) -> None:
    """Runs as the initial program of ``flux start``."""
    env = dict(os.environ)
    times: Dict[str, List[float]] = {"offload": [], "cp": [], "empty-offload": [], "empty-cp": []}
    for n in range(opts.reps):
        for mode in ("offload", "cp") if n % 2 == 0 else ("cp", "offload"):
            times[mode].append(run_job(mode, opts.work, n, opts, env, opts.steps))
            times["empty-" + mode].append(run_job(mode, opts.work, n, opts, env, 0))
    result: Dict[str, Any] = {
        mode: {"median": statistics.median(t), "min": min(t), "max": max(t),
               "runs": [round(x, 3) for x in t]} for mode, t in times.items()}
    result["settings"] = {"gib": opts.gib, "steps": opts.steps, "compute": opts.compute,
                          "data": opts.data,
                          "reps": opts.reps, "ideal-compute-only": opts.steps * opts.compute}
    with open(opts.out, "w") as fh:
        json.dump(result, fh)


def python_path(tmp: str) -> str:
    """PYTHONPATH that lets flux's Python import copy_offload.flux and the client."""
    pkg = os.path.join(tmp, "pysite", "copy_offload")
    os.makedirs(pkg)
    for name, folder in (("flux", "flux_plugin"), ("client", "client")):
        os.symlink(os.path.join(REPO, folder), os.path.join(pkg, name))
    parts = [os.path.dirname(pkg)]
    if subprocess.run(["flux", "python", "-c", "import httpx"], capture_output=True).returncode:
        module = importlib.import_module("httpx")
        parts.append(os.path.dirname(os.path.dirname(module.__file__ or "")))
    return os.pathsep.join(parts)


def outer(opts: argparse.Namespace) -> Dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="bench-lifecycle-")
    try:
        env = dict(os.environ)
        prefix = os.path.dirname(os.path.dirname(os.path.realpath(shutil.which("flux") or "")))
        env["PKG_CONFIG_PATH"] = os.pathsep.join(
            p for p in (env.get("PKG_CONFIG_PATH"), os.path.join(prefix, "lib", "pkgconfig")) if p)
        build = os.path.join(tmp, "build")
        subprocess.run(["make", "-s", "-C", os.path.join(REPO, "jobtap"), f"BUILD={build}"],
                       env=env, check=True)
        shell_path = subprocess.run(["pkg-config", "--variable=fluxshellpluginpath", "flux-core"],
                                    env=env, capture_output=True, text=True).stdout.strip()
        work = os.path.join(tmp, "data")
        conf = os.path.join(tmp, "conf")
        os.makedirs(work)
        os.makedirs(conf)
        with open(os.path.join(conf, "copy-offload.toml"), "w") as fh:
            fh.write(f'[copy-offload]\nlocal-roots = ["{work}"]\n'
                     f'local-server = "{os.path.join(BIN, "copy-offload-server")}"\n'
                     f'local-state-dir = "{os.path.join(tmp, "state")}"\n'
                     "drain-timeout = 3600\n")
        env["PYTHONPATH"] = python_path(tmp)
        env["FLUX_EXEC_PATH_PREPEND"] = os.path.join(REPO, "flux_plugin")
        out = os.path.join(tmp, "result.json")
        subprocess.run(["flux", "start", "-s1", f"--config-path={conf}",
                        f"-Sconf.shell_pluginpath={build}/shell:{shell_path}",
                        sys.executable, os.path.abspath(__file__), "--inner", "--work", work,
                        "--out", out, "--gib", str(opts.gib), "--steps", str(opts.steps),
                        "--compute", str(opts.compute), "--reps", str(opts.reps),
                        "--data", opts.data],
                       env=env, check=True)
        with open(out) as fh:
            return json.load(fh)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=1.0, help="GiB written per job (default 1)")
    p.add_argument("--steps", type=int, default=4, help="checkpoints per job (default 4)")
    p.add_argument("--compute", type=float, default=1.0,
                   help="seconds of compute after each checkpoint (default 1.0)")
    p.add_argument("--reps", type=int, default=5, help="jobs of each kind (default 5)")
    p.add_argument("--data", default="/dev/zero",
                   help="what checkpoints are made of (default /dev/zero: a fast write; "
                   "/dev/urandom makes writing CPU-bound, competing with the copies)")
    p.add_argument("--json", action="store_true", help="print the raw result")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    opts = p.parse_args()
    if opts.inner:
        inner(opts)
        return
    if not shutil.which("flux"):
        sys.exit("bench_lifecycle: flux is not on PATH (PATH=<flux prefix>/bin:$PATH)")
    result = outer(opts)
    if opts.json:
        print(json.dumps(result, indent=2))
        return
    s = result["settings"]
    print(f"{s['gib']:g} GiB from {s['data']} in {s['steps']} checkpoints, {s['compute']:g} s "
          f"compute after each ({s['ideal-compute-only']:g} s of compute), {s['reps']} jobs of each kind:")
    for mode in ("offload", "cp"):
        r = result[mode]
        print(f"  {mode:8} job wall time median {r['median']:.2f} s "
              f"(min {r['min']:.2f}, max {r['max']:.2f}; runs {r['runs']})")
    print(f"  offload / cp: {result['offload']['median'] / result['cp']['median']:.2f}")
    fixed = result["empty-offload"]["median"] - result["empty-cp"]["median"]
    print(f"  an empty job: {result['empty-offload']['median']:.2f} s with the per-job server, "
          f"{result['empty-cp']['median']:.2f} s without (fixed cost {fixed:.2f} s: server "
          "start, drain helper, stop)")


if __name__ == "__main__":
    main()
