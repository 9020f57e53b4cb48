"""The built-in ``verify`` profile: copy, read every file back, compare it with its source."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import sqlite3
import threading

import copy_offload.client as co
import httpx
import pytest
from copy_offload.client import wire
from copy_offload.client.wire import RequestState
from copy_offload.server.local import copier
from copy_offload.server.local.engine import CopyError, CopyJob
from copy_offload.server.local.store import DB_NAME, Store


def digest(root) -> dict:
    out = {}
    for base, _dirs, files in os.walk(root):
        for name in files:
            with open(os.path.join(base, name), "rb") as handle:
                out[os.path.relpath(os.path.join(base, name), root)] = hashlib.sha256(handle.read()).hexdigest()
    return out


def make_tree(root, files: int = 300) -> int:
    total = 0
    for i in range(files):
        directory = root / ("d%d" % (i % 7))
        directory.mkdir(parents=True, exist_ok=True)
        data = os.urandom(i * 37)
        (directory / ("f%d" % i)).write_bytes(data)
        total += len(data)
    big = os.urandom(1 << 20) * 5
    (root / "big").write_bytes(big)
    return total + len(big)


@pytest.mark.parametrize("processes", [False, True])
def test_a_verified_copy_counts_every_byte(tmp_path, processes):
    total = make_tree(tmp_path / "src")
    job = CopyJob(str(tmp_path / "src"), str(tmp_path / "dst"), verify=True, workers=2, processes=processes)
    final = job.run()
    assert final.bytes_verified == final.bytes_total == total and final.mismatches == 0
    assert "done, verified 6.583 MiB" in job.message() and digest(tmp_path / "dst") == digest(tmp_path / "src")


def test_a_file_changed_during_its_copy_is_a_mismatch_and_not_put_in_place(tmp_path):
    """The source is rewritten after its first chunk was copied: the read-back finds byte 0."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "f").write_bytes(b"a" * (3 << 16))
    (dst / "f").write_bytes(b"the old copy")
    seen = []

    def rewrite_source():  # a writer that touches what was already copied
        if not seen:
            with open(src / "f", "r+b") as handle:
                handle.write(b"CHANGED")
        seen.append(1)

    counter = [0, 0, 0, 0]
    worker = copier.Copier("tok", 0o022, 1 << 16, counter, lambda: False, on_chunk=rewrite_source,
                           verify=True, on_mismatch=seen.append)
    worker.copy_batch((str(src), str(dst), [("f", "f", copier.KIND_FILE, 3 << 16, 0o644, 0, 0, False)], True))
    assert counter[3] == 1
    assert [text for text in seen if isinstance(text, str)] == [str(src / "f") + ": the copy differs from the source at byte 0"]
    assert os.listdir(dst) == ["f"] and (dst / "f").read_bytes() == b"the old copy"  # left as it was


def test_a_growing_source_fails_a_verified_copy(tmp_path):
    """A file appended to while it is copied: the copy has the walk's size, the source more."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "log").write_bytes(os.urandom(1 << 20) * 32)
    stop = threading.Event()

    def append():
        with open(src / "log", "ab") as handle:
            while not stop.wait(0.0005):
                handle.write(b"more\n")
                handle.flush()

    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    try:
        with pytest.raises(CopyError) as info:
            CopyJob(str(src), str(tmp_path / "dst"), verify=True).run()
    finally:
        stop.set()
        writer.join()
    assert "verification failed: 1 file(s) differ from the source after the copy" in info.value.message
    assert str(src / "log") + ": the copy has" in info.value.message and "changed during the copy" in info.value.message
    assert not (tmp_path / "dst").exists()  # the staged tree went with the failure


def test_the_verify_profile_through_a_server(server_factory, tmp_path):
    root = tmp_path / "root"
    total = make_tree(root / "src")
    server = server_factory("local", extra=["--allow-root", str(root), "--state-dir", str(tmp_path / "state")])
    with co.Client(**server.client_kwargs()) as client:
        name = client.copy(str(root / "src"), str(root / "dst"), profile="verify")
        final = client.wait(name, timeout=120)
        assert final.ok, final.message
    assert digest(root / "dst") == digest(root / "src")
    with httpx.Client(base_url=server.url, verify=server.material.context(), trust_env=False) as http:
        http.headers.update({wire.AUTH_HEADER: "%s %s" % (wire.BEARER, server.material.token),
                             wire.VERSION_HEADER: wire.API_VERSION})
        doc = http.get(wire.status_path(name, 0)).json()
    command = doc["commandStatus"]
    assert command["command"].startswith("copy-offload-engine --verify ")
    assert command["verifiedBytes"] == total and command["verifyMismatches"] == 0
    assert "verified" in command["lastMessage"]


def test_the_figures_are_kept_in_the_store_and_an_older_file_gains_the_column(tmp_path):
    old = sqlite3.connect(str(tmp_path / DB_NAME))  # the schema before the extra column
    old.executescript("CREATE TABLE requests (name TEXT PRIMARY KEY, state TEXT NOT NULL, status TEXT NOT NULL,"
                      " message TEXT NOT NULL, command TEXT NOT NULL, progress INTEGER, elapsed REAL NOT NULL,"
                      " last_message TEXT NOT NULL, last_message_time REAL, start_time REAL, end_time REAL,"
                      " bytes_total INTEGER, bytes_done INTEGER, files_total INTEGER, files_done INTEGER,"
                      " rate REAL, temporaries TEXT NOT NULL);"
                      "INSERT INTO requests VALUES ('old', 'Finished', 'Success', '', 'c', 100, 1.0, '', NULL,"
                      " 1.0, 2.0, 1, 1, 1, 1, 1.0, '[]');")
    old.close()
    store = Store(str(tmp_path))
    assert store.load("old").extra == {}
    figures = {"verifiedBytes": 123, "verifyMismatches": 0}
    store.save("new", RequestState(state="Finished", status="Success", command="c",
                                   start_time=dt.datetime.now(dt.timezone.utc), extra=figures))
    store.close()
    assert Store(str(tmp_path)).load("new").extra == figures
