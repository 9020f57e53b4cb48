"""Stress of every thread hand-off in the service: helper threads -> CallQueue -> reactor.

The consumer here does what the reactor does: it sleeps in ``select`` on the queue's fd and
drains only when that fd is readable. A lost wakeup shows up as calls left queued while the
fd stays unreadable; each test bounds that wait with a generous deadline and fails with the
counts it saw, so a regression fails in bounded time instead of hanging.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
import uuid
from typing import Dict, List, Optional, Tuple

import pytest
from copy_offload.flux.callqueue import CallQueue
from copy_offload.flux.config import ServiceConfig
from copy_offload.flux.kube import KubeError
from copy_offload.flux.tokens import TokenReader
from flux_support import set_status, token_secret, workflow
from kube_double import DWS

STALL = 10.0  # seconds with calls queued and the fd unreadable: a lost wakeup


@pytest.fixture
def fine_switching():
    """Switch threads as often as CPython allows, so producers interleave with ``drain``."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def consume(q: CallQueue, done: threading.Event, stall: float = STALL) -> Tuple[int, bool]:
    """Drain ``q`` whenever its fd is readable until ``done``; returns (drains, stalled)."""
    drains = 0
    while not done.is_set():
        readable, _, _ = select.select([q.fileno()], [], [], stall)
        if not readable:
            return drains, not done.is_set()
        q.drain()
        drains += 1
    return drains, False


