"""The local driver end to end: a real server process (TLS, token), real files, our clients.

What a user sees: copies that arrive byte for byte, progress that only goes up, paths outside
the allowed roots refused with a clear 400, cancel that leaves no torn file, records that
survive a restart, and many requests at once.
"""

from __future__ import annotations

import asyncio
import filecmp
import hashlib
import os
import time

import copy_offload.client as co
import pytest
from support import run_tool


def tree_digest(root: str) -> dict:
    out = {}
    for base, dirs, files in os.walk(root):
        for name in files + dirs:
            path = os.path.join(base, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                out[rel] = ("dir", st.st_mode)
            else:
                with open(path, "rb") as f:
                    out[rel] = ("file", st.st_mode, hashlib.sha256(f.read()).hexdigest())
    return out


@pytest.fixture
def roots(tmp_path):
    src = tmp_path / "src-root"
    dst = tmp_path / "dst-root"
    src.mkdir()
    dst.mkdir()
    return src, dst


@pytest.fixture
def local_server(server_factory, roots, tmp_path):
    src, dst = roots
    return server_factory("local", extra=["--allow-root", str(src), "--allow-root", str(dst),
                                          "--state-dir", str(tmp_path / "state")])


BLOCK = b"copy-offload" * (1 << 16)


def write_big_files(root, count, blocks=200):
    """``count`` files of ``blocks`` x 768 KiB (150 MiB by default): long enough to act mid-copy."""
    for i in range(count):
        with open(root / ("part%d.bin" % i), "wb") as f:
            for _ in range(blocks):
                f.write(BLOCK)


def wait_until_moving(client, name):
    """Return once the copy has moved bytes and has not finished."""
    while True:
        status = client.status(name)
        assert not status.done, "the copy finished too soon; make the data larger"
        if status.bytes_copied:
            return
        time.sleep(0.01)


def make_tree(root, files=60):
    (root / "a" / "b" / "c").mkdir(parents=True)
    for i in range(files):
        (root / "a" / ("f%d.txt" % i)).write_bytes(os.urandom(i * 97))
    (root / "a" / "b" / "empty").write_bytes(b"")
    script = root / "a" / "b" / "c" / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o750)
    os.utime(script, (1_600_000_000, 1_600_000_000))
    os.symlink("../f1.txt", root / "a" / "b" / "link-to-f1")


def test_tree_and_large_file_through_the_tester(local_server, roots):
    src, dst = roots
    make_tree(src)
    with open(src / "big.bin", "wb") as f:
        f.truncate(0)
        for _ in range(48):
            f.write(os.urandom(1 << 20))
    env = local_server.client_env()
    common = ["-x", local_server.material.cert]
    r = run_tool("copy_offload.client.tester", [*common, "-o", "-S", str(src / "a"), "-D", str(dst / "tree")], env)
    assert r.returncode == 0, r.stderr
    name = r.stdout.strip()
    r = run_tool("copy_offload.client.tester", [*common, "-q", "-j", name, "-w", "60"], env)
    assert r.returncode == 0 and "state: completed\nstatus: success\n" in r.stdout, r.stdout
    assert tree_digest(str(src / "a")) == tree_digest(str(dst / "tree"))
    r = run_tool("copy_offload.client.tester", [*common, "-o", "-S", str(src / "big.bin"), "-D", str(dst)], env)
    name = r.stdout.strip()
    r = run_tool("copy_offload.client.tester", [*common, "-q", "-j", name, "-w", "60"], env)
    assert "status: success" in r.stdout
    assert filecmp.cmp(src / "big.bin", dst / "big.bin", shallow=False)


def test_progress_is_monotonic_and_final_status_is_rich(local_server, roots):
    src, dst = roots
    with open(src / "big.bin", "wb") as f:
        for _ in range(256):
            f.write(os.urandom(1 << 20))
    seen = []
    with co.Client(**local_server.client_kwargs()) as client:
        name = client.copy(str(src / "big.bin"), str(dst / "copy.bin"))
        final = client.wait(name, timeout=120, on_progress=seen.append)
    assert final.ok, final
    assert final.bytes_total == final.bytes_copied == 256 << 20
    assert final.end_time and final.start_time and final.command
    assert final.files_total == final.files_copied == 1
    done = [s.bytes_copied for s in seen if s.bytes_copied is not None]
    assert done == sorted(done)
    percents = [s.progress for s in seen]
    assert percents == sorted(percents)
    assert filecmp.cmp(src / "big.bin", dst / "copy.bin", shallow=False)


