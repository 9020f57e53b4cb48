"""The nnf driver: many concurrent requests, submit time with createDestDir, a burst of 1,000.

Default (``--requests N``): runs the ``nnf`` driver in this process against the Kubernetes API
double of the tests (real HTTP, the real ``kubernetes`` client), with the fake ``mpirun``/``dcp``
of ``tests/nnf_bin`` doing real copies. The double runs in a child process by default, as an
API server would be elsewhere (``--double in-process`` shares this process's GIL with it). A
ticker task wakes every 5 ms and records how late it was woken: the longest lateness is the
longest time the event loop could not run.

``--submit-timing N``: POST /trial -> reply, N times per way of preparing the destination
(``each``: a launch per stat/mkdir step, the reference's way; ``launch``: one launch; ``auto``:
none when the server sees the source, as here), through a real ``copy-offload-server --driver
nnf`` process with TLS and a token. With Open MPI's ``mpirun`` on PATH it is the real one
(remote host names reach this machine through ``plm_rsh_agent``), else the fake. The requests
are dry runs: the destination is prepared as for a copy, then the command is ``true``.

``--burst N``: N requests at once, one from each of N compute nodes (N ClientMounts, all in the
SystemConfiguration), on one driver: total Kubernetes calls counted by the double, calls per
request, p50/p99 submit time, and that every request was accepted and recorded Finished/Success.

    python bench/bench_nnf.py [--requests 100] [--steps 4] [--sleep 0.3]
    python bench/bench_nnf.py --submit-timing 15
    python bench/bench_nnf.py --burst 1000
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from kube_double import KubeDouble  # noqa: E402
from nnf_support import NNF_BIN, NnfWorld  # noqa: E402
from support import status_doc  # noqa: E402

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

    def finished(self) -> int:
        """NnfDataMovements recorded Finished/Success."""
        self.conn.send("finished")
        return self.conn.recv()


class _Entry:
    def __init__(self, verb: str, plural: str, status: int) -> None:
        self.verb, self.plural, self.status = verb, plural, status


def add_computes(kube: KubeDouble, count: int) -> list:
    """``count`` more compute nodes like compute-01 (their ClientMounts, access to rabbit-01)."""
    from kube_double import DWS

    names = ["compute-%04d" % i for i in range(count)]
    template = kube.get(DWS, "clientmounts", "compute-01", "default-fluxjob-1234-0-computes")
    for name in names:
        kube.put({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        cm = copy.deepcopy(template)
        cm["metadata"] = {"name": template["metadata"]["name"], "namespace": name, "labels": template["metadata"]["labels"]}
        kube.put(cm)
    kube.modify(DWS, "systemconfigurations", "default", "default",
                lambda o: o["spec"]["storageNodes"][0]["computesAccess"].extend({"name": n, "index": 100 + i} for i, n in enumerate(names)))
    return names


def serve_double(tmp: str, conn, computes: int = 0) -> None:
    """Child process: the seeded double, until the parent says stop."""
    with KubeDouble() as kube:
        NnfWorld(kube, tmp)
        if computes:
            add_computes(kube, computes)
        conn.send(kube.url)
        while True:
            command = conn.recv()
            if command == "clear":
                kube.clear_log()
                conn.send("ok")
            elif command == "log":
                conn.send([_Entry(e.verb, e.plural, e.status) for e in kube.log()])
            elif command == "finished":
                conn.send(sum(1 for d in kube.objects("nnf.cray.hpe.com", "nnfdatamovements")
                              if (d.get("status") or {}).get("state") == "Finished" and d["status"].get("status") == "Success"))
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
    docs = await asyncio.gather(*[status_doc(driver, n, 120) for n in names])
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


# --------------------------------------------------------------------------- submit time


AGENT = "#!/bin/sh\nshift\nexec /bin/sh -c \"$*\"\n"  # every "remote" host is this machine


def submit_timing(count: int, copies: bool = False) -> dict:
    """Median POST /trial -> reply with createDestDir, per way of preparing the destination.

    ``copies``: real copies (the profile's mpirun ... dcp, which must be on PATH) instead of dry runs.
    """
    import copy_offload.client as co
    from nnf_support import server_env
    from support import Material, ServerProcess, server_args

    real_mpirun = shutil.which("mpirun")
    results: dict = {"mpirun": real_mpirun or "fake (tests/nnf_bin)"}
    with tempfile.TemporaryDirectory() as tmp, KubeDouble() as kube:
        world = NnfWorld(kube, tmp)
        world.set_profile("default", setprivCommand="" if os.geteuid() == 0 else "setpriv --euid $UID --egid $GID --clear-groups")
        extra = {}
        if real_mpirun:
            agent = os.path.join(tmp, "rsh-agent")
            with open(agent, "w") as fh:
                fh.write(AGENT)
            os.chmod(agent, 0o755)
            extra = {"OMPI_MCA_plm_rsh_agent": agent, "PATH": os.environ.get("PATH", "")}
            if os.geteuid() == 0:
                extra.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        src = world.source_tree("timing")
        os.makedirs(os.path.join(tmp, "material"))
        material = Material(os.path.join(tmp, "material"))
        for mode in ("each", "launch", "auto"):
            env = dict(os.environ)
            env.update(server_env(world, NNF_PREPARE_MODE=mode, **extra))
            server = ServerProcess(args=server_args(material, extra=["--driver", "nnf"]), env=env, tls=True, material=material).start()
            times = []
            try:
                with co.Client(**server.client_kwargs()) as client:
                    for i in range(count + 1):
                        began = time.monotonic()
                        name = client.copy(src, "%s/%s-%d/out" % (world.lus, mode, i), compute_name="compute-01", dryrun=not copies)
                        took = time.monotonic() - began
                        if i:  # the first one warms the server's connections up
                            times.append(took)
                        final = client.status(name, 60)
                        if final.status != "success":
                            raise SystemExit("%s: %s %s" % (name, final.status, final.message))
            finally:
                server.stop()
            times.sort()
            results[mode] = {"median (s)": round(statistics.median(times), 3), "min (s)": round(times[0], 3),
                             "max (s)": round(times[-1], 3), "n": len(times)}
    return results


# --------------------------------------------------------------------------- burst


async def burst(world: NnfWorld, computes: list) -> dict:
    driver = await world.driver()
    src = world.source_tree("burst", files=1)
    world.kube.clear_log()
    began = time.monotonic()

    async def one(i: int, compute: str):
        start = time.monotonic()
        name = await driver.submit(world.request(src, "%s/burst/%04d" % (world.lus, i), computeName=compute, dryrun=True))
        return name, time.monotonic() - start

    submitted = await asyncio.gather(*[one(i, c) for i, c in enumerate(computes)], return_exceptions=True)
    all_answered = time.monotonic() - began
    ok = [s for s in submitted if isinstance(s, tuple)]
    while driver.active():
        await asyncio.sleep(0.05)
    all_done = time.monotonic() - began
    await driver.close()
    log = [e for e in world.kube.log() if e.verb not in ("discovery", "watch")]
    times = sorted(t for _, t in ok)
    by_kind: dict = {}
    for e in log:
        key = "%s %s" % (e.verb, e.plural)
        by_kind[key] = by_kind.get(key, 0) + 1
    return {
        "requests (one per compute node)": len(computes),
        "accepted": len(ok),
        "errors": [str(e) for e in submitted if not isinstance(e, tuple)][:3],
        "unique names": len({n for n, _ in ok}),
        "recorded Finished/Success": world.kube.finished(),
        "submit p50 / p99 / max (s)": "%.2f / %.2f / %.2f" % (times[len(times) // 2], times[int(len(times) * 0.99)], times[-1]) if times else "-",
        "all answered / all ended (s)": "%.1f / %.1f" % (all_answered, all_done),
        "Kubernetes calls in total": len(log),
        "Kubernetes calls per request": round(len(log) / max(1, len(ok)), 2),
        "calls by kind": ", ".join("%s %d" % kv for kv in sorted(by_kind.items())),
    }


def run_burst(count: int) -> dict:
    os.environ["PATH"] = NNF_BIN + os.pathsep + os.environ.get("PATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.get_context("fork").Process(target=serve_double, args=(tmp, child, count), daemon=True)
        server.start()
        try:
            world = NnfWorld(RemoteDouble(parent.recv(), parent), tmp, seed=False)
            os.makedirs(world.hostfiles, exist_ok=True)
            return asyncio.run(burst(world, ["compute-%04d" % i for i in range(count)]))
        finally:
            parent.send("stop")
            server.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--steps", type=int, default=4, help="progress lines per fake dcp")
    parser.add_argument("--sleep", type=float, default=0.3, help="seconds between them")
    parser.add_argument("--double", choices=("subprocess", "in-process"), default="subprocess")
    parser.add_argument("--submit-timing", type=int, metavar="N", help="time N POST /trial per way of preparing the destination")
    parser.add_argument("--copies", action="store_true", help="with --submit-timing: real copies (dcp on PATH), not dry runs")
    parser.add_argument("--burst", type=int, metavar="N", help="N requests at once from N compute nodes: calls and submit times")
    args = parser.parse_args()
    if args.submit_timing:
        result = submit_timing(args.submit_timing, args.copies)
        print("POST /trial -> reply with createDestDir (%s), %d cores, mpirun: %s"
              % ("copies" if args.copies else "dry runs", os.cpu_count() or 0, result.pop("mpirun")))
        for mode, numbers in result.items():
            print("  %-7s %s" % (mode, ", ".join("%s %s" % kv for kv in numbers.items())))
        return
    if args.burst:
        result = run_burst(args.burst)
        print("nnf driver, a burst of %d requests from %d compute nodes, Kubernetes double subprocess, %d cores:"
              % (args.burst, args.burst, os.cpu_count() or 0))
        for key, value in result.items():
            print("  %-34s %s" % (key, value))
        return
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
