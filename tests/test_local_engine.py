"""The local driver's copy engine on real files: semantics, metadata, cancel, failures."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from copy_offload.server.local import copier
from copy_offload.server.local.engine import CopyCancelled, CopyError, CopyJob
from copy_offload.server.local.progress import PROGRESS_RE
from test_local_trees import leftovers, make_tree, snapshot, write


def copy(src, dst, **kwargs):
    return CopyJob(str(src), str(dst), **kwargs).run()


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_tree_copies_byte_for_byte_with_modes_times_and_symlinks(tmp_path, workers):
    src = tmp_path / "src"
    make_tree(str(src))
    progress = copy(src, tmp_path / "dst", workers=workers, preserve=True)
    assert snapshot(str(tmp_path / "dst")) == snapshot(str(src))
    assert os.readlink(tmp_path / "dst" / "a" / "abs-link") == "/etc/hostname"  # copied, not followed
    assert progress.files_done == progress.files_total == 310
    assert progress.bytes_done == progress.bytes_total == sum(
        os.lstat(os.path.join(d, f)).st_size
        for d, _, fs in os.walk(src) for f in fs if not os.path.islink(os.path.join(d, f)))
    assert progress.percent == 100
    assert leftovers(str(tmp_path)) == []


@pytest.mark.parametrize("options", [{"processes": False}, {"process_budget": threading.Semaphore(0)}])
def test_threads_only_when_processes_are_off_or_the_budget_is_spent(tmp_path, options):
    src = tmp_path / "src"
    make_tree(str(src))
    job = CopyJob(str(src), str(tmp_path / "dst"), workers=3, preserve=True, **options)
    job.run()
    assert snapshot(str(tmp_path / "dst")) == snapshot(str(src))
    assert job._crew is not None and all(m.__class__.__name__ == "_ThreadMember" for m in job._crew.members)


def test_existing_directory_destination_receives_the_source(tmp_path):
    src = tmp_path / "src"
    make_tree(str(src))
    (tmp_path / "dest").mkdir()
    write(str(tmp_path / "dest" / "other"), b"keep me")
    job = CopyJob(str(src), str(tmp_path / "dest"), preserve=True)
    job.run()
    assert job.target == str(tmp_path / "dest" / "src")
    assert snapshot(str(tmp_path / "dest" / "src")) == snapshot(str(src))
    assert (tmp_path / "dest" / "other").read_bytes() == b"keep me"


def test_second_copy_merges_replacing_files_and_keeping_extra_ones(tmp_path):
    src = tmp_path / "src"
    make_tree(str(src))
    (tmp_path / "dst").mkdir()
    copy(src, tmp_path / "dst", preserve=True)  # dst/src is new: built staged, renamed into place
    write(str(src / "top.txt"), b"changed\n", 0o600)
    write(str(src / "many" / "f001"), b"new content")
    (tmp_path / "dst" / "src" / "a" / "b" / "c" / "deep.bin").unlink()
    write(str(tmp_path / "dst" / "src" / "a" / "b" / "extra"), b"mine")
    copy(src, tmp_path / "dst", preserve=True)  # dst/src exists: a merge, every file replaced atomically
    got = snapshot(str(tmp_path / "dst" / "src"))
    assert got.pop(os.path.join("a", "b", "extra"))[3] == b"mine"
    assert got == snapshot(str(src))  # directory modes and times are applied to merged ones too
    assert leftovers(str(tmp_path)) == []


def test_single_file_to_new_path_existing_dir_and_over_a_file(tmp_path):
    write(str(tmp_path / "f.bin"), os.urandom(100_000), 0o604, 1_234_567_890_000_000_000)
    copy(tmp_path / "f.bin", tmp_path / "new" / "deeper" / "g.bin", preserve=True)  # parents made, as mkdir -p
    assert (tmp_path / "new" / "deeper" / "g.bin").read_bytes() == (tmp_path / "f.bin").read_bytes()
    st = os.stat(tmp_path / "new" / "deeper" / "g.bin")
    assert (st.st_mode & 0o7777, st.st_mtime_ns) == (0o604, 1_234_567_890_000_000_000)
    (tmp_path / "dir").mkdir()
    copy(tmp_path / "f.bin", tmp_path / "dir")
    assert (tmp_path / "dir" / "f.bin").read_bytes() == (tmp_path / "f.bin").read_bytes()
    write(str(tmp_path / "over"), b"old")
    copy(tmp_path / "f.bin", tmp_path / "over")
    assert (tmp_path / "over").read_bytes() == (tmp_path / "f.bin").read_bytes()
    assert leftovers(str(tmp_path)) == []


@pytest.mark.parametrize("workers", [1, 2])
def test_without_preserve_modes_are_kept_and_times_are_the_copys(tmp_path, workers):
    """dcp's default (and cp -r's): the mode of every file and directory, not its times."""
    src = tmp_path / "src"
    make_tree(str(src))
    before = time.time_ns()
    copy(src, tmp_path / "dst", workers=workers)
    got, want = snapshot(str(tmp_path / "dst")), snapshot(str(src))
    assert got.keys() == want.keys()
    for rel, (kind, mode_or_text, mtime, *content) in got.items():
        assert (kind, mode_or_text, *content) == (want[rel][0], want[rel][1], *want[rel][3:]), rel
        assert mtime >= before - 10**9, rel  # the time of the copy (file system clocks are coarse)
    assert sum(entry[2] < before - 10**9 for entry in want.values()) > 300  # the sources': years ago


def test_empty_file_and_empty_directory(tmp_path):
    write(str(tmp_path / "empty"), b"")
    progress = copy(tmp_path / "empty", tmp_path / "empty2")
    assert (tmp_path / "empty2").read_bytes() == b""
    assert (progress.files_done, progress.bytes_done, progress.percent) == (1, 0, 100)
    (tmp_path / "nothing").mkdir()
    copy(tmp_path / "nothing", tmp_path / "nothing2")
    assert os.listdir(tmp_path / "nothing2") == []


def test_large_file_and_sparse_file(tmp_path):
    data = os.urandom(1 << 20) * 24 + b"tail"
    write(str(tmp_path / "big"), data)
    copy(tmp_path / "big", tmp_path / "big2", chunk_size=1 << 20)
    assert (tmp_path / "big2").read_bytes() == data
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as out:
        out.truncate(64 << 20)
        out.seek(5 << 20)
        out.write(b"middle")
        out.seek((64 << 20) - 3)
        out.write(b"end")
    copy(sparse, tmp_path / "sparse2")
    assert (tmp_path / "sparse2").read_bytes() == sparse.read_bytes()
    assert os.stat(tmp_path / "sparse2").st_blocks * 512 < (1 << 20)  # the holes stayed holes
    all_hole = tmp_path / "hole"
    with open(all_hole, "wb") as out:
        out.truncate(8 << 20)
    copy(all_hole, tmp_path / "hole2")
    assert os.stat(tmp_path / "hole2").st_size == 8 << 20


def test_direct_io_for_large_files(tmp_path):
    data = os.urandom(1 << 20) * 70 + b"unaligned tail"
    write(str(tmp_path / "src" / "big"), data)
    write(str(tmp_path / "src" / "small"), b"small")
    progress = copy(tmp_path / "src", tmp_path / "dst", direct=True, chunk_size=4 << 20)
    assert (tmp_path / "dst" / "big").read_bytes() == data
    assert (tmp_path / "dst" / "small").read_bytes() == b"small"
    assert progress.bytes_done == len(data) + 5
    with tiny_tmpfs(str(tmp_path / "mem"), size="100m") as mem:  # O_DIRECT or its fallback
        copy(tmp_path / "src" / "big", os.path.join(mem, "big"), direct=True)
        with open(os.path.join(mem, "big"), "rb") as handle:
            assert handle.read() == data


def test_dryrun_counts_and_writes_nothing(tmp_path):
    src = tmp_path / "src"
    make_tree(str(src))
    before = snapshot(str(tmp_path))
    job = CopyJob(str(src), str(tmp_path / "out" / "deep"), dryrun=True)
    progress = job.run()
    assert snapshot(str(tmp_path)) == before
    assert not (tmp_path / "out").exists()
    assert (progress.files_total, progress.files_done, progress.percent) == (310, 0, 100)
    assert job.message().startswith("Dry run: would copy 310 files")


def test_progress_is_monotonic_and_messages_match_the_reference_regex(tmp_path):
    src = tmp_path / "src"
    for i in range(40):
        write(str(src / ("d%d" % (i % 4)) / ("f%d" % i)), os.urandom(1 << 20))
    job = CopyJob(str(src), str(tmp_path / "dst"), workers=2, chunk_size=1 << 16)
    seen = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.append((job.progress(), job.message()))
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        final = job.run()
    finally:
        done.set()
        watcher.join()
    seen.append((final, job.message()))
    for (a, _), (b, _) in zip(seen, seen[1:]):
        assert b.bytes_done >= a.bytes_done and b.files_done >= a.files_done
        assert b.bytes_total >= a.bytes_total
        if a.percent is not None:
            assert b.percent is not None and b.percent >= a.percent
    copied = [m for p, m in seen if not p.walking]
    assert copied and all(PROGRESS_RE.search(m) for m in copied)
    assert PROGRESS_RE.search(job.message()).group(1) == "100" and job.message().endswith(" done\n")


def test_special_files_are_skipped_and_counted(tmp_path):
    src = tmp_path / "src"
    write(str(src / "file"), b"x")
    os.mkfifo(src / "fifo")
    job = CopyJob(str(src), str(tmp_path / "dst"))
    job.run()
    assert os.listdir(tmp_path / "dst") == ["file"]
    assert "skipped 1 special files" in job.message()


def test_long_names_get_a_hashed_temporary(tmp_path):
    name = "n" * 255
    write(str(tmp_path / "src" / name), b"long")
    (tmp_path / "dst" / "src").mkdir(parents=True)  # a merge: files go through temporaries
    copy(tmp_path / "src", tmp_path / "dst")
    assert (tmp_path / "dst" / "src" / name).read_bytes() == b"long"
    assert len(copier.temp_name(name, "abcd")) <= 255


@pytest.mark.parametrize(
    "setup, src, dst, text",
    [
        (lambda p: os.makedirs(p / "s" / "in"), "s", "s/in", "into itself"),
        (lambda p: (os.makedirs(p / "s"), write(str(p / "f"), b"x")), "s", "f", "cannot overwrite non-directory"),
        (lambda p: (write(str(p / "f"), b"x"), os.makedirs(p / "d" / "f")), "f", "d", "cannot overwrite directory"),
        (lambda p: write(str(p / "f"), b"x"), "f", "f", "are the same file"),
        (lambda p: (write(str(p / "f"), b"x"), write(str(p / "g"), b"y")), "f", "g/sub/h", "is not a directory"),
    ],
)
def test_impossible_copies_are_refused_before_writing(tmp_path, setup, src, dst, text):
    setup(tmp_path)
    before = snapshot(str(tmp_path))
    job = CopyJob(str(tmp_path / src), str(tmp_path / dst))
    with pytest.raises(CopyError) as info:
        job.prepare()
    assert text in info.value.message and info.value.client_error
    with pytest.raises(CopyError):
        job.run()
    assert snapshot(str(tmp_path)) == before


# --------------------------------------------------------------------------- cancel


def _cancel_when(job, predicate, timeout=20.0):
    """Cancel ``job`` from another thread once ``predicate(progress)`` holds; return the time taken."""
    stamps = {}

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(job.progress()):
                stamps["cancel"] = time.monotonic()
                job.cancel()
                return
            time.sleep(0.0005)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread, stamps


def test_cancel_mid_file_leaves_no_partial_file(tmp_path):
    write(str(tmp_path / "big"), os.urandom(1 << 20) * 64)
    (tmp_path / "out").mkdir()
    job = CopyJob(str(tmp_path / "big"), str(tmp_path / "out"), chunk_size=1 << 16)
    thread, stamps = _cancel_when(job, lambda p: p.bytes_done > 0)
    with pytest.raises(CopyCancelled):
        job.run()
    stopped = time.monotonic()
    thread.join()
    assert 0 < job.progress().bytes_done < 64 << 20
    assert stopped - stamps["cancel"] < 1.0
    assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("merge", [False, True])
def test_cancel_mid_tree_with_worker_processes_leaves_no_torn_file(tmp_path, merge):
    src = tmp_path / "src"
    blob = os.urandom(256 << 10)
    for i in range(400):
        write(str(src / ("d%02d" % (i % 20)) / ("f%03d" % i)), blob)
    out = tmp_path / "out"
    if merge:
        (out / "src" / "d00").mkdir(parents=True)
        write(str(out / "src" / "d00" / "f000"), b"old")
    else:
        out.mkdir()
    job = CopyJob(str(src), str(out), workers=3)
    thread, stamps = _cancel_when(job, lambda p: p.files_done >= 40)
    with pytest.raises(CopyCancelled):
        job.run()
    stopped = time.monotonic()
    thread.join()
    assert stopped - stamps["cancel"] < 1.0
    assert job.progress().files_done < 400
    assert leftovers(str(tmp_path)) == []
    if not merge:
        assert os.listdir(out) == []  # the staged tree is gone as a whole
    for dirpath, _dirs, files in os.walk(out):  # whatever was renamed into place is whole
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as handle:
                data = handle.read()
            assert data in (blob, b"old")


def test_cancel_before_run(tmp_path):
    write(str(tmp_path / "f"), b"x")
    job = CopyJob(str(tmp_path / "f"), str(tmp_path / "g"))
    job.cancel()
    with pytest.raises(CopyCancelled):
        job.run()
    assert not (tmp_path / "g").exists()


# --------------------------------------------------------------------------- failures


@contextlib.contextmanager
def tiny_tmpfs(path, size="256k"):
    os.makedirs(path)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", path],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip("cannot mount a small tmpfs to fill (needs root): %s" % result.stderr.strip())
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)


def test_enospc_fails_with_a_clear_message_and_cleans_up(tmp_path):
    src = tmp_path / "src"
    for i in range(6):
        write(str(src / "sub" / ("f%d" % i)), os.urandom(100_000))
    with tiny_tmpfs(str(tmp_path / "small")) as small:
        os.makedirs(os.path.join(small, "src", "sub"))  # merge: files get per-file temporaries
        write(os.path.join(small, "src", "keep"), b"k")
        with pytest.raises(CopyError) as info:
            copy(src, small, workers=1)
        assert "No space left on device (ENOSPC)" in info.value.message
        assert small in info.value.message and not info.value.client_error
        assert leftovers(small) == []
        with pytest.raises(CopyError) as info:
            copy(src, os.path.join(small, "fresh"), workers=2)  # a staged tree this time
        assert "ENOSPC" in info.value.message
        assert leftovers(small) == [] and not os.path.exists(os.path.join(small, "fresh"))


def _run_without_dac_override(code: str) -> subprocess.CompletedProcess:
    """Root ignores directory modes; run the copy as root without the capabilities that allow it."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is missing: a read-only directory cannot stop root")
    caps = "-dac_override,-dac_read_search,-fowner"
    return subprocess.run([setpriv, "--bounding-set=" + caps, "--inh-caps=" + caps, "--",
                           sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_eacces_in_a_read_only_directory_fails_and_cleans_up(tmp_path):
    src = str(tmp_path / "src")
    for i in range(200):
        write(os.path.join(src, "ok", "f%03d" % i), b"x" * 100)
    write(os.path.join(src, "ro", "blocked"), b"y")
    dst = str(tmp_path / "dst")
    os.makedirs(os.path.join(dst, "src", "ro"))
    os.chmod(os.path.join(dst, "src", "ro"), 0o555)
    try:
        if os.geteuid() == 0:
            code = (
                "from copy_offload.server.local.engine import CopyJob, CopyError\n"
                "try:\n    CopyJob(%r, %r, workers=2).run()\n"
                "except CopyError as exc:\n    print(exc.message)\n" % (src, dst)
            )
            result = _run_without_dac_override(code)
            message, detail = result.stdout, result.stderr
        else:
            with pytest.raises(CopyError) as info:
                CopyJob(src, dst, workers=2).run()
            message, detail = info.value.message, ""
        assert "Permission denied (EACCES)" in message, (message, detail)
        assert os.path.join(dst, "src", "ro", "blocked") in message
        assert leftovers(dst) == []
        assert not os.path.exists(os.path.join(dst, "src", "ok"))  # its staged tree was removed
    finally:
        os.chmod(os.path.join(dst, "src", "ro"), 0o755)


def test_source_that_vanished_after_the_walk_fails_clearly(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    counter = [0, 0]
    worker = copier.Copier("tok", 0o022, 1 << 20, counter, lambda: False)
    batch = (str(tmp_path / "src"), str(tmp_path / "dst"),
             [("gone", "gone", copier.KIND_FILE, 10, 0o644, 0, 0, False)], True)
    with pytest.raises(copier.Failure) as info:
        worker.copy_batch(batch)
    assert info.value.code == errno.ENOENT
    assert info.value.path == str(tmp_path / "src" / "gone") and info.value.step == "reading"
    assert os.listdir(tmp_path / "dst") == []


ORPHAN_PARENT = """
import os, subprocess, sys
from copy_offload.server.local import copier
src, dst = sys.argv[1], sys.argv[2]
proc = subprocess.Popen([sys.executable, "-I", "-S", copier.__file__, str(os.getpid())],
                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
fd = proc.stdin.fileno()
copier.send_frame(fd, ("tok", 0o022, 1 << 16, 0))
copier.send_frame(fd, (src, dst, [("big", "big", 0, %d, 0o644, 0, 0, False)], True))
print(proc.pid, flush=True)
os._exit(0)  # the server dies, with a worker in the middle of a file
"""


def _gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_a_worker_whose_server_died_stops_and_removes_its_temporary(tmp_path):
    size = 256 << 20
    write(str(tmp_path / "src" / "big"), os.urandom(1 << 20) * (size >> 20))
    (tmp_path / "dst").mkdir()
    out = subprocess.run([sys.executable, "-c", ORPHAN_PARENT % size, str(tmp_path / "src"), str(tmp_path / "dst")],
                         capture_output=True, text=True, timeout=30, check=True)
    pid = int(out.stdout)
    deadline = time.monotonic() + 10
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _gone(pid)
    assert os.listdir(tmp_path / "dst") == []  # neither the file nor its temporary


@pytest.mark.parametrize("method", [1, 2])
def test_fallback_copy_methods_copy_the_same_bytes(tmp_path, method):
    data = os.urandom(3 << 20) + b"end"
    write(str(tmp_path / "src" / "f"), data)
    (tmp_path / "dst").mkdir()
    counter = [0, 0]
    worker = copier.Copier("tok", 0o022, 1 << 20, counter, lambda: False)
    worker.method = method  # 1 = sendfile, 2 = pread/pwrite
    worker.copy_batch((str(tmp_path / "src"), str(tmp_path / "dst"),
                       [("f", "f", copier.KIND_FILE, len(data), 0o644, 0, 0, False)], True))
    assert (tmp_path / "dst" / "f").read_bytes() == data and counter == [len(data), 1]


def test_cross_filesystem_copy_falls_back(tmp_path):
    data = os.urandom(200_000)
    write(str(tmp_path / "f"), data)
    with tiny_tmpfs(str(tmp_path / "other"), size="1m") as other:
        copy(tmp_path / "f", os.path.join(other, "f"))
        with open(os.path.join(other, "f"), "rb") as handle:
            assert handle.read() == data


def test_a_tree_across_file_systems_falls_back_file_by_file(tmp_path):
    """copy_file_range refused between file systems: the tree's hot path falls back too."""
    for i in range(20):
        write(str(tmp_path / "src" / ("f%02d" % i)), os.urandom(i * 1000))
    with tiny_tmpfs(str(tmp_path / "other"), size="1m") as other:
        copy(tmp_path / "src", os.path.join(other, "tree"), workers=1)
        assert snapshot(os.path.join(other, "tree"), times=False) == snapshot(str(tmp_path / "src"), times=False)


def _names_copier(tmp_path, counter):
    (tmp_path / "dst").mkdir(exist_ok=True)
    return copier.Copier("tok", 0o022, 1 << 16, counter, lambda: False)


def test_new_files_by_name_take_the_general_way_when_they_must(tmp_path):
    """A names batch (the walk's fast path) with what it cannot copy in one call mixed in."""
    src = tmp_path / "src"
    write(str(src / "small"), b"s" * 100)
    write(str(src / "empty"), b"")
    write(str(src / "chunks"), os.urandom(200_000))  # more than the 64 KiB chunk
    write(str(src / "setgid"), b"g", 0o2750)  # a mode the umask would cut: set again
    with open(src / "sparse", "wb") as handle:
        handle.truncate(2 << 20)  # a hole only: copied by extent
    write(str(src / "statted"), b"known", 0o600)
    os.symlink("small", src / "link")
    counter = [0, 0, 0, 0, 0]
    worker = _names_copier(tmp_path, counter)
    names = ["small", "empty", "chunks", "setgid", "sparse",
             ("statted", "statted", copier.KIND_FILE, 5, 0o100600, 0, 0, False),
             ("link", "link", copier.KIND_LINK, 0, 0, 0, 0, False)]
    worker.copy_batch((str(src), str(tmp_path / "dst"), names, False))
    assert snapshot(str(tmp_path / "dst"), times=False) == {
        **snapshot(str(src), times=False), ".": snapshot(str(tmp_path / "dst"), times=False)["."]}
    assert os.stat(tmp_path / "dst" / "sparse").st_blocks == 0
    assert counter[:2] == [100 + 200_000 + 1 + (2 << 20) + 5, 7]


@pytest.mark.parametrize("case", ["missing source", "destination exists"])
def test_new_files_by_name_fail_naming_the_step_and_the_path(tmp_path, case):
    write(str(tmp_path / "src" / "f"), b"data")
    worker = _names_copier(tmp_path, [0, 0, 0, 0, 0])
    name = "gone" if case == "missing source" else "f"
    if case == "destination exists":
        write(str(tmp_path / "dst" / "f"), b"in the way")
    with pytest.raises(copier.Failure) as info:
        worker.copy_batch((str(tmp_path / "src"), str(tmp_path / "dst"), [name], False))
    if case == "missing source":
        assert (info.value.step, info.value.path, info.value.code) == (
            "reading", str(tmp_path / "src" / "gone"), errno.ENOENT)
    else:
        assert (info.value.step, info.value.path, info.value.code) == (
            "creating", str(tmp_path / "dst" / "f"), errno.EEXIST)
        assert (tmp_path / "dst" / "f").read_bytes() == b"in the way"


@pytest.mark.parametrize("method", [1, 2])
def test_new_files_by_name_copy_with_the_fallback_methods(tmp_path, method):
    """Where copy_file_range was refused, the hot path copies with sendfile or pread/pwrite."""
    data = {"f%d" % i: os.urandom(i * 5000) for i in range(5)}
    for name, content in data.items():
        write(str(tmp_path / "src" / name), content)
    counter = [0, 0, 0, 0, 0]
    worker = _names_copier(tmp_path, counter)
    worker.method = method  # 1 = sendfile, 2 = pread/pwrite
    worker.copy_batch((str(tmp_path / "src"), str(tmp_path / "dst"), sorted(data), False))
    assert {name: (tmp_path / "dst" / name).read_bytes() for name in data} == data
    assert counter[:2] == [sum(map(len, data.values())), 5]
