"""Benchmark: the local driver's copy engine against cp, cp -r and rsync -a, side by side.

    .venv/bin/python bench/bench_copy.py [--size-mib 1024] [--files 20000] [--runs 3]

It generates one large file and a tree of small files in a temporary directory (``--dir``,
default the system temp dir; every copy reads and writes on that same file system), then
times each contender copying each data set, interleaved round by round in a shuffled order,
``sync`` before every copy. Copies are not deleted between runs: on a file system without a
journal, ext4 skips recently deleted inodes (for 60 s, 360 s while their inode table is dirty)
when it allocates new ones, which makes whoever creates files right after a big delete much
slower. For the same reason the benchmark first probes file creation and waits until it runs
at normal speed. Everything is removed at the end (then synced, to shorten that window).

Ratios are speed ratios, ours/peer (peer time / our time): > 1 means we were faster. The
``copy-offload verify`` row is the engine with the ``verify`` profile (every file read back and
compared with its source); a line under each table gives its cost as a paired time ratio.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Tuple

from copy_offload.server.local.engine import CopyJob

OURS = "copy-offload"
VERIFY = OURS + " verify"


def fs_type(path: str) -> str:
    try:
        out = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def make_big(path: str, size: int) -> None:
    block = os.urandom(4 << 20)
    with open(path, "wb") as out:
        left = size
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)


def make_tree(root: str, count: int, seed: int = 1) -> int:
    """``count`` files of 0..8 KiB, 100 per directory, 20 directories per group."""
    rnd = random.Random(seed)
    noise = os.urandom(8192)
    total = 0
    for i in range(count):
        directory = os.path.join(root, "g%03d" % (i // 2000), "d%04d" % (i // 100))
        if i % 100 == 0:
            os.makedirs(directory, exist_ok=True)
        size = rnd.randint(0, 8192)
        with open(os.path.join(directory, "f%06d.dat" % i), "wb") as out:
            out.write(noise[:size])
        total += size
    return total


def tree_stats(root: str) -> Tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
    return files, size


def settle(base: str, limit: float = 400.0, normal: float = 60e-6) -> None:
    """Wait until creating a file costs under ``normal`` seconds (see the module docstring)."""
    probe = os.path.join(base, "probe")
    os.mkdir(probe)
    deadline = time.monotonic() + limit
    for attempt in range(1000):
        directory = os.path.join(probe, str(attempt))
        os.mkdir(directory)
        start = time.perf_counter()
        for i in range(500):
            os.close(os.open(os.path.join(directory, str(i)), os.O_CREAT | os.O_WRONLY, 0o644))
        each = (time.perf_counter() - start) / 500
        if each < normal or time.monotonic() > deadline:
            print("file creation: %.0f us per file%s" % (each * 1e6, "" if each < normal else " (still slow)"), flush=True)
            return
        print("file creation is slow (%.0f us per file: recently deleted inodes?); waiting 15 s" % (each * 1e6), flush=True)
        time.sleep(15)


def run_command(argv: List[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - start


def run_ours(src: str, dst: str, workers: int, direct: bool = False, verify: bool = False) -> float:
    start = time.perf_counter()
    CopyJob(src, dst, workers=workers or None, direct=direct, verify=verify).run()
    return time.perf_counter() - start


def contenders(kind: str, workers: int) -> Dict[str, Callable[[str, str], float]]:
    table: Dict[str, Callable[[str, str], float]] = {OURS: lambda s, d: run_ours(s, d, workers)}
    table[VERIFY] = lambda s, d: run_ours(s, d, workers, verify=True)  # dmProfile "verify": read back
    if kind == "file":
        table[OURS + " --direct"] = lambda s, d: run_ours(s, d, workers, direct=True)
        table["cp"] = lambda s, d: run_command(["cp", s, d])
    else:
        table["cp -r"] = lambda s, d: run_command(["cp", "-r", s, d])
        table["cp -a"] = lambda s, d: run_command(["cp", "-a", s, d])
    if shutil.which("rsync"):
        table["rsync -a"] = lambda s, d: run_command(["rsync", "-a", s + ("/" if kind == "tree" else ""), d])
    return table


def measure(kind: str, src: str, out_root: str, runs: int, workers: int) -> Dict[str, List[float]]:
    table = contenders(kind, workers)
    names = list(table)
    times: Dict[str, List[float]] = {name: [] for name in names}
    shuffle = random.Random(7).shuffle  # a fresh order each round: no tool always follows the same one
    for round_no in range(runs):
        order = list(names)
        shuffle(order)
        for name in order:
            dst = os.path.join(out_root, "%s-%s-%d" % (kind, name.replace(" ", ""), round_no))
            subprocess.run(["sync"], check=True)
            times[name].append(table[name](src, dst))
            if kind == "tree" and round_no == 0 and tree_stats(dst) != tree_stats(src):
                raise SystemExit("%s produced a different tree" % name)
            if kind == "file" and round_no == 0 and os.path.getsize(dst) != os.path.getsize(src):
                raise SystemExit("%s produced a different file" % name)
    return times


def report(title: str, times: Dict[str, List[float]], size: int, files: int) -> None:
    """Medians, and the ratio two ways: of the medians, and the median of each round's ratio.

    The paired one compares runs made seconds apart, so it is the steadier of the two when the
    machine's speed drifts (other work, the host reclaiming memory).
    """
    ours = times[OURS]
    print("\n%s (%d file%s, %.1f MiB)" % (title, files, "" if files == 1 else "s", size / 2**20), flush=True)
    print("%-22s %9s %9s %10s %10s %10s" % ("tool", "median s", "min s", "MiB/s", "ours/peer", "paired"),
          flush=True)
    for name, values in times.items():
        med = statistics.median(values)
        if name.startswith(OURS):
            ratio = paired = ""
        else:
            ratio = "%.2fx" % (med / statistics.median(ours))
            paired = "%.2fx" % statistics.median(peer / mine for peer, mine in zip(values, ours))
        print("%-22s %9.3f %9.3f %10.1f %10s %10s" % (name, med, min(values), size / 2**20 / med, ratio, paired),
              flush=True)
    if VERIFY in times:
        cost = statistics.median(v / o for v, o in zip(times[VERIFY], ours))
        print("verify (dmProfile \"verify\": every file read back and compared): %.2fx the time of %s, paired"
              % (cost, OURS), flush=True)
    print("runs: " + "; ".join("%s %s" % (n, " ".join("%.3f" % v for v in vs)) for n, vs in times.items()), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the large file (MiB)")
    parser.add_argument("--files", type=int, default=20000, help="number of small files in the tree")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per contender")
    parser.add_argument("--workers", type=int, default=0, help="engine workers (default: CPUs)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to put the data")
    parser.add_argument("--only", choices=("file", "tree"), help="run one data set only")
    args = parser.parse_args()

    base = tempfile.mkdtemp(prefix="bench-copy-", dir=args.dir)
    print("data in %s (%s), %d CPUs, python %s" % (base, fs_type(base), os.cpu_count() or 0, sys.version.split()[0]), flush=True)
    try:
        subprocess.run(["sync"], check=True)
        settle(base)
        print("load average before: %.2f %.2f %.2f" % os.getloadavg(), flush=True)
        if args.only in (None, "file") and args.size_mib > 0:
            big = os.path.join(base, "big.dat")
            make_big(big, args.size_mib << 20)
            times = measure("file", big, base, args.runs, args.workers)
            report("one large file", times, args.size_mib << 20, 1)
        if args.only in (None, "tree") and args.files > 0:
            tree = os.path.join(base, "tree")
            size = make_tree(tree, args.files)
            times = measure("tree", tree, base, args.runs, args.workers)
            report("tree of small files", times, size, args.files)
        print("load average after: %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run(["sync"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
