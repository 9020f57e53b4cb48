"""Load on one copy-offload-server (local driver, TLS, token): many status long-polls held open,
then released; many copies at once. Nothing may be lost, memory must stay bounded, and waiting
must cost no CPU.

    python bench/bench_load.py [--polls 1000] [--requests 10] [--rounds 4] [--copies 200] [--copy-kib 1024] [--runs 3]

Long-polls: ``--requests`` running requests whose commands wait (half ``sleep 3600``, released
by cancel; half blocked reading a FIFO, released by completion when the FIFO is written), and
``--polls`` concurrent ``GET /status/<name>?maxWaitSecs=-1`` (or ``3600``) spread over them,
each on its own TLS connection. Server RSS (``/proc/PID/status`` VmRSS) is read before, while
the polls wait and after; server CPU (``/proc/PID/stat`` utime+stime) is sampled over 5 s with
the requests running and no polls, then over 5 s with every poll waiting. ``--rounds`` rounds
run on the same server: its memory must level off (Python keeps freed memory for reuse).

Copies: ``--copies`` files of ``--copy-kib`` KiB posted at once to the built-in engine, each
then long-polled to completion; every destination is compared with its source.

The numbers are medians over ``--runs`` runs, each on a fresh server. The bounded version runs
in tests/test_hardening_load.py.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from copy_offload.client import wire  # noqa: E402
from support import Material, ServerProcess, server_args  # noqa: E402

PROFILES = """
[profiles.hold]
command = "sh -c 'sleep 3600' $SRC $DEST"

[profiles.gate]
command = "sh -c 'read line < \\"$0\\"' $SRC $DEST"
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- /proc


