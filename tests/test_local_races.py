"""Race attacks on a live local-driver server: components swapped for symlinks while copies run.

A user who can write inside an allowed root can exchange a directory for a symlink that points
out of the roots (``renameat2(RENAME_EXCHANGE)``, atomic) at any moment of a copy. Here a thread
does that in a tight loop, on the source (reading) and on the destination (writing, and the
chmod/utime of directories at the end), on an intermediate component and on the last one of
the directories the copy works in, while a real server copies. Each copy may succeed or fail;
either way nothing from outside may reach the destination and nothing outside may change.
Every case is bounded in time (a few copies or ``CASE_SECONDS``).
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import threading
import time
from typing import Dict, Tuple

import pytest
from copy_offload.client import wire
from hardening_support import auth_headers, http_client, start_server

pytest.importorskip("copy_offload.server.local.driver")

SECRET = b"OUTSIDE-SECRET-7f3a9c\n"
SUBDIRS, FILES = 12, 40  # a tree of many small batches: many openings for the race to hit
COPIES, CASE_SECONDS = 24, 15.0
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: str, b: str) -> None:
    """Swap two names atomically; a directory and a symlink change places."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), a)


def _renameat2_works(tmp: str) -> bool:
    os.mkdir(os.path.join(tmp, "a"))
    os.symlink("/", os.path.join(tmp, "b"))
    try:
        exchange(os.path.join(tmp, "a"), os.path.join(tmp, "b"))
        return os.path.islink(os.path.join(tmp, "a"))
    except (OSError, AttributeError):
        return False


class Flipper:
    """A thread exchanging ``a`` and ``b`` as fast as it can until stopped; leaves them as found."""

    def __init__(self, a: str, b: str) -> None:
        self.a, self.b = a, b
        self.flips = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            exchange(self.a, self.b)
            self.flips += 1

    def __enter__(self) -> Flipper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.flips % 2:
            exchange(self.a, self.b)


def snapshot(top: str) -> Dict[str, Tuple]:
    """Every entry below (and of) ``top``: kind, mode, mtime and content; links not followed."""
    out = {}
    for base, dirs, files in os.walk(top):
        for path in [base] + [os.path.join(base, name) for name in dirs + files]:
            st = os.lstat(path)
            content = b""
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    content = handle.read()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path).encode()
            out[path] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_mtime_ns, content)
    return out


