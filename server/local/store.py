"""Durable request records of the local driver: one SQLite file under ``--state-dir``.

The reference keeps its records in Kubernetes; the local driver keeps them here, so a restarted
server still answers ``status`` for finished requests, reports the ones it was running as failed
(it cannot resume them), sweeps the temporaries they left, and never hands out a request name
twice. WAL mode keeps readers and the writer out of each other's way; the file is mode 0600
because paths and messages are the user's business. The driver calls these methods from one
executor thread, never from the event loop; the lock makes them safe from any thread anyway.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import threading
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

from copy_offload.client.wire import RequestState

__all__ = ["Store", "StoreDamaged", "DB_NAME", "RESTART_MESSAGE"]

DB_NAME = "local-requests.sqlite3"
RESTART_MESSAGE = "the copy-offload server restarted while this request was running; it did not complete"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT NOT NULL,
    command TEXT NOT NULL,
    progress INTEGER,
    elapsed REAL NOT NULL,
    last_message TEXT NOT NULL,
    last_message_time REAL,
    start_time REAL,
    end_time REAL,
    bytes_total INTEGER,
    bytes_done INTEGER,
    files_total INTEGER,
    files_done INTEGER,
    rate REAL,
    temporaries TEXT NOT NULL,
    extra TEXT NOT NULL DEFAULT '{}'
);
"""

_COLUMNS = (
    "state", "status", "message", "command", "progress", "elapsed", "last_message",
    "last_message_time", "start_time", "end_time", "bytes_total", "bytes_done", "files_total",
    "files_done", "rate", "temporaries", "extra",
)


class StoreDamaged(ValueError):
    """The SQLite file is corrupt; the text says how to start fresh keeping it aside."""


def _epoch(when: Optional[dt.datetime]) -> Optional[float]:
    return None if when is None else when.timestamp()


def _when(epoch: Optional[float]) -> Optional[dt.datetime]:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


T = TypeVar("T")
_INSERT = "INSERT OR REPLACE INTO requests (name, %s) VALUES (?%s)" % (", ".join(_COLUMNS), ", ?" * len(_COLUMNS))


def _row(name: str, rec: RequestState, temporaries: Sequence[str]) -> tuple:
    return (
        name, rec.state, rec.status, rec.message, rec.command, rec.progress, rec.elapsed,
        rec.last_message, _epoch(rec.last_message_time), _epoch(rec.start_time),
        _epoch(rec.end_time), rec.bytes_total, rec.bytes_done, rec.files_total, rec.files_done,
        rec.rate, json.dumps(list(temporaries)), json.dumps(rec.extra),
    )


class Store:
    """The request table and the name counter."""

    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(state_dir, DB_NAME)
        # Create the file 0600 before SQLite opens it; SQLite gives -wal/-shm the same mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        os.chmod(self.path, 0o600)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
            columns = [row[1] for row in self._db.execute("PRAGMA table_info(requests)")]
            if "extra" not in columns:  # a file from before the driver's own figures were kept
                self._db.execute("ALTER TABLE requests ADD COLUMN extra TEXT NOT NULL DEFAULT '{}'")
            # A file damaged mid-way opens fine and fails on the first read of the bad page:
            # look at every page now, so that it is one line at start, not a failure later.
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check(3)")]
        except sqlite3.OperationalError:
            self._db.close()
            raise  # locked, read-only, out of space: not damage
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise self._damaged(str(exc)) from None
        if problems != ["ok"]:
            self._db.close()
            raise self._damaged("; ".join(problems))

    def _damaged(self, what: str) -> StoreDamaged:
        aside = self.path + ".damaged"
        return StoreDamaged(
            "the request store %s is damaged (%s); to start fresh, move it aside (mv %s %s, and its"
            " -wal and -shm files if any) and start the server again: the request counter restarts,"
            " so request names may repeat those in the damaged file"
            % (self.path, what.replace("\n", " ")[:200], self.path, aside))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def next_sequence(self) -> int:
        """The next request number; committed with a full sync, so it never comes back."""
        return self._take_number(lambda _db, number: number)

    def create(self, name_for: Callable[[int], str], rec: RequestState, temporaries: Sequence[str]) -> str:
        """A new request's record under the name ``name_for(next number)``, both in one
        transaction with one full sync (a request costs one disk flush before it is answered)."""

        def insert(db: sqlite3.Connection, number: int) -> str:
            name = name_for(number)
            db.execute(_INSERT, _row(name, rec, temporaries))
            return name

        return self._take_number(insert)

    def _take_number(self, then: Callable[[sqlite3.Connection, int], T]) -> T:
        """Take the next request number and ``then(db, number)`` in one transaction."""
        with self._lock:
            db = self._db
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'sequence'").fetchone()
                number = row[0] if row else 0
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('sequence', ?)", (number + 1,))
                result = then(db, number)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return result

    def save(self, name: str, rec: RequestState, temporaries: Sequence[str] = (), durable: bool = True) -> None:
        """Insert or replace ``name``'s record; ``durable=False`` for progress updates."""
        with self._lock:
            self._db.execute("PRAGMA synchronous=%s" % ("FULL" if durable else "NORMAL"))
            self._db.execute(_INSERT, _row(name, rec, temporaries))

    def load(self, name: str) -> Optional[RequestState]:
        with self._lock:
            row = self._db.execute(
                "SELECT %s FROM requests WHERE name = ?" % ", ".join(_COLUMNS), (name,)
            ).fetchone()
        if row is None:
            return None
        (state, status, message, command, progress, elapsed, last_message, last_message_time,
         start_time, end_time, bytes_total, bytes_done, files_total, files_done, rate, _temps, extra) = row
        return RequestState(
            state=state, status=status, message=message, command=command, progress=progress,
            elapsed=elapsed, last_message=last_message, last_message_time=_when(last_message_time),
            start_time=_when(start_time), end_time=_when(end_time), bytes_total=bytes_total,
            bytes_done=bytes_done, files_total=files_total, files_done=files_done, rate=rate,
            extra=json.loads(extra or "{}"),
        )

    def recover(self, message: str = RESTART_MESSAGE) -> List[Tuple[str, List[str]]]:
        """Mark every request left running as failed; return (name, temporaries) to sweep."""
        now = dt.datetime.now(dt.timezone.utc).timestamp()
        with self._lock:
            db = self._db
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(
                    "SELECT name, temporaries FROM requests WHERE state != 'Finished'"
                ).fetchall()
                db.execute(
                    "UPDATE requests SET state = 'Finished', status = 'Failed', message = ?,"
                    " end_time = ?, temporaries = '[]' WHERE state != 'Finished'",
                    (message, now),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return [(name, json.loads(temps or "[]")) for name, temps in rows]