def rss_kib(pid: int) -> Dict[str, int]:
    """VmRSS and VmHWM (peak) of ``pid`` in KiB."""
    out = {}
    with open("/proc/%d/status" % pid) as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its own threads, not its children)."""
    with open("/proc/%d/stat" % pid) as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def open_fds(pid: int) -> int:
    return len(os.listdir("/proc/%d/fd" % pid))


async def cpu_over(pid: int, seconds: float) -> float:
    start = cpu_seconds(pid)
    await asyncio.sleep(seconds)
    return cpu_seconds(pid) - start


# --------------------------------------------------------------------------- server


@dataclass
class LoadServer:
    """A local-driver server over ``root`` with the waiting profiles, and a client for it."""

    workdir: str
    material: Material
    server: ServerProcess
    root: str

    @classmethod
    def start(cls, workdir: str, material: Optional[Material] = None) -> LoadServer:
        root = os.path.join(workdir, "root")
        os.makedirs(root, exist_ok=True)
        if material is None:
            os.makedirs(os.path.join(workdir, "material"), exist_ok=True)
            material = Material(os.path.join(workdir, "material"))
        profiles = os.path.join(workdir, "profiles.toml")
        with open(profiles, "w") as handle:
            handle.write(PROFILES)
        args = server_args(material, extra=["--driver", "local", "--allow-root", root, "--state-dir",
                                            os.path.join(workdir, "state"), "--profiles", profiles])
        server = ServerProcess(args=args, env=dict(os.environ), tls=True, material=material).start()
        return cls(workdir, material, server, root)

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def client(self, connections: int, context: Optional[ssl.SSLContext] = None) -> httpx.AsyncClient:
        headers = {wire.AUTH_HEADER: "Bearer " + self.material.token, wire.VERSION_HEADER: wire.API_VERSION}
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(base_url=self.server.url, verify=context or self.material.context(),
                                 headers=headers, limits=limits, timeout=httpx.Timeout(60.0, read=None),
                                 trust_env=False)

    def stop(self) -> None:
        self.server.stop()


async def submit(client: httpx.AsyncClient, source: str, destination: str, profile: str = "") -> str:
    body = {"computeName": "bench", "sourcePath": source, "destinationPath": destination, "dmProfile": profile,
            "slots": 1, "maxSlots": 1}
    response = await client.post(wire.TRIAL, content=json.dumps(body))
    if response.status_code != 200:
        raise RuntimeError("copy refused: %d %s" % (response.status_code, response.text))
    return wire.parse_trial_body(response.text)


# --------------------------------------------------------------------------- long-polls


@dataclass
class PollResult:
    polls: int
    requests: int
    open_seconds: float  # time until every poll's request was sent (TLS handshake included)
    release_seconds: float  # from the first cancel/FIFO write to the last answer
    answered: int
    completed: int  # answers saying completed (cancelled or success)
    lost: int
    rss_before: int
    rss_waiting: int
    rss_after: int
    cpu_idle_requests: float  # seconds of server CPU over the window, requests running, no polls
    cpu_idle_polls: float  # the same with every poll waiting
    window: float
    statuses: Dict[str, int] = field(default_factory=dict)
    rss_rounds: List[int] = field(default_factory=list)  # RSS with the polls waiting, round by round


def _write_fifo(path: str) -> None:
    with open(path, "w") as handle:
        handle.write("go\n")


async def long_polls(load: LoadServer, polls: int, requests: int, window: float = 5.0,
                     settle: float = 1.0) -> PollResult:
    """One round: start the waiting requests, hold ``polls`` long-polls on them, release them.

    ``settle``: seconds allowed for the server to reach a quiet state between steps."""
    pid = load.pid
    tag = time.monotonic_ns()
    async with load.client(2 * requests + 10) as client:
        holds, gates, fifos = [], [], []
        for i in range(requests):
            if i % 2 == 0:
                source = os.path.join(load.root, "hold-%d-%d" % (tag, i))
                with open(source, "w"):
                    pass
                holds.append(await submit(client, source, source + ".out", "hold"))
            else:
                fifo = os.path.join(load.root, "gate-%d-%d" % (tag, i))
                os.mkfifo(fifo)
                fifos.append(fifo)
                gates.append(await submit(client, fifo, fifo + ".out", "gate"))
        names = holds + gates
        await asyncio.sleep(settle)
        rss_before = rss_kib(pid)["VmRSS"]
        cpu_idle_requests = await cpu_over(pid, window)

        sent = 0

        async def trace(event: str, info: dict) -> None:
            nonlocal sent
            if event == "http11.send_request_body.complete":
                sent += 1

        # A client (so a connection) of its own for every poll: httpx's pool work grows with the
        # square of its connections, and one pool of 1,000 makes the client the bottleneck.
        context = load.material.context()
        pollsters = [load.client(1, context) for _ in range(polls)]
        try:
            fds_before = open_fds(pid)
            started = time.monotonic()
            waits = [-1 if i % 2 == 0 else 3600 for i in range(polls)]
            tasks = [asyncio.ensure_future(pollsters[i].get(wire.status_path(names[i % len(names)], waits[i]),
                                                            extensions={"trace": trace}))
                     for i in range(polls)]
            deadline = time.monotonic() + 180
            while sent < polls and time.monotonic() < deadline and not any(task.done() for task in tasks):
                await asyncio.sleep(0.05)
            open_seconds = time.monotonic() - started
            await asyncio.sleep(settle)  # let the last requests reach the driver's wait
            early = [task for task in tasks if task.done()]
            if early:
                first = early[0].exception() or early[0].result().text
                raise RuntimeError("%d long-polls answered before their request finished: %r" % (len(early), first))
            if open_fds(pid) < fds_before + polls:
                raise RuntimeError("only %d of %d polls reached the server" % (open_fds(pid) - fds_before, polls))
            rss_waiting = rss_kib(pid)["VmRSS"]
            cpu_idle_polls = await cpu_over(pid, window)

            released = time.monotonic()
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(client.delete(wire.cancel_path(name)) for name in holds),
                                 *(loop.run_in_executor(None, _write_fifo, fifo) for fifo in fifos))
            results = await asyncio.gather(*tasks, return_exceptions=True)
            release_seconds = time.monotonic() - released
        finally:
            await asyncio.gather(*(pollster.aclose() for pollster in pollsters))

        statuses: Dict[str, int] = {}
        answered = completed = 0
        for result in results:
            if isinstance(result, BaseException) or result.status_code != 200:
                key = repr(result) if isinstance(result, BaseException) else "HTTP %d" % result.status_code
                statuses[key] = statuses.get(key, 0) + 1
                continue
            answered += 1
            doc = json.loads(result.text)
            key = "%s/%s" % (doc["state"], doc["status"])
            statuses[key] = statuses.get(key, 0) + 1
            completed += doc["state"] == wire.STATE_COMPLETED
        listed = (await client.get(wire.LIST)).text
        if listed:
            raise RuntimeError("requests still listed after release: %s" % listed)
        await asyncio.sleep(settle)
        rss_after = rss_kib(pid)["VmRSS"]
    return PollResult(polls, requests, open_seconds, release_seconds, answered, completed, polls - completed,
                      rss_before, rss_waiting, rss_after, cpu_idle_requests, cpu_idle_polls, window, statuses)


# --------------------------------------------------------------------------- copies


@dataclass
class CopyResult:
    copies: int
    size_kib: int
    seconds: float
    succeeded: int
    identical: int
    lost: int
    rss_before: int
    rss_peak: int
    rss_after: int
    failures: List[str] = field(default_factory=list)


def _digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


async def copies(load: LoadServer, count: int, size_kib: int) -> CopyResult:
    pid = load.pid
    src_dir = os.path.join(load.root, "copies-src-%d" % time.monotonic_ns())
    dst_dir = src_dir.replace("copies-src", "copies-dst")
    os.makedirs(src_dir)
    os.makedirs(dst_dir)
    digests = {}
    for i in range(count):
        path = os.path.join(src_dir, "f%04d" % i)
        with open(path, "wb") as handle:
            handle.write(os.urandom(size_kib << 10))
        digests[i] = _digest(path)
    rss_before = rss_kib(pid)["VmRSS"]
    peak = [rss_before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            try:
                peak.append(rss_kib(pid)["VmRSS"])
            except OSError:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    async with load.client(2 * count + 10) as client:
        names = await asyncio.gather(*(submit(client, os.path.join(src_dir, "f%04d" % i),
                                              os.path.join(dst_dir, "f%04d" % i)) for i in range(count)))
        finals = await asyncio.gather(*(client.get(wire.status_path(name, -1)) for name in names))
        seconds = time.monotonic() - started
        listed = (await client.get(wire.LIST)).text
    stop.set()
    sampler.join()
    succeeded = identical = 0
    failures = []
    for i, response in enumerate(finals):
        doc = json.loads(response.text) if response.status_code == 200 else {}
        if doc.get("state") == wire.STATE_COMPLETED and doc.get("status") == wire.STATUS_SUCCESS:
            succeeded += 1
        else:
            failures.append("%s: %d %s" % (names[i], response.status_code, response.text.strip()[:200]))
        destination = os.path.join(dst_dir, "f%04d" % i)
        if os.path.exists(destination) and _digest(destination) == digests[i]:
            identical += 1
    if listed:
        failures.append("still listed: %s" % listed)
    await asyncio.sleep(1.0)
    rss_after = rss_kib(pid)["VmRSS"]
    shutil.rmtree(src_dir, ignore_errors=True)
    shutil.rmtree(dst_dir, ignore_errors=True)
    return CopyResult(count, size_kib, seconds, succeeded, identical, count - identical, rss_before, max(peak),
                      rss_after, failures)


# --------------------------------------------------------------------------- main


def _median(values: List[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--polls", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--copies", type=int, default=200)
    ap.add_argument("--copy-kib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=4, help="long-poll rounds per server (memory must level off)")
    ap.add_argument("--window", type=float, default=5.0, help="CPU sampling window, seconds")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None, help="work directory (default: a new temporary one)")
    args = ap.parse_args()

    polls: List[PollResult] = []
    copy_runs: List[CopyResult] = []
    for run in range(args.runs):
        workdir = tempfile.mkdtemp(prefix="bench-load-", dir=args.dir)
        load = LoadServer.start(workdir)
        try:
            rounds = [asyncio.run(long_polls(load, args.polls, args.requests, args.window))
                      for _ in range(args.rounds)]
            c = asyncio.run(copies(load, args.copies, args.copy_kib))
        finally:
            load.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        p = rounds[-1]
        p.lost = sum(r.lost for r in rounds)
        p.rss_before = rounds[0].rss_before
        p.rss_rounds = [r.rss_waiting for r in rounds]
        polls.append(p)
        copy_runs.append(c)
        print("run %d: last round's polls answered %d/%d (%s), open %.1fs, release %.2fs, RSS %d->%s->%d KiB, "
              "CPU %.2fs/%.0fs idle vs %.2fs/%.0fs with polls; copies %d/%d identical in %.1fs, "
              "RSS %d->%d(peak)->%d KiB%s"
              % (run + 1, p.completed, p.polls, p.statuses, p.open_seconds, p.release_seconds, p.rss_before,
                 p.rss_rounds, p.rss_after, p.cpu_idle_requests, p.window, p.cpu_idle_polls, p.window,
                 c.identical, c.copies, c.seconds, c.rss_before, c.rss_peak, c.rss_after,
                 "; FAILURES: %s" % c.failures[:3] if c.failures else ""), flush=True)

    print()
    print("copy-offload-server, local driver, TLS 1.3 + token; %d runs, medians" % args.runs)
    print("%-52s %12s" % ("long-polls", ""))
    rows = [
        ("polls held open / requests waited on, x rounds", "%d / %d x %d" % (args.polls, args.requests,
                                                                              args.rounds)),
        ("polls lost (not answered 'completed')", "%d" % max(p.lost for p in polls)),
        ("time to open all polls, s", "%.1f" % _median([p.open_seconds for p in polls])),
        ("time from release to last answer, s", "%.2f" % _median([p.release_seconds for p in polls])),
        ("server RSS before any poll, MiB", "%.1f" % (_median([p.rss_before for p in polls]) / 1024)),
        ("server RSS with polls waiting, 1st round, MiB", "%.1f" % (_median([p.rss_rounds[0] for p in polls]) / 1024)),
        ("server RSS with polls waiting, last round, MiB", "%.1f" % (_median([p.rss_waiting for p in polls]) / 1024)),
        ("RSS growth over the last round, MiB", "%.1f" % (_median(
            [p.rss_rounds[-1] - p.rss_rounds[-2] if len(p.rss_rounds) > 1 else 0 for p in polls]) / 1024)),
        ("server RSS after the last release, MiB", "%.1f" % (_median([p.rss_after for p in polls]) / 1024)),
        ("RSS per waiting poll (1st round), KiB", "%.1f" % _median(
            [(p.rss_rounds[0] - p.rss_before) / p.polls for p in polls])),
        ("server CPU, requests running, no polls, % of a core", "%.2f" % _median(
            [100 * p.cpu_idle_requests / p.window for p in polls])),
        ("server CPU, every poll waiting, % of a core", "%.2f" % _median(
            [100 * p.cpu_idle_polls / p.window for p in polls])),
    ]
    for label, value in rows:
        print("  %-50s %12s" % (label, value))
    print("%-52s" % "copies")
    rows = [
        ("copies at once / size, KiB", "%d / %d" % (args.copies, args.copy_kib)),
        ("copies lost or not identical", "%d" % max(c.lost for c in copy_runs)),
        ("all submitted and completed, s", "%.2f" % _median([c.seconds for c in copy_runs])),
        ("server RSS before / peak / after, MiB", "%.1f / %.1f / %.1f" % (
            _median([c.rss_before for c in copy_runs]) / 1024, _median([c.rss_peak for c in copy_runs]) / 1024,
            _median([c.rss_after for c in copy_runs]) / 1024)),
    ]
    for label, value in rows:
        print("  %-50s %12s" % (label, value))
    bad = any(p.lost for p in polls) or any(c.lost or c.failures for c in copy_runs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