def leaked_secrets(top: str) -> list:
    """Files at or below ``top`` (links not followed) that hold the outside secret."""
    found = []
    walk = [(os.path.dirname(top), [], [os.path.basename(top)])] if os.path.isfile(top) else os.walk(top)
    for base, _dirs, files in walk:
        for name in files:
            path = os.path.join(base, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    if SECRET in handle.read():
                        found.append(path)
    return found


def make_skeleton(top: str, files: int, content: bytes, mode: int = 0o755) -> None:
    """``top/sub<i>/f<j>``: the shape of the copied ``mid`` directory (and of its decoys)."""
    for i in range(SUBDIRS):
        sub = os.path.join(top, "sub%d" % i)
        os.makedirs(sub, exist_ok=True)
        for j in range(files):
            with open(os.path.join(sub, "f%d" % j), "wb") as handle:
                handle.write(content)
        os.chmod(sub, mode)
        os.utime(sub, ns=(10**18, 10**18))
    os.chmod(top, mode)
    os.utime(top, ns=(10**18, 10**18))


def make_decoys(directory: str, outside: str) -> None:
    """Symlinks out of the roots, beside (not inside) the copied tree: ``mid`` -> outside and
    ``sub<i>`` -> outside/sub<i>, to be exchanged with the tree's ``mid`` or ``mid/sub<i>``."""
    os.makedirs(directory)
    os.symlink(outside, os.path.join(directory, "mid"))
    for i in range(SUBDIRS):
        os.symlink(os.path.join(outside, "sub%d" % i), os.path.join(directory, "sub%d" % i))


def flip_pair(mid: str, decoys: str, component: str) -> Tuple[str, str]:
    """What to exchange: ``mid`` itself (intermediate for every file) or ``mid/sub3`` (last)."""
    if component == "last":
        return os.path.join(mid, "sub3"), os.path.join(decoys, "sub3")
    return mid, os.path.join(decoys, "mid")


@pytest.fixture(scope="module")
def world(tmp_path_factory, material):
    top = str(tmp_path_factory.mktemp("local-races"))
    if not _renameat2_works(top):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    root, outside = os.path.join(top, "root"), os.path.join(top, "outside")
    src = os.path.join(root, "src", "tree")
    make_skeleton(os.path.join(src, "mid"), FILES, b"inside data\n", mode=0o750)
    make_decoys(os.path.join(root, "src", "decoys"), outside)
    make_skeleton(outside, FILES, SECRET, mode=0o700)
    for i in range(SUBDIRS):  # the shape of the metadata case's directories, too
        os.mkdir(os.path.join(outside, "sub%d" % i, "deeper"), 0o700)
        os.utime(os.path.join(outside, "sub%d" % i, "deeper"), ns=(10**18, 10**18))
    os.mkdir(os.path.join(root, "dst"))
    server = start_server(material, "local", ["--allow-root", root, "--state-dir", os.path.join(top, "state")],
                          log_level="info")
    with http_client(server) as http:
        http.headers.update(auth_headers(material))
        yield {"root": root, "outside": outside, "src": src, "server": server, "http": http}
    alive = server.process.poll() is None
    server.stop()
    assert alive, server.log[-3000:]
    assert "Traceback" not in server.log, server.log[-3000:]


def run_copy(world, source: str, destination: str) -> dict:
    http = world["http"]
    body = {"computeName": "c", "sourcePath": source, "destinationPath": destination}
    response = http.post(wire.TRIAL, content=json.dumps(body))
    if response.status_code == 400:  # the swap was in place at submit: refused, with a text
        texts = ("outside the allowed roots", "never follow symlinks", "changed while it was being resolved")
        assert any(text in response.text for text in texts), response.text
        assert world["outside"] not in response.text
        return {"status": wire.STATUS_FAILED, "message": response.text.strip()}
    assert response.status_code == 200, response.text
    name = wire.parse_trial_body(response.text)
    deadline = time.monotonic() + 120
    while True:
        doc = json.loads(http.get(wire.status_path(name, 10), timeout=60).text)
        if doc["state"] == wire.STATE_COMPLETED or time.monotonic() > deadline:
            break
    assert doc["state"] == wire.STATE_COMPLETED, doc
    assert doc["status"] in (wire.STATUS_SUCCESS, wire.STATUS_FAILED), doc
    assert world["outside"] not in doc.get("message", ""), doc  # never where a symlink points
    return doc


def attack(world, make_case) -> Tuple[int, int]:
    """Run copies under ``make_case(n) -> (source, destination, a, b)``; (copies, failed)."""
    outside_before = snapshot(world["outside"])
    copies = failed = 0
    messages = []
    deadline = time.monotonic() + CASE_SECONDS
    while copies < COPIES and (copies == 0 or time.monotonic() < deadline):
        source, destination, a, b = make_case(copies)
        with Flipper(a, b) as flipper:
            doc = run_copy(world, source, destination)
        assert flipper.flips > 0
        copies += 1
        failed += doc["status"] == wire.STATUS_FAILED
        messages.append(doc.get("message", ""))
        assert leaked_secrets(destination) == [], doc
        assert snapshot(world["outside"]) == outside_before, doc
    print("%d copies, %d failed: %s" % (copies, failed, messages))
    return copies, failed


@pytest.mark.parametrize("component", ["intermediate", "last", "file"])
def test_source_swapped_mid_copy_reads_nothing_outside(world, component):
    src = world["src"]
    decoys = os.path.join(world["root"], "src", "decoys")
    # intermediate: tree/mid flips with a symlink to outside (every sub<i> moves); last:
    # tree/mid/sub3 with one to outside/sub3 (a batch's own directory); file: one file,
    # tree/mid/sub3/f0, copied while tree/mid flips.
    source = os.path.join(src, "mid", "sub3", "f0") if component == "file" else src
    a, b = flip_pair(os.path.join(src, "mid"), decoys, component)

    def case(n):
        return source, os.path.join(world["root"], "dst", "read-%s-%d" % (component, n)), a, b

    attack(world, case)


def prepared_destination(world, name: str, top: str, deeper: bool = False) -> Tuple[str, str, str]:
    """An existing destination holding ``top/mid/sub<i>`` (a merge) and its decoys beside it:
    (destination, its mid, decoys)."""
    dest = os.path.join(world["root"], "dst", name)
    mid = os.path.join(dest, top, "mid")
    for i in range(SUBDIRS):
        os.makedirs(os.path.join(mid, "sub%d" % i, "deeper" if deeper else ""))
    decoys = dest + "-decoys"
    make_decoys(decoys, world["outside"])
    return dest, mid, decoys


@pytest.mark.parametrize("component", ["intermediate", "last"])
def test_destination_swapped_mid_copy_writes_nothing_outside(world, component):
    def case(n):
        dest, mid, decoys = prepared_destination(world, "write-%s-%d" % (component, n), "tree")
        return (world["src"], dest, *flip_pair(mid, decoys, component))

    attack(world, case)


@pytest.mark.parametrize("component", ["intermediate", "last"])
def test_directory_metadata_is_never_set_outside(world, component):
    """The copy's last step sets directory modes and times; a swap then must not reach outside.

    The source's directories are 0750 with old times, the outside's 0700; the destination's
    directories exist (0755), so the copy sets their mode and times at the end.
    """
    source = os.path.join(world["root"], "src", "meta")
    if not os.path.exists(source):  # directories only: the copy is mostly its final metadata step
        for i in range(SUBDIRS):
            os.makedirs(os.path.join(source, "mid", "sub%d" % i, "deeper"))
            os.chmod(os.path.join(source, "mid", "sub%d" % i), 0o750)
        os.chmod(os.path.join(source, "mid"), 0o750)

    def case(n):
        dest, mid, decoys = prepared_destination(world, "meta-%s-%d" % (component, n), "meta", deeper=True)
        return (source, dest, *flip_pair(mid, decoys, component))

    attack(world, case)
