"""Many concurrent requests on one nnf driver: none lost, the event loop never stalls.

Runs the ``nnf`` driver in this process against the Kubernetes API double of the tests (real
HTTP, the real ``kubernetes`` client), with the fake ``mpirun``/``dcp`` of ``tests/nnf_bin``
doing real copies. The double runs in a child process by default, as an API server would be
elsewhere (``--double in-process`` shares this process's GIL with it). A ticker task wakes
every 5 ms and records how late it was woken: the longest lateness is the longest time the
event loop could not run. Prints what it measured.

    python bench/bench_nnf.py [--requests 100] [--steps 4] [--sleep 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from kube_double import KubeDouble  # noqa: E402
from nnf_support import NNF_BIN, NnfWorld  # noqa: E402

TICK = 0.005


def control_ticker(conn) -> None:
    """Child process: the same 5 ms ticker with nothing else to do, i.e. the machine's own scheduling lateness."""
    worst, samples = 0.0, []
    while not conn.poll():
        before = time.monotonic()
        time.sleep(TICK)
        late = time.monotonic() - before - TICK
        samples.append(late)
        worst = max(worst, late)
    samples.sort()
    conn.send((worst, samples[int(len(samples) * 0.99)] if samples else 0.0))


class RemoteDouble:
    """The parent's view of a double running in the child: clients and the request log."""

    def __init__(self, url: str, conn) -> None:
        self.url = url
        self.conn = conn

    def configuration(self):
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return cfg

    def clear_log(self) -> None:
        self.conn.send("clear")
        self.conn.recv()

    def log(self) -> list:
        self.conn.send("log")
        return self.conn.recv()


class _Entry:
    def __init__(self, verb: str, plural: str, status: int) -> None:
        self.verb, self.plural, self.status = verb, plural, status


def serve_double(tmp: str, conn) -> None:
    """Child process: the seeded double, until the parent says stop."""
    with KubeDouble() as kube:
        NnfWorld(kube, tmp)
        conn.send(kube.url)
        while True:
            command = conn.recv()
            if command == "clear":
                kube.clear_log()
                conn.send("ok")
            elif command == "log":
                conn.send([_Entry(e.verb, e.plural, e.status) for e in kube.log()])
            else:
                return


async def ticker(stop: asyncio.Event, lateness: list) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(TICK)
        lateness.append(loop.time() - before - TICK)


async def bench(world: NnfWorld, requests: int) -> dict:
    driver = await world.driver()
    sources = [world.source_tree("b%03d" % i, files=2) for i in range(requests)]
    world.kube.clear_log()
    stop, lateness = asyncio.Event(), []
    tick = asyncio.ensure_future(ticker(stop, lateness))
    control_end, control_child = multiprocessing.Pipe()
    control = multiprocessing.get_context("fork").Process(target=control_ticker, args=(control_child,), daemon=True)
    control.start()
    began = time.monotonic()
    submitted = await asyncio.gather(*[driver.submit(world.request(src, "%s/out%03d" % (world.lus, i)))
                                       for i, src in enumerate(sources)], return_exceptions=True)
    submit_time = time.monotonic() - began
    names = [n for n in submitted if isinstance(n, str)]
    docs = await asyncio.gather(*[driver.status(n, 120) for n in names])
    total = time.monotonic() - began
    stop.set()
    await tick
    control_end.send("stop")
    control_worst, control_p99 = control_end.recv()
    control.join(5)
    active = driver.active()
    await driver.close()
    log = world.kube.log()
    dm_writes = [e for e in log if e.plural == "nnfdatamovements" and e.verb in ("create", "update") and 200 <= e.status < 300]
    copied = sum(1 for i in range(requests) if os.path.exists("%s/out%03d/rabbit-01-0/b%03d/f0" % (world.lus, i, i)))
    return {
        "requests": requests,
        "accepted": len(names),
        "errors": [str(e) for e in submitted if not isinstance(e, str)][:3],
        "unique names": len(set(names)),
        "succeeded": sum(1 for d in docs if d.get("status") == "success"),
        "copies on disk": copied,
        "still listed": len(active),
        "submit wall time (s)": round(submit_time, 2),
        "all done wall time (s)": round(total, 2),
        "longest event-loop stall (ms)": round(max(lateness) * 1000, 1),
        "p99 event-loop lateness (ms)": round(sorted(lateness)[int(len(lateness) * 0.99)] * 1000, 1),
        "same ticker, idle process (ms)": "longest %.1f, p99 %.1f  (the machine's own scheduling delay)"
        % (control_worst * 1000, control_p99 * 1000),
        "Kubernetes calls per request": round(len([e for e in log if e.verb != "discovery"]) / max(1, len(names)), 2),
        "Kubernetes writes per request": round(len(dm_writes) / max(1, len(names)), 2),
        "  of which status updates": round(sum(1 for e in dm_writes if e.verb == "update") / max(1, len(names)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--steps", type=int, default=4, help="progress lines per fake dcp")
    parser.add_argument("--sleep", type=float, default=0.3, help="seconds between them")
    parser.add_argument("--double", choices=("subprocess", "in-process"), default="subprocess")
    args = parser.parse_args()
    os.environ["PATH"] = NNF_BIN + os.pathsep + os.environ.get("PATH", "")
    os.environ["FAKE_DCP_STEPS"] = str(args.steps)
    os.environ["FAKE_DCP_SLEEP"] = str(args.sleep)
    # the profile: the shipped default command (mpirun ... dcp), createDestDir, progress every 1 s
    with tempfile.TemporaryDirectory() as tmp:
        if args.double == "in-process":
            with KubeDouble() as kube:
                result = asyncio.run(bench(NnfWorld(kube, tmp), args.requests))
        else:
            parent, child = multiprocessing.Pipe()
            server = multiprocessing.get_context("fork").Process(target=serve_double, args=(tmp, child), daemon=True)
            server.start()
            try:
                world = NnfWorld(RemoteDouble(parent.recv(), parent), tmp, seed=False)
                result = asyncio.run(bench(world, args.requests))
            finally:
                parent.send("stop")
                server.join(10)
    print("nnf driver, %d concurrent requests (fake dcp: %d steps x %.2f s), Kubernetes double %s, %d cores:"
          % (args.requests, args.steps, args.sleep, args.double, os.cpu_count() or 0))
    for key, value in result.items():
        print("  %-34s %s" % (key, value))


if __name__ == "__main__":
    main()
