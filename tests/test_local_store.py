"""The local driver's SQLite records: durable across a close and reopen, mode 0600."""

from __future__ import annotations

import datetime as dt
import os
import stat

import pytest
from copy_offload.client.wire import RequestState, status_document
from copy_offload.server.local.store import DB_NAME, RESTART_MESSAGE, Store

T0 = dt.datetime(2025, 4, 1, 16, 46, 36, 535519, tzinfo=dt.timezone.utc)


def finished() -> RequestState:
    return RequestState(
        state="Finished", status="Success", message="ok", command="copy-offload-engine /a /b",
        progress=100, elapsed=1.25, last_message="Copied 1 B of 1 B (100%) in 1.000 secs (1 B/s) done\n",
        last_message_time=T0, start_time=T0, end_time=T0 + dt.timedelta(seconds=1.25), bytes_total=1,
        bytes_done=1, files_total=1, files_done=1, rate=1.0,
    )


def test_records_and_counter_survive_reopen(tmp_path):
    store = Store(str(tmp_path / "state"))
    assert [store.next_sequence() for _ in range(3)] == [0, 1, 2]
    store.save("n--nnf-copy-offload-0", finished())
    store.save("n--nnf-copy-offload-1", RequestState(state="Running", command="c", start_time=T0),
               ["/x/.a.copy-offload-1234.tmp"], durable=False)
    store.close()
    again = Store(str(tmp_path / "state"))
    assert again.next_sequence() == 3
    loaded = again.load("n--nnf-copy-offload-0")
    assert loaded == finished()
    assert status_document(loaded) == status_document(finished())
    assert again.load("unknown") is None
    again.close()


def test_create_names_and_records_a_request_in_one_transaction(tmp_path):
    store = Store(str(tmp_path / "state"))
    running = RequestState(state="Running", command="c", start_time=T0)
    names = [store.create("n--nnf-copy-offload-{}".format, running, ["/t/.x.copy-offload-%d.tmp" % i])
             for i in range(2)]
    assert names == ["n--nnf-copy-offload-0", "n--nnf-copy-offload-1"]

    def refuse(number):
        raise ValueError("no name for %d" % number)

    with pytest.raises(ValueError):
        store.create(refuse, running, [])
    store.close()
    again = Store(str(tmp_path / "state"))
    assert again.next_sequence() == 2  # the failed create took no number
    assert [name for name, _temps in again.recover()] == names
    again.close()


def test_recover_fails_running_requests_once_and_returns_their_temporaries(tmp_path):
    store = Store(str(tmp_path))
    store.save("done", finished())
    store.save("running", RequestState(state="Running", command="c", start_time=T0), ["/t/.x.copy-offload-1.tmp"])
    store.close()
    store = Store(str(tmp_path))
    assert store.recover() == [("running", ["/t/.x.copy-offload-1.tmp"])]
    rec = store.load("running")
    assert (rec.state, rec.status, rec.message) == ("Finished", "Failed", RESTART_MESSAGE)
    assert rec.end_time is not None and rec.end_time > T0
    doc = status_document(rec)
    assert (doc["state"], doc["status"]) == ("completed", "failed") and "restarted" in doc["message"]
    assert store.load("done") == finished()
    assert store.recover() == []
    store.close()


def test_files_are_private(tmp_path):
    store = Store(str(tmp_path / "state"))
    store.save("a", finished())
    names = [n for n in os.listdir(tmp_path / "state") if n.startswith(DB_NAME)]
    assert DB_NAME in names
    for name in names:  # the database and its -wal/-shm companions
        assert stat.S_IMODE(os.stat(tmp_path / "state" / name).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(tmp_path / "state").st_mode) == 0o700
    store.close()
