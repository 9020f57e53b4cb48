"""The Flux side's numbers: how fast a job gets its variables, at what Kubernetes cost.

Logic level (always): the copy-offload service (Runtime: logic, watcher thread, token reader)
in this process, driven as the reactor would drive it, against the Kubernetes API double of the
tests running in a child process (real HTTP, the real ``kubernetes`` client).

1. event -> reply: a waiting job's Workflow turns PreRun/ready; time from the double emitting
   that watch event (and from the watcher receiving it) to the service's reply.
2. Kubernetes GETs per job: requests the double logged, per job.
3. N jobs in flight: N prepare requests wait; the double's request log shows what the service
   asks for while they wait (per-job polling would show up here); then all N Workflows turn
   ready and every job is answered.

Real Flux (when ``flux`` is on PATH; ``--no-flux`` skips it), in ``flux start`` with both
plugins and the service module, as tests/flux sets them up:

4. event -> ``copy-offload-env``: the Workflow turns ready while the job's prolog waits; time
   to the event's timestamp in the job eventlog.
5. overhead on a non-dw job: submit-to-clean time of plain jobs with the plugins loaded, and
   in a second instance without any of them.

    python bench/bench_flux.py [--jobs 1000] [--samples 30] [--no-flux]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(HERE, "..", "tests")
sys.path.insert(0, TESTS)

from copy_offload.flux.config import ServiceConfig  # noqa: E402
from copy_offload.flux.runtime import Runtime  # noqa: E402
from flux_support import CO_DW, Msg, set_status, token_secret, workflow  # noqa: E402
from kube_double import DWS, KubeDouble  # noqa: E402

# -- the double in a child process ----------------------------------------------------------


def double_child(conn: Any) -> None:
    """Serve a KubeDouble; obey (command, args) messages from the parent."""
    with KubeDouble() as kube:
        conn.send(kube.url)
        while True:
            cmd, args = conn.recv()
            if cmd == "stop":
                conn.send(None)
                return
            if cmd == "put":
                for obj in args:
                    kube.put(obj)
                conn.send(None)
            elif cmd == "ready":
                stamps = []
                for jobid in args:
                    stamps.append(time.monotonic())
                    kube.modify(DWS, "workflows", "default", f"fluxjob-{jobid}",
                                set_status(state="PreRun", ready=True))
                conn.send(stamps)
            elif cmd == "log":
                conn.send([(e.verb, e.plural, e.time) for e in kube.log()])
            elif cmd == "clear":
                kube.clear_log()
                conn.send(None)


class Double:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=double_child, args=(child,), daemon=True)
        self.proc.start()
        self.url = self.conn.recv()

    def call(self, cmd: str, args: Any = None) -> Any:
        self.conn.send((cmd, args))
        return self.conn.recv()

    def kubeconfig(self, path: str) -> str:
        text = ("apiVersion: v1\nkind: Config\ncurrent-context: d\n"
                f"clusters:\n- name: d\n  cluster:\n    server: {self.url}\n"
                "contexts:\n- name: d\n  context:\n    cluster: d\n    user: d\n"
                "users:\n- name: d\n  user: {}\n")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return path

    def stop(self) -> None:
        self.call("stop")
        self.proc.join(5)


# -- the service, driven like a reactor -----------------------------------------------------


class Stamped:
    """The replier: records when each message got its reply."""

    def __init__(self) -> None:
        self.at: Dict[str, float] = {}
        self.errors: List[str] = []

    def respond(self, msg: Any, payload: Any = None) -> None:
        self.at[msg.tag] = time.monotonic()

    def respond_error(self, msg: Any, errnum: int, text: str) -> None:
        self.at[msg.tag] = time.monotonic()
        self.errors.append(text)


class Loop(threading.Thread):
    """The 'reactor': runs what the helper threads post, and calls into the logic on request."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__(daemon=True)
        self.rt = rt
        self.stop_flag = False

    def run(self) -> None:
        while not self.stop_flag:
            self.rt.queue.wait(0.05)
            self.rt.run_queued()

    def prepare(self, jobid: int) -> None:
        """Send a prepare request for ``jobid``, as the jobtap plugin would."""
        self.rt.queue.post(lambda: self.rt.logic.prepare(
            Msg(str(jobid)), {"id": jobid, "userid": 1001, "dw": CO_DW}, from_owner=True))


