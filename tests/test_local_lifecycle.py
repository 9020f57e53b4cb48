"""The local driver's life cycle with real server processes: one server per state directory,
a damaged request store, and requests interrupted by SIGTERM."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import copy_offload.client as co
import pytest
from copy_offload.client.wire import RequestState
from copy_offload.server.local.copier import TEMP_MARK
from copy_offload.server.local.store import DB_NAME, Store
from support import HOST, server_args

pytest.importorskip("copy_offload.server.local.driver")


@pytest.fixture
def roots(tmp_path):
    src, dst = tmp_path / "src-root", tmp_path / "dst-root"
    src.mkdir()
    dst.mkdir()
    return src, dst


def local_extra(roots, state) -> list:
    src, dst = roots
    return ["--allow-root", str(src), "--allow-root", str(dst), "--state-dir", str(state)]


def run_server_to_exit(material, extra, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """A server that is expected to refuse to start: its exit code and stderr."""
    return subprocess.run([sys.executable, "-m", "copy_offload.server", "-addr", "%s:0" % HOST,
                           *server_args(material, extra=["--driver", "local", *extra])],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def make_tree(root, files: int) -> None:
    for i in range(files):
        directory = root / ("d%03d" % (i // 100))
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ("f%05d" % i)).write_bytes(b"x" * (i % 4000))


def temporaries(directory) -> list:
    return sorted(name for name in os.listdir(directory) if TEMP_MARK in name)


def test_a_second_server_on_the_same_state_dir_is_refused_and_the_first_copies_on(
        server_factory, material, roots, tmp_path):
    src, dst = roots
    make_tree(src / "tree", 5000)
    state = tmp_path / "state"
    first = server_factory("local", extra=local_extra(roots, state))
    pid = first.process.pid
    with co.Client(**first.client_kwargs()) as client:
        name = client.copy(str(src / "tree"), str(dst / "out"))
        deadline = time.monotonic() + 60
        while not temporaries(dst) and time.monotonic() < deadline:  # the staged tree is there
            time.sleep(0.002)
        os.kill(pid, signal.SIGSTOP)  # hold the first server mid-copy, its lock still held
        try:
            staged = temporaries(dst)
            assert staged, "the copy finished before it could be held; make the tree larger"
            second = run_server_to_exit(material, local_extra(roots, state))
            assert temporaries(dst) == staged  # the second server swept nothing
        finally:
            os.kill(pid, signal.SIGCONT)
        assert second.returncode == 1, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        assert "in use by another copy-offload-server" in lines[0] and str(state) in lines[0]
        assert "pid %d, address %s:%d" % (pid, HOST, first.port) in lines[0], lines[0]
        final = client.wait(name, timeout=120)
        assert final.ok, final.message
    assert len(list((dst / "out").rglob("f*"))) == 5000
    first.stop()
    again = server_factory("local", extra=local_extra(roots, state))  # the lock went with the first
    with co.Client(**again.client_kwargs()) as client:
        assert client.status(name).ok


def test_a_store_damaged_mid_file_is_one_line_at_start(server_factory, material, roots, tmp_path):
    state = tmp_path / "state"
    store = Store(str(state))
    for i in range(300):  # enough records for many pages; the damage goes into the middle one
        store.save("node--nnf-copy-offload-%d" % i, RequestState(
            state="Finished", status="Success", command="copy-offload-engine /a /b",
            message="m" * 200, start_time=dt.datetime.now(dt.timezone.utc)))
    store.close()
    path = state / DB_NAME
    size = path.stat().st_size
    assert size >= 16 * 4096
    with open(path, "r+b") as handle:
        handle.seek(size // 2 // 4096 * 4096)
        handle.write(b"\x5a" * 4096)
    result = run_server_to_exit(material, local_extra(roots, state))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "the request store %s is damaged" % path in lines[0]
    assert "mv %s %s.damaged" % (path, path) in lines[0]
    print(lines[0])
    os.rename(path, str(path) + ".damaged")  # what the line says: then the server starts fresh
    for suffix in ("-wal", "-shm"):
        if os.path.exists(str(path) + suffix):
            os.rename(str(path) + suffix, str(path) + ".damaged" + suffix)
    fresh = server_factory("local", extra=local_extra(roots, state))
    with co.Client(**fresh.client_kwargs()) as client:
        assert client.list() == []


def test_requests_interrupted_by_sigterm_say_the_server_stopped(server_factory, roots, tmp_path):
    src, dst = roots
    make_tree(src / "tree", 10000)
    state = tmp_path / "state"
    server = server_factory("local", extra=local_extra(roots, state))
    with co.Client(**server.client_kwargs()) as client:
        name = client.copy(str(src / "tree"), str(dst / "out"))
        assert not client.status(name).done, "the copy finished too soon; make the tree larger"
    server.process.send_signal(signal.SIGTERM)
    assert server.wait(60) == 0, server.log[-3000:]
    assert temporaries(dst) == []  # the stopping server removed what the copy had staged
    again = server_factory("local", extra=local_extra(roots, state))
    with co.Client(**again.client_kwargs()) as client:
        final = client.status(name)
    assert (final.state, final.status) == ("completed", "failed"), final
    assert "server was stopped" in final.message and "did not complete" in final.message, final.message
