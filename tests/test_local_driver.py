"""The local driver through its Driver API (asyncio.run in each test), on real files."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import time

import pytest
from copy_offload.client import wire
from copy_offload.client.wire import CopyRequest, RequestState
from copy_offload.server.app import http_code
from copy_offload.server.drivers.errors import DriverError
from copy_offload.server.local.driver import LocalDriver, _worker_hint
from copy_offload.server.local.progress import PROGRESS_RE
from copy_offload.server.local.store import RESTART_MESSAGE, Store
from support import status_doc
from test_local_trees import leftovers, make_tree, snapshot, write

SLOW = """#!/bin/sh
echo "Copied 0 B of 1 B (0%) in 0.000 secs (0 B/s) ..."
exec sleep 30
"""
FAKE = """#!/bin/sh
echo "Copied 1 B of 2 B (50%) in 0.100 secs (10 B/s) 1 secs left ..."
cp "$1" "$2" && echo "copied $1" && exit "${FAKE_EXIT:-0}"
"""


@pytest.fixture
def env(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    for name, text in (("slow", SLOW), ("fake", FAKE)):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    (tmp_path / "profiles.toml").write_text(
        "[profiles.slow]\ncommand = '%s $SRC $DEST'\n[profiles.fake]\ncommand = '%s $SRC $DEST'\nstoreStdout = true\n"
        % (tmp_path / "slow", tmp_path / "fake"))
    return tmp_path, root


def driver(tmp_path, root, **kwargs):
    return LocalDriver(allow_roots=[str(root)], state_dir=str(tmp_path / "state"),
                       profiles_file=str(tmp_path / "profiles.toml"), node_name="node7", **kwargs)


def request(src, dst, **kwargs):
    return CopyRequest(computeName="compute-1", sourcePath=str(src), destinationPath=str(dst), **kwargs)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_copy_to_completion_with_the_full_status(env):
    tmp, root = env
    make_tree(str(root / "src"))

    async def main():
        d = driver(tmp, root)
        await d.start()
        name = await d.submit(request(root / "src", root / "dst"))
        assert d.active() == [name]
        doc = await status_doc(d, name, -1)
        assert d.active() == []
        await d.close()
        return name, doc

    name, doc = run(main())
    assert name == "node7--nnf-copy-offload-0"
    assert wire.split_request_name(name) == ("node7", "nnf-copy-offload-0")
    assert snapshot(str(root / "dst"), times=False) == snapshot(str(root / "src"), times=False)
    assert (doc["state"], doc["status"]) == ("completed", "success")
    cs = doc["commandStatus"]
    assert cs["command"] == "copy-offload-engine %s %s" % (root / "src", root / "dst")
    assert cs["progress"] == 100 and PROGRESS_RE.search(cs["lastMessage"]).group(1) == "100"
    assert cs["filesTotal"] == cs["filesCopied"] == 310 and cs["bytesTotal"] == cs["bytesCopied"] > 0
    assert cs["bytesPerSecond"] > 0 and re.fullmatch(r"[\d.]+m?s", cs["elapsedTime"])
    assert list(doc) == ["state", "status", "commandStatus", "startTime", "endTime"]


def test_status_waits_event_driven_and_cancel_removes_at_once(env):
    tmp, root = env
    write(str(root / "f"), b"x")

    async def main():
        d = driver(tmp, root)
        await d.start()
        name = await d.submit(request(root / "f", root / "g", dmProfile="slow"))
        now = await asyncio.wait_for(status_doc(d, name, 0), 30)  # answers now: the copy runs 30 s
        assert now["state"] == "running"
        loop = asyncio.get_running_loop()
        t0 = loop.time()  # the clock asyncio's wait_for measures the long-poll with
        later = await status_doc(d, name, 1)
        waited = loop.time() - t0
        assert 1.0 <= waited < 25 and later["state"] == "running"  # the wait, not the 30 s copy
        assert later["commandStatus"]["command"] == "%s %s %s" % (tmp / "slow", root / "f", root / "g")
        assert later["commandStatus"]["lastMessage"].startswith("Copied 0 B")
        assert "progress" not in later["commandStatus"]  # 0% is omitted, as the reference does
        waiter = asyncio.ensure_future(status_doc(d, name, -1))
        for _ in range(20):  # let the waiter run up to its wait (no clock involved)
            await asyncio.sleep(0)
        assert not waiter.done()
        assert await asyncio.wait_for(d.cancel(name), 25) is True  # not the 30 s the copy would take
        assert d.active() == []
        final = await waiter
        assert await d.cancel(name) is True  # after completion: still 200
        assert await d.cancel("node7--nnf-copy-offload-99") is False
        with pytest.raises(DriverError) as info:
            await status_doc(d, "node7--nnf-copy-offload-99", 5)
        assert (http_code(info.value), info.value.message) == (404, wire.ERR_REQUEST_NOT_FOUND)
        await d.close()
        return final

    final = run(main())
    assert (final["state"], final["status"]) == ("completed", "cancelled")


def test_cancel_of_an_engine_copy_leaves_nothing(env):
    tmp, root = env
    for i in range(8):
        write(str(root / "src" / ("p%d" % i)), os.urandom(1 << 20) * 32)

    async def main():
        d = driver(tmp, root)
        await d.start()
        name = await d.submit(request(root / "src", root / "out", slots=1))
        assert d.active() == [name]
        assert await d.cancel(name)
        assert d.active() == []
        doc = await status_doc(d, name, 0)
        await d.close()
        return doc

    doc = run(main())
    assert (doc["state"], doc["status"]) == ("completed", "cancelled")
    assert not (root / "out").exists() and leftovers(str(root)) == []


def test_records_survive_a_restart_and_interrupted_ones_fail(env):
    tmp, root = env
    write(str(root / "f"), b"hello")
    staged = root / ".out.copy-offload-0badc0de.tmp"
    write(str(staged / "torn"), b"half")

    async def first():
        d = driver(tmp, root)
        await d.start()
        name = await d.submit(request(root / "f", root / "g"))
        doc = await status_doc(d, name, -1)
        await d.close()
        return name, doc

    name, doc = run(first())
    store = Store(str(tmp / "state"))  # what a server killed mid-copy leaves behind
    store.save("node7--nnf-copy-offload-1", RequestState(state="Running", command="c",
               start_time=dt.datetime.now(dt.timezone.utc)), [str(staged)])
    store.next_sequence()
    store.close()

    async def second():
        d = driver(tmp, root)
        await d.start()
        assert d.active() == []
        again = await status_doc(d, name, 0)
        failed = await status_doc(d, "node7--nnf-copy-offload-1", -1)
        assert await d.cancel(name) is True
        fresh = await d.submit(request(root / "f", root / "h"))
        await status_doc(d, fresh, -1)
        await d.close()
        return again, failed, fresh

    again, failed, fresh = run(second())
    assert again == doc
    assert (failed["state"], failed["status"], failed["message"]) == ("completed", "failed", RESTART_MESSAGE)
    assert "endTime" in failed
    assert not staged.exists()
    assert fresh == "node7--nnf-copy-offload-2"


@pytest.mark.parametrize("src, dst, kwargs, code, text", [
    ("f", "g", {"dmProfile": "nope"}, 400, "unable to retrieve NnfDataMovementProfile: nope"),
    ("../f", "g", {}, 400, "outside the allowed roots"),
    ("f", "../g", {}, 400, "outside the allowed roots"),
    ("missing", "g", {}, 400, "does not exist"),
    ("d", "d/in", {}, 400, "into itself"),
    ("f", "g", {"dmProfile": "absent-tool"}, 500, "was not found on this server"),
])
def test_bad_requests_are_refused_and_consume_no_name(env, src, dst, kwargs, code, text):
    tmp, root = env
    write(str(root / "f"), b"x")
    (root / "d").mkdir()
    with open(tmp / "profiles.toml", "a") as profiles:
        profiles.write("[profiles.absent-tool]\ncommand = 'no-such-tool-here $SRC $DEST'\n")

    async def main():
        d = driver(tmp, root)
        await d.start()
        with pytest.raises(DriverError) as info:
            await d.submit(request(os.path.join(root, src), os.path.join(root, dst), **kwargs))
        assert d.active() == []
        name = await d.submit(request(root / "f", root / "ok"))
        await d.close()
        return info.value, name

    error, name = run(main())
    assert http_code(error) == code and text in error.message
    assert name.endswith("-0")


def test_command_profile_success_failure_and_store_stdout(env, monkeypatch):
    tmp, root = env
    write(str(root / "f"), b"data")

    async def main():
        d = driver(tmp, root)
        await d.start()
        ok = await status_doc(d, await d.submit(request(root / "f", root / "g", dmProfile="fake")), -1)
        monkeypatch.setenv("FAKE_EXIT", "4")
        bad = await status_doc(d, await d.submit(request(root / "f", root / "h", dmProfile="fake")), -1)
        dry = await status_doc(d, await d.submit(request(root / "f", root / "i", dmProfile="fake", dryrun=True)), -1)
        await d.close()
        return ok, bad, dry

    ok, bad, dry = run(main())
    assert (ok["status"], ok["message"]) == ("success", "Copied 1 B of 2 B (50%%) in 0.100 secs (10 B/s) 1 secs "
                                                        "left ...\ncopied %s\n" % (root / "f"))
    assert ok["commandStatus"]["progress"] == 50 and ok["commandStatus"]["lastMessage"] == "copied %s\n" % (root / "f")
    assert "bytesTotal" not in ok["commandStatus"]
    assert (root / "g").read_bytes() == b"data"
    assert bad["status"] == "failed" and bad["message"].startswith("exit status 4: Copied 1 B")
    assert dry["status"] == "success" and not (root / "i").exists()
    assert dry["commandStatus"]["lastMessage"].startswith("Dry run: would run ")


def test_dryrun_with_the_engine_and_an_existing_directory_destination(env):
    tmp, root = env
    make_tree(str(root / "src"))
    (root / "into").mkdir()

    async def main():
        d = driver(tmp, root)
        await d.start()
        dry = await status_doc(d, await d.submit(request(root / "src", root / "into", dryrun=True)), -1)
        real = await status_doc(d, await d.submit(request(root / "src", root / "into")), -1)
        await d.close()
        return dry, real

    dry, real = run(main())
    assert dry["commandStatus"]["command"].startswith("copy-offload-engine --dryrun ")
    assert dry["commandStatus"]["filesTotal"] == 310 and dry["commandStatus"]["filesCopied"] == 0
    assert real["status"] == "success"
    assert snapshot(str(root / "into" / "src"), times=False) == snapshot(str(root / "src"), times=False)


def test_fifty_requests_at_once(env):
    tmp, root = env
    for i in range(50):
        write(str(root / "src" / ("f%02d" % i)), os.urandom(1000 + i))

    async def main():
        d = driver(tmp, root)
        await d.start()
        names = await asyncio.gather(*[
            d.submit(request(root / "src" / ("f%02d" % i), root / "dst" / ("f%02d" % i))) for i in range(50)])
        docs = await asyncio.gather(*[status_doc(d, name, -1) for name in names])
        active = d.active()
        await d.close()
        return names, docs, active

    names, docs, active = run(main())
    assert len(set(names)) == 50 and active == []
    assert all(doc["status"] == "success" for doc in docs)
    for i in range(50):
        assert (root / "dst" / ("f%02d" % i)).read_bytes() == (root / "src" / ("f%02d" % i)).read_bytes()


def test_the_event_loop_keeps_running_during_a_big_copy(env):
    tmp, root = env
    write(str(root / "big"), os.urandom(1 << 20) * 128)

    async def main():
        d = driver(tmp, root)
        await d.start()
        name = await d.submit(request(root / "big", root / "copy"))
        worst = 0.0
        while name in d.active():
            t0 = time.monotonic()
            await asyncio.sleep(0.005)
            worst = max(worst, time.monotonic() - t0)
        await d.close()
        return worst

    assert run(main()) < 0.25


def test_dcp_direct_option_reaches_the_engine(env):
    tmp, root = env
    data = os.urandom(1 << 20) * 65
    write(str(root / "big"), data)

    async def main():
        d = driver(tmp, root)
        await d.start()
        doc = await status_doc(d, await d.submit(request(root / "big", root / "copy", dcpOptions="--progress 1 --direct")), -1)
        with pytest.raises(DriverError) as info:
            await d.submit(request(root / "big", root / "x", dcpOptions="'unbalanced"))
        await d.close()
        return doc, info.value

    doc, error = run(main())
    assert doc["status"] == "success"
    assert doc["commandStatus"]["command"] == "copy-offload-engine --direct %s %s" % (root / "big", root / "copy")
    assert (root / "copy").read_bytes() == data
    assert http_code(error) == 400 and error.message.startswith("unable to parse dcpOptions")


def test_dcp_preserve_option_keeps_times_and_the_default_does_not(env):
    """As dcp: times only with -p/--preserve; the mode either way."""
    tmp, root = env
    write(str(root / "f"), b"data", 0o640, 1_500_000_000_000_000_000)

    async def main():
        d = driver(tmp, root)
        await d.start()
        docs = [await status_doc(d, await d.submit(request(root / "f", root / name, dcpOptions=options)), -1)
                for name, options in (("kept", "-p"), ("also", "--progress 1 --preserve"), ("plain", ""))]
        await d.close()
        return docs

    docs = run(main())
    assert [doc["status"] for doc in docs] == ["success"] * 3
    assert docs[0]["commandStatus"]["command"] == "copy-offload-engine --preserve %s %s" % (root / "f", root / "kept")
    modes_times = [(os.stat(root / name).st_mode & 0o777, os.stat(root / name).st_mtime_ns)
                   for name in ("kept", "also")]
    assert modes_times == [(0o640, 1_500_000_000_000_000_000)] * 2
    plain = os.stat(root / "plain")
    assert plain.st_mode & 0o777 == 0o640 and plain.st_mtime_ns > 1_700_000_000_000_000_000


def test_worker_hint_from_slots():
    assert _worker_hint(CopyRequest(), 3) == 3
    assert _worker_hint(CopyRequest(slots=4), 3) == 4
    assert _worker_hint(CopyRequest(maxSlots=2), 3) == 2
    assert _worker_hint(CopyRequest(slots=8, maxSlots=2), 3) == 2
    assert _worker_hint(CopyRequest(slots=-1, maxSlots=0), 3) == 3
