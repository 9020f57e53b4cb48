"""Load, bounded: 200 long-polls held on one local-driver server, then 40 copies at once.

The same code as bench/bench_load.py (which runs 1,000 polls and 200 copies and reports the
numbers), at a size that takes a few seconds: every poll is answered ``completed`` once its
request is cancelled or finishes, none answers early, waiting costs the server (almost) no CPU,
its memory stays bounded, and every copy arrives byte for byte.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from hardening_support import assert_clean_log

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
pytest.importorskip("copy_offload.server.local.driver")

import bench_load  # noqa: E402


@pytest.fixture(scope="module")
def load(tmp_path_factory, material):
    server = bench_load.LoadServer.start(str(tmp_path_factory.mktemp("load")), material)
    yield server
    alive = server.server.process.poll() is None
    server.stop()
    assert alive, server.server.log[-3000:]
    assert_clean_log(server.server)


def test_long_polls_held_then_released(load):
    result = asyncio.run(bench_load.long_polls(load, polls=200, requests=4, window=1.0, settle=0.4))
    assert result.lost == 0 and result.answered == 200, result.statuses
    assert result.statuses == {"completed/cancelled": 100, "completed/success": 100}
    # Waiting is event-driven: 200 waiting polls cost no more than the running requests alone
    # (their 1 s progress writes), with a margin for a loaded 2-core machine.
    assert result.cpu_idle_polls <= result.cpu_idle_requests + 0.10 * result.window, result
    assert result.release_seconds < 10, result
    assert (result.rss_waiting - result.rss_before) / result.polls < 200, result  # KiB per waiting poll
    # Memory levels off: Python keeps what it freed for reuse, so later rounds need no more.
    rounds = [asyncio.run(bench_load.long_polls(load, polls=200, requests=4, window=0.1, settle=0.3))
              for _ in range(2)]
    assert all(r.lost == 0 for r in rounds)
    assert rounds[-1].rss_waiting < rounds[-2].rss_waiting + 4 * 1024, [r.rss_waiting for r in rounds]


def test_many_copies_at_once(load):
    result = asyncio.run(bench_load.copies(load, count=40, size_kib=64))
    assert result.failures == [] and result.identical == 40, result.failures[:3]
    assert result.rss_peak < result.rss_before + 64 * 1024, result


def test_abandoned_polls_are_released(load):
    """Clients that go away while waiting leave nothing behind: sockets closed, waits dropped."""

    async def go() -> None:
        async with load.client(4) as control:
            source = os.path.join(load.root, "abandon")
            with open(source, "w"):
                pass
            name = await bench_load.submit(control, source, source + ".out", "hold")
            await asyncio.sleep(0.5)
            fds_before = bench_load.open_fds(load.pid)
            context = load.material.context()
            pollsters = [load.client(1, context) for _ in range(100)]
            tasks = [asyncio.ensure_future(p.get(bench_load.wire.status_path(name, -1))) for p in pollsters]
            deadline = asyncio.get_running_loop().time() + 30
            while bench_load.open_fds(load.pid) < fds_before + 100:
                assert asyncio.get_running_loop().time() < deadline, "polls never reached the server"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            for task in tasks:
                task.cancel()  # the client goes away: its connection is closed
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*(p.aclose() for p in pollsters))
            deadline = asyncio.get_running_loop().time() + 10
            while bench_load.open_fds(load.pid) > fds_before:
                assert asyncio.get_running_loop().time() < deadline, (bench_load.open_fds(load.pid), fds_before)
                await asyncio.sleep(0.1)
            cpu = await bench_load.cpu_over(load.pid, 1.0)
            assert cpu < 0.2, cpu
            assert (await control.delete(bench_load.wire.cancel_path(name))).status_code == 200
            final = await control.get(bench_load.wire.status_path(name, 10))
            assert '"state":"completed"' in final.text, final.text

    asyncio.run(go())
