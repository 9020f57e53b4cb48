"""What makes the engine fast on small files, and what must stay true while it is: worker processes
kept across jobs, a walk that stats only a sample of each directory's files, one copier per
directory unless its files are large, and a source swapped for a fifo failing instead of hanging."""

from __future__ import annotations

import os
import threading
import time

import pytest
from copy_offload.server.local import copier, workers
from copy_offload.server.local.engine import CopyCancelled, CopyJob
from test_local_trees import leftovers, write


def copier_children() -> dict:
    """pid -> state of this process's copier.py children."""
    found = {}
    for tid in os.listdir("/proc/self/task"):
        with open("/proc/self/task/%s/children" % tid) as handle:
            pids = [int(pid) for pid in handle.read().split()]
        for pid in pids:
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as handle:
                    if copier.__file__.encode() not in handle.read():
                        continue
                with open("/proc/%d/stat" % pid) as handle:
                    found[pid] = handle.read().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                continue
    return found


def small_tree(root, dirs=60, files=30):
    for d in range(dirs):
        for f in range(files):
            write(os.path.join(str(root), "d%02d" % d, "f%02d" % f), b"x" * (f * 10))


def test_worker_processes_are_kept_and_reused_by_the_next_job(tmp_path):
    small_tree(tmp_path / "src")
    CopyJob(str(tmp_path / "src"), str(tmp_path / "one"), workers=2).run()
    after_first = copier_children()
    assert after_first and set(after_first.values()) <= {"S", "R"}  # idle, waiting for a job
    CopyJob(str(tmp_path / "src"), str(tmp_path / "two"), workers=2).run()
    assert copier_children().keys() == after_first.keys()  # the same processes did the work
    for name in ("one", "two"):
        for d in range(60):
            assert len(os.listdir(tmp_path / name / ("d%02d" % d))) == 30


def test_workers_killed_by_a_cancel_are_reaped_not_kept(tmp_path):
    blob = os.urandom(256 << 10)
    for i in range(400):
        write(str(tmp_path / "src" / ("d%02d" % (i % 20)) / ("f%03d" % i)), blob)
    job = CopyJob(str(tmp_path / "src"), str(tmp_path / "out"), workers=3)

    def cancel_when_started():
        deadline = time.monotonic() + 30
        while job.progress().files_done < 20 and time.monotonic() < deadline:
            time.sleep(0.002)
        job.cancel()

    thread = threading.Thread(target=cancel_when_started)
    thread.start()
    with pytest.raises(CopyCancelled):
        job.run()
    thread.join()
    assert "Z" not in copier_children().values()  # no zombie: killed ones were waited for
    assert leftovers(str(tmp_path)) == []
    CopyJob(str(tmp_path / "src"), str(tmp_path / "again"), workers=3).run()  # the pool still works
    assert len(os.listdir(tmp_path / "again" / "d00")) == 20


class RecordingJob(CopyJob):
    """A job that keeps a copy of every batch it hands to its copiers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = []

    def _submit(self, batch):
        self.batches.append((batch[0], list(batch[2])))
        super()._submit(batch)


def test_walk_samples_a_small_file_directory_and_gives_it_to_one_copier_as_names(tmp_path):
    for i in range(50):
        write(str(tmp_path / "src" / "small" / ("f%02d" % i)), b"y" * i)
    job = RecordingJob(str(tmp_path / "src"), str(tmp_path / "out"), workers=2)
    progress = job.run()
    (directory, entries), = job.batches
    assert directory.endswith("small") and len(entries) == 50
    assert all(isinstance(entry, str) for entry in entries)  # bare names: the copiers stat them
    assert progress.bytes_total == progress.bytes_done == sum(range(50))  # learned by the copiers
    assert (tmp_path / "out" / "small" / "f49").read_bytes() == b"y" * 49


def test_a_directory_of_large_files_is_statted_and_cut_by_bytes(tmp_path):
    big = tmp_path / "src" / "big"
    big.mkdir(parents=True)
    for i in range(3):
        with open(big / ("f%d" % i), "wb") as handle:
            handle.truncate(40 << 20)  # sparse: cheap to make, 40 MiB by size
    job = RecordingJob(str(tmp_path / "src"), str(tmp_path / "out"), workers=2)
    job.run()
    assert [len(entries) for _dir, entries in job.batches] == [2, 1]  # 64 MiB a batch at most
    assert all(entry[3] == 40 << 20 for _dir, entries in job.batches for entry in entries)
    assert os.path.getsize(tmp_path / "out" / "big" / "f2") == 40 << 20


def test_a_source_swapped_for_a_fifo_after_the_walk_fails_instead_of_blocking(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    os.mkfifo(tmp_path / "src" / "f")  # the walk saw a regular file here; then it became a fifo
    worker = copier.Copier("tok", 0o022, 1 << 20, [0, 0, 0, 0, 0], lambda: False)
    batch = (str(tmp_path / "src"), str(tmp_path / "dst"),
             [("f", "f", copier.KIND_FILE, copier.SIZE_UNKNOWN, 0, 0, 0, False)], True)
    outcome = []

    def run():
        try:
            worker.copy_batch(batch)
        except copier.Failure as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the copier blocked opening a fifo"
    (failure,) = outcome
    assert "no longer a regular file" in failure.text and failure.path == str(tmp_path / "src" / "f")
    assert os.listdir(tmp_path / "dst") == []


def test_frames_grow_with_the_queue_and_shrink_as_it_drains():
    """Big frames while much waits (fewer hand-offs), FRAME_FILES near the end (an even finish)."""
    assert workers.frame_limit(0, 2) == workers.frame_limit(5, 2) == workers.FRAME_FILES
    assert workers.frame_limit(256, 2) == workers.FRAME_FILES_MAX
    middle = workers.frame_limit(40, 2)
    assert workers.FRAME_FILES < middle < workers.FRAME_FILES_MAX
    assert workers.frame_limit(40, 4) < middle  # the same queue shared by more copiers