def wait_for(pred: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit("bench: timed out")
        time.sleep(0.002)


def pct(values: List[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms"


def logic_level(jobs: int, samples: int) -> Dict[str, Any]:
    double = Double()
    tmp = tempfile.mkdtemp(prefix="bench-flux-")
    try:
        cfg = ServiceConfig(kubeconfig=double.kubeconfig(os.path.join(tmp, "kubeconfig")),
                            prepare_timeout=600.0, watch_timeout=600)
        first = 1000
        ids = list(range(first, first + jobs))
        double.call("put", [token_secret(j) for j in ids])
        double.call("put", [workflow(j, state="DataIn", ready=False) for j in ids])
        replier = Stamped()
        rt = Runtime(cfg, replier)
        loop = Loop(rt)
        loop.start()
        wait_for(lambda: rt.logic.synced, 30)

        # 1. one job at a time: event -> reply
        lat_emit, sample_ids = [], ids[:samples]
        for j in sample_ids:
            loop.prepare(j)
            time.sleep(0.01)
            (t_emit,) = double.call("ready", [j])
            wait_for(lambda j=j: str(j) in replier.at, 10)
            lat_emit.append(replier.at[str(j)] - t_emit)
        stats = rt.logic.stats()["event-to-reply-ms"]

        # 3. the rest in flight at once
        rest = ids[samples:]
        t0 = time.monotonic()
        for j in rest:
            loop.prepare(j)
        wait_for(lambda: rt.logic.stats()["pending"] == len(rest), 60)
        queued = time.monotonic() - t0
        idle = 2.0
        w0 = time.monotonic()
        time.sleep(idle)
        w1 = time.monotonic()
        double.call("ready", rest)
        wait_for(lambda: len(replier.at) == jobs, 120)
        all_answered = max(replier.at[str(j)] for j in rest) - w1
        log = double.call("log")  # CLOCK_MONOTONIC is one clock for both processes
        while_waiting = [e for e in log if w0 <= e[2] < w1]
        gets: Dict[str, int] = {}
        for verb, plural, _ in log:
            if verb == "get":
                gets[plural] = gets.get(plural, 0) + 1
        burst = sum(1 for verb, plural, t in log if verb == "get" and t >= w1)
        final = rt.logic.stats()
        loop.stop_flag = True
        loop.join(2)
        rt.close()
        return {
            "jobs": jobs,
            "event_to_reply_emit": lat_emit,
            "event_to_reply_recv_ms": stats,
            "queued_s": queued,
            "requests_while_waiting": len(while_waiting),
            "idle_s": idle,
            "all_answered_s": all_answered,
            "gets_during_burst": burst,
            "gets_by_resource": gets,
            "service_gets": final["kubernetes-gets"],
            "errors": replier.errors[:3],
            "lists": final["watch"]["lists"],
            "watch_requests": final["watch"]["watch-requests"],
        }
    finally:
        double.stop()
        shutil.rmtree(tmp, ignore_errors=True)


# -- real Flux ------------------------------------------------------------------------------


def load_flux_conftest() -> Any:
    spec = importlib.util.spec_from_file_location(
        "flux_tier", os.path.join(TESTS, "flux", "conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build_plugins(tier: Any, tmp: str) -> str:
    import subprocess

    build = os.path.join(tmp, "build")
    proc = subprocess.run(["make", "-s", "-C", os.path.join(tier.REPO, "jobtap"),
                           f"BUILD={build}"], env=tier._flux_env(), capture_output=True,
                          text=True)
    if proc.returncode:
        raise SystemExit(f"make -C jobtap failed: {proc.stderr}")
    return build


def clean_times(inst: Any, jobids: List[str]) -> List[float]:
    out = []
    for job in jobids:
        ev = {e["name"]: e["timestamp"] for e in inst.eventlog(job)}
        out.append(ev["clean"] - ev["submit"])
    return out


def run_plain_interleaved(a: Any, b: Any, n: int) -> tuple:
    """n plain jobs in each instance, alternating, so load drift hits both alike."""
    jobs_a, jobs_b = [], []
    for _ in range(n):
        for inst, jobs in ((a, jobs_a), (b, jobs_b)):
            job = inst.submit("true")
            inst.flux("job", "wait-event", job, "clean")
            jobs.append(job)
    return clean_times(a, jobs_a), clean_times(b, jobs_b)


def flux_level(samples: int) -> Dict[str, Any]:
    tier = load_flux_conftest()
    tmp = tempfile.mkdtemp(prefix="bench-flux-real-")
    out: Dict[str, Any] = {}
    try:
        plugins = build_plugins(tier, tmp)
        with KubeDouble() as kube:
            inst = tier.Instance(os.path.join(tmp, "with"), plugins, kube,
                                 prepare_timeout=600.0, jobtap_timeout=900.0)
            bare = tier.Instance(os.path.join(tmp, "without"), plugins, kube, bare=True)
            try:
                inst.wait_service()
                lat = []
                for _ in range(samples):
                    job = inst.submit("true", dw=" ".join(CO_DW), hold=True)
                    jobid = inst.decimal(job)
                    kube.put(token_secret(jobid))
                    inst.put_workflow(workflow(jobid, userid=os.getuid(), state="DataIn",
                                               ready=False))
                    inst.release(job)
                    inst.flux("job", "wait-event", job, "prolog-start")
                    t0 = time.time()
                    kube.modify(DWS, "workflows", "default", f"fluxjob-{jobid}",
                                set_status(state="PreRun", ready=True))
                    inst.flux("job", "wait-event", job, "clean")
                    ev = {e["name"]: e["timestamp"] for e in inst.eventlog(job)}
                    lat.append(ev["copy-offload-env"] - t0)
                out["event_to_env"] = lat
                out["plain_with"], out["plain_without"] = run_plain_interleaved(
                    inst, bare, 2 * samples)
                out["stats"] = inst.stats()
            finally:
                inst.stop()
                bare.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000, help="jobs in flight (logic level)")
    ap.add_argument("--samples", type=int, default=30, help="samples per latency figure")
    ap.add_argument("--no-flux", action="store_true", help="skip the real-Flux figures")
    ap.add_argument("--json", action="store_true", help="print the raw numbers as JSON")
    args = ap.parse_args()

    res = logic_level(args.jobs, args.samples)
    real = None
    if not args.no_flux and shutil.which("flux"):
        real = flux_level(args.samples)
    if args.json:
        print(json.dumps({"logic": res, "flux": real}, indent=2, default=str))
        return
    e = res["event_to_reply_emit"]
    r = res["event_to_reply_recv_ms"]
    print("logic level (service in this process, Kubernetes double in a child process)")
    print(f"  event -> reply, from the double emitting it: median {ms(statistics.median(e))}, "
          f"p95 {ms(pct(e, 0.95))}, max {ms(max(e))} (n={len(e)}; target <= 100 ms)")
    print(f"  event -> reply, from the watcher receiving it: mean {r['mean']} ms, "
          f"max {r['max']} ms (n={r['count']})")
    total = sum(res["gets_by_resource"].values())
    print(f"  {res['jobs']} jobs: {total} Kubernetes GETs = {total / res['jobs']:.2f} per job "
          f"(by resource: {res['gets_by_resource']}; the service counted "
          f"{res['service_gets']}; Workflows come from the watch; target <= 1)")
    print(f"  {res['jobs'] - len(e)} jobs waiting together: {res['requests_while_waiting']} "
          f"Kubernetes requests in {res['idle_s']:.0f} s of waiting (no per-job polling); "
          f"all answered {ms(res['all_answered_s'])} after their Workflows turned ready "
          f"({res['gets_during_burst']} Secret GETs)")
    print(f"  whole run: {res['lists']} list(s), {res['watch_requests']} watch request(s); "
          f"errors: {res['errors'] or 'none'}")
    if real is None:
        print("real Flux: skipped (flux not on PATH, or --no-flux)")
        return
    lat, w, wo = real["event_to_env"], real["plain_with"], real["plain_without"]
    print("real Flux (flux start, both plugins, the service module)")
    print(f"  Workflow ready -> copy-offload-env event: median {ms(statistics.median(lat))}, "
          f"p95 {ms(pct(lat, 0.95))}, max {ms(max(lat))} (n={len(lat)}; target <= 100 ms; "
          "flux-coral2 polls every 5 s)")
    print(f"  non-dw job, submit -> clean: median {ms(statistics.median(w))} with the plugins "
          f"and the service, {ms(statistics.median(wo))} in an instance without them "
          f"(n={len(w)} each, interleaved; difference "
          f"{ms(statistics.median(w) - statistics.median(wo))}; spread: "
          f"p25-p75 {ms(pct(wo, 0.25))}-{ms(pct(wo, 0.75))} without)")


if __name__ == "__main__":
    main()
