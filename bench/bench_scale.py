"""Benchmark: how the engine's speed and memory grow with the number of files.

    .venv/bin/python bench/bench_scale.py [--counts 20000,200000,1000000] [--dir /dev/shm]

For each count, a tree of the kind bench_copy.py makes (``--file-kib`` files, 100 per
directory, 20 directories per group) is written under ``--dir`` (default /dev/shm: tmpfs, so
the figure is the engine's own cost, not the disk's), then copied through a fresh
copy-offload-server (local driver, TLS, token; served.py) with the client library in this
process. A fresh server per count, so each peak is that count's own: the peak RSS is VmHWM from
``/proc/<pid>/status`` of the server and of each of its worker processes, read just before the
server stops, and the family's peak is the largest sum of their VmRSS over samples every 20 ms
during the copies. ``--runs`` rounds per count, each a copy through the server and a ``cp -r``
of the same tree, who goes first alternating, ours in the first round (``--no-cp``: ours only), each copy removed after it:
medians, ``1st f/s`` (the engine's first copy of the fresh tree) and ``paired`` (the median of
the rounds' cp -r time / our time). Whoever copies a fresh million-file tree first pays for
the kernel's fresh memory (4 GiB of new pages, a million inodes: on the virtual machine these
figures come from, up to twice the CPU of a later copy, for cp -r too), so a single copy in a
fixed order would charge that to one tool; the cp -r column shows how much of a slowdown at
scale is the kernel's rather than the engine's. The trees are removed after each count. Targets (issue 15): files/s within 20 % from the smallest
count to the largest, and the server's peak RSS growing by less than 64 MiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Dict, List, Tuple

from bench_copy import fs_type, make_tree, run_command
from served import ServedEngine

OURS, CP = "copy-offload", "cp -r"


def status_kib(pid: int, keys: Tuple[str, ...] = ("VmRSS", "VmHWM")) -> Dict[str, int]:
    out: Dict[str, int] = {}
    try:
        with open("/proc/%d/status" % pid) as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in keys:
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


class Sampler:
    """Polls the server family's VmRSS; keeps the largest sum and each process's VmHWM."""

    def __init__(self, served: ServedEngine, every: float = 0.02) -> None:
        self.served = served
        self.every = every
        self.family_peak = 0
        self.hwm: Dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self) -> None:
        total = 0
        for pid in self.served.processes():
            kib = status_kib(pid)
            total += kib.get("VmRSS", 0)
            self.hwm[pid] = max(self.hwm.get(pid, 0), kib.get("VmHWM", 0))
        self.family_peak = max(self.family_peak, total)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()


def measure(count: int, base: str, file_kib: int, runs: int, workers: int, peer: bool) -> Dict[str, float]:
    """Write the tree, then ``runs`` rounds, each a copy by the server and one by ``cp -r``, who
    goes first alternating (ours in the first round); medians, and the median of the rounds' ratios."""
    work = tempfile.mkdtemp(prefix="scale-%d-" % count, dir=base)
    try:
        tree = os.path.join(work, "tree")
        start = time.perf_counter()
        make_tree(tree, count, file_kib << 10)
        print("  %d files written in %.1f s" % (count, time.perf_counter() - start), flush=True)
        served = ServedEngine([work], workers=workers)
        times: List[float] = []
        cp_times: List[float] = []
        firsts: List[str] = []
        try:
            idle = status_kib(served.pid)["VmRSS"]
            with Sampler(served) as sampler:
                for run in range(runs):
                    order = ([OURS, CP] if run % 2 == 0 else [CP, OURS]) if peer else [OURS]
                    firsts.append(order[0])
                    for tool in order:
                        dst = os.path.join(work, "copy%d-%s" % (run, tool.replace(" ", "")))
                        if tool == OURS:
                            times.append(served.copy(tree, dst))
                        else:
                            cp_times.append(run_command(["cp", "-r", tree, dst]))
                        shutil.rmtree(dst)
            server_hwm = sampler.hwm.get(served.pid, 0)
            workers_hwm = max([kib for pid, kib in sampler.hwm.items() if pid != served.pid] or [0])
        finally:
            served.stop()
        print("  copy-offload %s; cp -r %s; first of each round: %s" % (
            " ".join("%.3f" % t for t in times), " ".join("%.3f" % t for t in cp_times) or "-",
            ", ".join(firsts)), flush=True)
        med = statistics.median(times)
        cp_med = statistics.median(cp_times) if cp_times else 0.0
        return {"count": count, "seconds": med, "files_s": count / med, "idle_kib": idle,
                "server_hwm_kib": server_hwm, "worker_hwm_kib": workers_hwm,
                "family_peak_kib": sampler.family_peak, "runs": len(times),
                "first_files_s": count / times[0],
                "cp_files_s": count / cp_med if cp_med else 0.0,
                "paired": statistics.median(c / o for c, o in zip(cp_times, times)) if cp_times else 0.0}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="20000,200000,1000000", help="tree sizes, comma-separated")
    parser.add_argument("--file-kib", type=int, default=4, help="size of each file (KiB)")
    parser.add_argument("--dir", default="/dev/shm", help="where the trees go (default /dev/shm, tmpfs)")
    parser.add_argument("--runs", type=int, default=3, help="rounds per count (each: our copy and a cp -r, who goes first alternating)")
    parser.add_argument("--workers", type=int, default=0, help="engine workers (default: the server's)")
    parser.add_argument("--no-cp", action="store_true", help="no cp -r copies")
    args = parser.parse_args()
    counts = [int(text) for text in args.counts.split(",") if text.strip()]
    print("%d CPUs, python %s; trees in %s (%s), %d KiB files, %d rounds each; load average %.2f %.2f %.2f"
          % (os.cpu_count() or 0, sys.version.split()[0], args.dir, fs_type(args.dir), args.file_kib, args.runs,
             *os.getloadavg()), flush=True)
    rows = []
    for count in counts:
        print("%d files:" % count, flush=True)
        rows.append(measure(count, args.dir, args.file_kib, args.runs, args.workers, not args.no_cp))
        print("  load average %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    print("\n%10s %9s %10s %10s %12s %14s %14s %15s %10s %8s" % (
        "files", "median s", "files/s", "1st f/s", "server idle", "server VmHWM", "worker VmHWM", "family peak",
        "cp -r f/s", "paired"))
    for row in rows:
        print("%10d %9.3f %10.0f %10.0f %8.1f MiB %10.1f MiB %10.1f MiB %11.1f MiB %10.0f %7.2fx" % (
            row["count"], row["seconds"], row["files_s"], row["first_files_s"], row["idle_kib"] / 1024,
            row["server_hwm_kib"] / 1024, row["worker_hwm_kib"] / 1024, row["family_peak_kib"] / 1024,
            row["cp_files_s"], row["paired"]))
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        speed = last["files_s"] / first["files_s"]
        growth = (last["server_hwm_kib"] - first["server_hwm_kib"]) / 1024
        family = (last["family_peak_kib"] - first["family_peak_kib"]) / 1024
        print("files/s at %d / at %d: %.2f (target: within 20 %%, >= 0.80)" % (last["count"], first["count"], speed))
        for row in rows:
            if row["paired"]:
                print("cp -r time / our time at %d files: %.2fx (median of the rounds)" % (row["count"], row["paired"]))
        print("server peak RSS growth %d -> %d: %.1f MiB; family peak growth %.1f MiB (target < 64 MiB)"
              % (first["count"], last["count"], growth, family))
    return 0


if __name__ == "__main__":
    sys.exit(main())
