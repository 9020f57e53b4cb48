"""Benchmark: the local driver's copy engine against cp, cp -r, cp -a, rsync -a and dcp, side by side.

    .venv/bin/python bench/bench_copy.py [--size-mib 1024] [--files 20000] [--runs 5]
        [--dir /var/tmp] [--tmpfs /dev/shm] [--dcp /opt/mpifileutils/bin/dcp]

The engine is timed the way a user meets it: ``copy-offload`` is a copy through a running
``copy-offload-server`` (local driver, TLS, token) made and waited for with the project's client
library in this process (served.py), so the request, the driver, the worker processes and the
status long-poll are all in the figure, and no interpreter start-up is. ``engine in-process``
is the engine called directly (``CopyJob(...).run()``), for the server's share.

Data: one large file (default 1 GiB) on disk, and a tree of small files (default 20,000 x 4 KiB,
100 per directory) on disk (``--dir``) and on tmpfs (``--tmpfs``; tmpfs isolates the copying
cost from writeback noise). Every copy reads and writes on the same file system.

Protocol, per timed run: ``sync``; the page cache dropped (``echo 3 > /proc/sys/vm/drop_caches``,
needs root; without it the run says so and goes on with a warm cache); the source read once
(warmed again), so every tool starts from the same cached source and pays only for its own
writes; then the copy, timed. The contenders run in a fresh shuffled order every round and the
ratio reported is the paired one: the median over rounds of (peer time / our time), runs made
seconds apart, which is steadier than the ratio of medians when the shared machine's speed
drifts. Ratios > 1 mean ours was faster.

Peers: ``cp`` (the file), ``cp -r`` and ``cp -a`` (trees), ``rsync -a``, and ``dcp`` under
``mpirun -np 2`` when ``--dcp`` names it or ``dcp`` is on ``PATH`` (as root, Open MPI needs
``OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1``, which the script sets).

Tree copies on disk are not deleted between runs: on a file system without a journal, ext4
skips recently deleted inodes (for 60 s, 360 s while their inode table is dirty) when it
allocates new ones, which makes whoever creates files right after a big delete much slower. For
the same reason the benchmark first probes file creation and waits until it runs at normal
speed. Large-file copies and tmpfs copies are deleted after each run (no such effect; space);
the kept disk copies are removed by a background ``rm -rf`` once the tables are printed, and a
later run waits for that removal to end before it measures on disk.
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
from typing import Callable, Dict, List, Optional, Tuple

from copy_offload.server.local.engine import CopyJob
from served import ServedEngine
from support import command_lines  # tests/ is on the path once served is imported

OURS = "copy-offload"
INPROC = "engine in-process"
VERIFY = OURS + " verify"
PRESERVE = OURS + " -p"  # dcpOptions "-p": times kept as well as modes, as cp -a keeps them
DROP_CACHES = "/proc/sys/vm/drop_caches"
MPI_ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


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


def make_tree(root: str, count: int, file_size: int = 4096, per_dir: int = 100, per_group: int = 20) -> int:
    """``count`` files of ``file_size`` bytes, ``per_dir`` per directory, ``per_group`` directories per group."""
    noise = os.urandom(file_size)
    for i in range(count):
        directory = os.path.join(root, "g%03d" % (i // (per_dir * per_group)), "d%04d" % (i // per_dir))
        if i % per_dir == 0:
            os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "f%07d.dat" % i), "wb") as out:
            out.write(noise)
    return count * file_size


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


def earlier_removals(base_dir: str) -> list:
    """The pids of ``rm -rf`` processes an earlier run left removing its disk data in ``base_dir``."""
    prefix = os.path.join(base_dir, "bench-copy-")
    return [pid for pid, argv in command_lines()
            if argv[:2] == [b"rm", b"-rf"] and len(argv) > 2 and os.fsdecode(argv[2]).startswith(prefix)]


def wait_for_removals(base_dir: str, limit: float = 900.0) -> None:
    """An earlier run's disk copies still being deleted (journal and discards) slow whoever
    creates files meanwhile, unevenly: wait for them to be gone before measuring."""
    deadline = time.monotonic() + limit
    pids = earlier_removals(base_dir)
    if pids:
        print("waiting for an earlier run's removal of its disk data (rm pid %s)" % ", ".join(map(str, pids)),
              flush=True)
    while pids and time.monotonic() < deadline:
        time.sleep(2)
        pids = earlier_removals(base_dir)


def can_drop_caches() -> bool:
    return os.access(DROP_CACHES, os.W_OK)


def drop_caches() -> None:
    with open(DROP_CACHES, "w") as handle:
        handle.write("3\n")


def warm(path: str) -> None:
    """Read ``path`` (a file or a whole tree) once, so its data and inodes are cached again."""
    if os.path.isfile(path):
        paths = [path]
    else:
        paths = [os.path.join(d, n) for d, _dirs, names in os.walk(path) for n in names]
    for name in paths:
        with open(name, "rb", buffering=0) as handle:
            while handle.read(8 << 20):
                pass


def prepare_run(src: str, drop: bool) -> None:
    """The protocol before every timed run: sync, drop the page cache, warm the source."""
    subprocess.run(["sync"], check=True)
    if drop:
        drop_caches()
    warm(src)


def run_command(argv: List[str], env: Optional[Dict[str, str]] = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_in_process(src: str, dst: str, workers: int, verify: bool = False) -> float:
    start = time.perf_counter()
    CopyJob(src, dst, workers=workers or None, verify=verify).run()
    return time.perf_counter() - start


def find_dcp(given: str) -> Optional[str]:
    if given:
        return given if os.access(given, os.X_OK) else None
    return shutil.which("dcp")


Tool = Callable[[str, str], float]


def contenders(kind: str, served: ServedEngine, workers: int, dcp: Optional[str], verify: bool) -> Dict[str, Tool]:
    table: Dict[str, Tool] = {OURS: served.copy, INPROC: lambda s, d: run_in_process(s, d, workers)}
    if verify:  # dmProfile "verify": every file read back
        table[VERIFY] = lambda s, d: run_in_process(s, d, workers, verify=True)
    if kind == "file":
        table["cp"] = lambda s, d: run_command(["cp", s, d])
    else:
        table[PRESERVE] = lambda s, d: served.copy(s, d, dcp_options="-p")
        table["cp -r"] = lambda s, d: run_command(["cp", "-r", s, d])
        table["cp -a"] = lambda s, d: run_command(["cp", "-a", s, d])
    if shutil.which("rsync"):
        table["rsync -a"] = lambda s, d: run_command(["rsync", "-a", s + ("/" if kind == "tree" else ""), d])
    if dcp and shutil.which("mpirun"):
        env = dict(os.environ, **MPI_ROOT_ENV)
        table["dcp -np 2"] = lambda s, d: run_command(["mpirun", "-np", "2", dcp, "--quiet", s, d], env)
    return table


def measure(kind: str, src: str, out_root: str, runs: int, table: Dict[str, Tool], drop: bool,
            keep: bool) -> Dict[str, List[float]]:
    names = list(table)
    times: Dict[str, List[float]] = {name: [] for name in names}
    shuffle = random.Random(7).shuffle  # a fresh order each round: no tool always follows the same one
    for round_no in range(runs):
        order = list(names)
        shuffle(order)
        for name in order:
            dst = os.path.join(out_root, "%s-%s-%d" % (kind, name.replace(" ", ""), round_no))
            prepare_run(src, drop)
            times[name].append(table[name](src, dst))
            if round_no == 0:
                check_copy(kind, name, src, dst)
            if not keep:
                remove(dst)
    return times


def check_copy(kind: str, name: str, src: str, dst: str) -> None:
    if kind == "tree" and tree_stats(dst) != tree_stats(src):
        raise SystemExit("%s produced a different tree" % name)
    if kind == "file" and os.path.getsize(dst) != os.path.getsize(src):
        raise SystemExit("%s produced a different file" % name)


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)


def report(title: str, times: Dict[str, List[float]], size: int, files: int) -> None:
    """Medians, and the ratio two ways: of the medians, and the median of each round's ratio."""
    ours = times[OURS]
    print("\n%s (%d file%s, %.1f MiB); load average %.2f %.2f %.2f" % (
        title, files, "" if files == 1 else "s", size / 2**20, *os.getloadavg()), flush=True)
    print("%-22s %9s %9s %10s %10s %10s" % ("tool", "median s", "min s", "MiB/s", "ours/peer", "paired"),
          flush=True)
    for name, values in times.items():
        med = statistics.median(values)
        if name == OURS:
            ratio = paired = ""
        else:
            ratio = "%.2fx" % (med / statistics.median(ours))
            paired = "%.2fx" % statistics.median(peer / mine for peer, mine in zip(values, ours))
        print("%-22s %9.3f %9.3f %10.1f %10s %10s" % (name, med, min(values), size / 2**20 / med, ratio, paired),
              flush=True)
    if PRESERVE in times and "cp -a" in times:
        print("%s (times kept too) against cp -a: %.2fx, paired" % (PRESERVE, statistics.median(
            peer / mine for peer, mine in zip(times["cp -a"], times[PRESERVE]))), flush=True)
    if VERIFY in times:
        cost = statistics.median(v / o for v, o in zip(times[VERIFY], times[INPROC]))
        print("verify (dmProfile \"verify\": every file read back and compared): %.2fx the time of %s, paired"
              % (cost, INPROC), flush=True)
    print("runs: " + "; ".join("%s %s" % (n, " ".join("%.3f" % v for v in vs)) for n, vs in times.items()), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="size of the large file (MiB; 0: none)")
    parser.add_argument("--files", type=int, default=20000, help="number of small files in the tree (0: none)")
    parser.add_argument("--file-kib", type=int, default=4, help="size of each small file (KiB)")
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (each contender once per round)")
    parser.add_argument("--workers", type=int, default=0, help="engine workers (default: the server's)")
    parser.add_argument("--dir", default="/var/tmp", help="disk directory for the data (default /var/tmp)")
    parser.add_argument("--tmpfs", default="/dev/shm", help="tmpfs directory for the tree row ('' to skip)")
    parser.add_argument("--dcp", default="", help="dcp binary (default: dcp on PATH); run under mpirun -np 2")
    parser.add_argument("--verify", action="store_true", help="add the engine with the verify profile")
    parser.add_argument("--only", choices=("file", "tree"), help="run one data set only")
    args = parser.parse_args()

    dcp = find_dcp(args.dcp)
    drop = can_drop_caches()
    places = [("disk", tempfile.mkdtemp(prefix="bench-copy-", dir=args.dir))]
    if args.tmpfs:
        places.append(("tmpfs", tempfile.mkdtemp(prefix="bench-copy-", dir=args.tmpfs)))
    try:
        served = ServedEngine([base for _where, base in places], workers=args.workers)
    except BaseException:
        for _where, base in places:
            shutil.rmtree(base, ignore_errors=True)
        raise
    print("%d CPUs, python %s; server pid %d (local driver, TLS, token); page cache %s; dcp: %s" % (
        os.cpu_count() or 0, sys.version.split()[0], served.pid,
        "dropped before every run" if drop else "NOT dropped (needs root to write %s)" % DROP_CACHES,
        dcp or "not found (--dcp or PATH)"), flush=True)
    try:
        for where, base in places:
            print("%s data in %s (%s)" % (where, base, fs_type(base)), flush=True)
            if where == "disk":
                wait_for_removals(args.dir)
                subprocess.run(["sync"], check=True)
                settle(base)
            if where == "disk" and args.only in (None, "file") and args.size_mib > 0:
                big = os.path.join(base, "big.dat")
                make_big(big, args.size_mib << 20)
                table = contenders("file", served, args.workers, dcp, args.verify)
                times = measure("file", big, base, args.runs, table, drop, keep=False)
                report("one large file on %s (%s)" % (where, fs_type(base)), times, args.size_mib << 20, 1)
                os.unlink(big)
            if args.only in (None, "tree") and args.files > 0:
                tree = os.path.join(base, "tree")
                size = make_tree(tree, args.files, args.file_kib << 10)
                table = contenders("tree", served, args.workers, dcp, args.verify)
                times = measure("tree", tree, base, args.runs, table, drop, keep=where == "disk")
                report("tree of small files on %s (%s)" % (where, fs_type(base)), times, size, args.files)
    finally:
        served.stop()
        for where, base in places:
            if where == "disk":
                remove_later(base)
            else:
                shutil.rmtree(base, ignore_errors=True)
        subprocess.run(["sync"], check=False)
    return 0


def remove_later(path: str) -> None:
    """``rm -rf path`` in a detached process: the disk copies kept for the rounds (about 600,000
    files at the default sizes) take minutes to delete on a file system mounted with ``discard``,
    and the tables are printed already."""
    try:
        subprocess.Popen(["rm", "-rf", path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
        print("removing %s in the background (rm -rf)" % path, flush=True)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