def producer_round(threads: int, per_thread: int) -> Tuple[Dict[int, List[int]], int, int, bool]:
    """``threads`` producers post ``per_thread`` calls each at once while ``consume`` drains;
    returns (calls seen per thread, calls run, drains, stalled)."""
    q = CallQueue()
    seen: Dict[int, List[int]] = {t: [] for t in range(threads)}
    total = [0]
    done = threading.Event()

    def record(t: int, i: int) -> None:
        seen[t].append(i)
        total[0] += 1
        if total[0] == threads * per_thread:
            done.set()

    start = threading.Barrier(threads)

    def produce(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            q.post(record, t, i)

    producers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for p in producers:
        p.start()
    drains, stalled = consume(q, done)
    for p in producers:
        p.join()
    q.close()
    return seen, total[0], drains, stalled


def test_many_producers_never_lose_a_wakeup(fine_switching):
    threads, per_thread = 8, 2000
    for rnd in range(5):
        seen, ran, drains, stalled = producer_round(threads, per_thread)
        assert not stalled, (f"round {rnd}: lost wakeup: {ran} of {threads * per_thread} "
                             f"calls ran, the fd stayed unreadable for {STALL:g}s "
                             f"({drains} drains)")
        for t in range(threads):  # nothing lost, nothing run twice, each thread's order kept
            assert seen[t] == list(range(per_thread)), f"round {rnd}: thread {t}"


def test_drain_runs_every_taken_call_even_if_one_raises():
    q = CallQueue()
    seen: List[int] = []

    def boom() -> None:
        raise RuntimeError("one bad call")

    q.post(seen.append, 1)
    q.post(boom)
    q.post(seen.append, 2)
    with pytest.raises(RuntimeError, match="one bad call"):
        q.drain()
    assert seen == [1, 2]
    assert not q.wait(0.0)  # nothing left, no stale wakeup
    q.close()


def stray_bytes_after_close() -> bytes:
    """Close a queue while a thread posts to it, then open a pipe that likely reuses its fd
    numbers; returns whatever the late posts wrote into that pipe."""
    q = CallQueue()
    posting = threading.Thread(target=lambda: [q.post(len, "") for _ in range(2000)])
    posting.start()
    q.close()
    r, w = os.pipe()
    os.set_blocking(r, False)
    posting.join()
    try:
        return os.read(r, 64)
    except BlockingIOError:
        return b""
    finally:
        os.close(r)
        os.close(w)


def test_post_racing_close_never_writes_to_a_reused_fd(fine_switching):
    """After ``close`` the fd numbers may be reused at once; a late ``post`` must not write."""
    stray = [b for b in (stray_bytes_after_close() for _ in range(50)) if b]
    assert stray == [], "post() wrote into a pipe it does not own after close()"


class Results:
    """``done`` callbacks from the TokenReader, checked on the consuming thread."""

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.got: Dict[str, List[Tuple[Optional[str], Optional[KubeError]]]] = {}
        self.done = threading.Event()
        self.consumer: Optional[int] = None
        self.wrong_thread = 0

    def callback(self, name: str):
        def done(token: Optional[str], error: Optional[KubeError]) -> None:
            if threading.get_ident() != self.consumer:
                self.wrong_thread += 1
            self.got.setdefault(name, []).append((token, error))
            if len(self.got) == self.expect:
                self.done.set()
        return done


def test_token_reader_many_reads_each_answer_once_to_its_own_job(kube, tmp_path):
    """Secret GETs on the pool threads, results posted to the queue: every job gets exactly its
    own token, once, on the consuming thread."""
    jobs = 120
    tokens = {jobid: f"tok-{jobid}-{uuid.uuid4().hex}" for jobid in range(1, jobs + 1)}
    for jobid, tok in tokens.items():
        kube.put(token_secret(jobid, token=tok))
    cfg = ServiceConfig(kubeconfig=kube.write_kubeconfig(str(tmp_path / "kubeconfig")),
                        request_timeout=10.0, backoff_min=0.05, backoff_max=0.2)
    q = CallQueue()
    reader = TokenReader(cfg, q.post, workers=8)
    results = Results(jobs)
    results.consumer = threading.get_ident()
    try:
        for jobid in tokens:
            name = f"fluxjob-{jobid}"
            reader.read(f"{name}-token", "default", results.callback(name))
        t0 = time.monotonic()
        _, stalled = consume(q, results.done, stall=30.0)
        assert not stalled, f"{len(results.got)} of {jobs} reads answered"
        assert time.monotonic() - t0 < 120
    finally:
        reader.close()
        q.close()
    assert results.wrong_thread == 0
    for jobid, tok in tokens.items():
        assert results.got[f"fluxjob-{jobid}"] == [(tok, None)]
    assert reader.gets == jobs


def test_fifty_jobs_with_watch_events_and_secret_reads_each_get_their_own_token(kube, service):
    """The whole service under a burst: 50 pending jobs, their Workflows turning ready on the
    watch thread while the Secret pool reads tokens; every job gets its own token."""
    jobs = list(range(201, 251))
    tokens = {j: f"burst-{j}-{uuid.uuid4().hex}" for j in jobs}
    for j in jobs:
        kube.put(token_secret(j, token=tokens[j]))
        kube.put(workflow(j, state="Setup", ready=False))
    svc = service(prepare_timeout=120.0)
    svc.synced(timeout=30)
    msgs = {j: svc.prepare(j) for j in jobs}
    svc.rt.run_queued()
    flipper = threading.Thread(target=lambda: [kube.modify(
        DWS, "workflows", "default", f"fluxjob-{j}", set_status(state="PreRun", ready=True))
        for j in jobs])
    flipper.start()
    deadline = time.monotonic() + 120
    while not all(svc.handle.for_msg(m) for m in msgs.values()):
        assert time.monotonic() < deadline, "the burst was not answered"
        readable = svc.rt.queue.wait(STALL)
        pending = sum(1 for m in msgs.values() if not svc.handle.for_msg(m))
        assert readable or not pending or flipper.is_alive(), \
            f"lost wakeup: {pending} jobs still waiting, queue fd unreadable for {STALL:g}s"
        svc.rt.run_queued()
    flipper.join()
    for j, m in msgs.items():
        kind, _, payload = svc.handle.one(m)
        assert kind == "ok"
        assert payload["variables"]["DW_WORKFLOW_TOKEN"] == tokens[j]
        assert payload["variables"]["DW_WORKFLOW_NAME"] == f"fluxjob-{j}"
    assert svc.rt.reader.gets == len(jobs)