@pytest.mark.parametrize("source, dest, text", [
    ("/etc/passwd", "{dst}/x", "outside the allowed roots"),
    ("{src}/f", "/tmp/escape-target", "outside the allowed roots"),
    ("{src}/" + "../" * 30 + "etc/passwd", "{dst}/x", "outside the allowed roots"),
    ("{src}/link-out/passwd", "{dst}/x", "outside the allowed roots"),
    ("{src}/missing", "{dst}/x", "does not exist"),
])
def test_escapes_refused_with_clear_400(local_server, roots, source, dest, text):
    src, dst = roots
    (src / "f").write_text("x")
    os.symlink("/etc", src / "link-out")
    with co.Client(**local_server.client_kwargs()) as client:
        with pytest.raises(co.BadRequest) as info:
            client.copy(source.format(src=src, dst=dst), dest.format(src=src, dst=dst))
        assert text in info.value.message
        assert client.list() == []
    assert not os.path.exists("/tmp/escape-target")


def test_cancel_mid_copy_leaves_no_partial_file(local_server, roots):
    src, dst = roots
    write_big_files(src, 8)
    with co.Client(**local_server.client_kwargs()) as client:
        name = client.copy(str(src), str(dst / "out"), slots=1)
        wait_until_moving(client, name)
        started = time.monotonic()
        client.cancel(name)
        final = client.wait(name, timeout=30)
        assert time.monotonic() - started < 2
        assert (final.state, final.status) == ("completed", "cancelled")
        assert name not in client.list()
    for base, _, files in os.walk(dst):
        for f in files:
            path = os.path.join(base, f)
            assert os.path.getsize(path) == os.path.getsize(src / f), "torn file %s" % path
            assert ".copy-offload-" not in f


def test_dryrun_writes_nothing(local_server, roots):
    src, dst = roots
    make_tree(src)
    with co.Client(**local_server.client_kwargs()) as client:
        final = client.wait(client.copy(str(src), str(dst / "out"), dryrun=True), timeout=30)
    assert final.ok and final.files_total and final.files_total >= 60
    assert not (dst / "out").exists()


def test_restart_keeps_finished_and_fails_interrupted(server_factory, roots, tmp_path):
    src, dst = roots
    (src / "small").write_text("hello")
    state = tmp_path / "state"
    extra = ["--allow-root", str(src), "--allow-root", str(dst), "--state-dir", str(state)]
    first = server_factory("local", extra=extra)
    with co.Client(**first.client_kwargs()) as client:
        done = client.copy(str(src / "small"), str(dst / "small"))
        assert client.wait(done, timeout=30).ok
    first.stop()
    second = server_factory("local", extra=extra)
    with co.Client(**second.client_kwargs()) as client:
        again = client.status(done)
        assert again.ok and again.end_time
        assert client.list() == []
        fresh = client.copy(str(src / "small"), str(dst / "small2"))
        assert fresh != done


def test_kill_during_copy_then_restart_reports_failed(server_factory, roots, tmp_path):
    src, dst = roots
    write_big_files(src, 8)
    extra = ["--allow-root", str(src), "--allow-root", str(dst), "--state-dir", str(tmp_path / "state")]
    first = server_factory("local", extra=extra)
    with co.Client(**first.client_kwargs()) as client:
        name = client.copy(str(src), str(dst / "out"), slots=1)
        wait_until_moving(client, name)
    first.process.kill()
    first.wait()
    second = server_factory("local", extra=extra)
    with co.Client(**second.client_kwargs()) as client:
        status = client.status(name)
        assert (status.state, status.status) == ("completed", "failed")
        assert "restart" in status.message
        assert client.list() == []
    assert not (dst / "out").exists() or all(
        os.path.getsize(os.path.join(base, f)) == os.path.getsize(src / f)
        for base, _, files in os.walk(dst / "out") for f in files)


def test_fifty_simultaneous_requests(local_server, roots):
    src, dst = roots
    for i in range(50):
        (src / ("f%d" % i)).write_bytes(os.urandom(4096 + i))

    async def go():
        async with co.AsyncClient(**local_server.client_kwargs()) as client:
            names = await asyncio.gather(*(client.copy(str(src / ("f%d" % i)), str(dst / ("f%d" % i)))
                                           for i in range(50)))
            finals = await asyncio.gather(*(client.wait(n, timeout=60) for n in names))
            return names, finals

    names, finals = asyncio.run(go())
    assert len(set(names)) == 50
    assert all(f.ok for f in finals)
    for i in range(50):
        assert (dst / ("f%d" % i)).read_bytes() == (src / ("f%d" % i)).read_bytes()


def test_async_wait_reports_progress(local_server, roots):
    src, dst = roots
    write_big_files(src, 2, blocks=40)
    seen = []

    async def go():
        async with co.AsyncClient(**local_server.client_kwargs()) as client:
            return await client.wait(await client.copy(str(src), str(dst / "out")), timeout=60,
                                     on_progress=seen.append)

    final = asyncio.run(go())
    assert final.ok and seen and seen[-1] == final
    assert final.bytes_copied == final.bytes_total == 2 * 40 * len(BLOCK)
