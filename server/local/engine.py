"""The built-in copy engine: ``cp -r``/``dcp`` semantics, parallel over files, pure of HTTP.

How a job runs, and why (numbers: bench/bench_copy.py, docs/performance.md):

* Every path is reached beneath its allowed root's descriptor and never through a symlink
  (beneath.py): a directory swapped for a symlink mid-copy fails the copy, naming the path.
* The calling thread walks the source with ``os.scandir`` on directory descriptors (the
  listing's ``d_type``; a stat only for directories, links and a sample of a directory's files),
  creates destination directories as it goes, and queues batches of files of one directory, a
  new directory's regular files as bare names (a single file is copied in the job's own thread). Copiers (workers.py: worker
  processes, threads where processes are off) copy them
  with ``copy_file_range`` (copier.py). The engine owns the plan and hands the crew batches and
  one ``CopierSettings`` record; the crew never calls the engine back: what its copiers find
  (a failure, a mismatch) goes to the job's ``Outcome`` (outcome.py), whose stop flag the walk
  and every copier read.
* A new destination directory tree is built under a temporary name in its parent
  (``.<name>.copy-offload-<token>.tmp``) and renamed into place when complete, so files inside
  it need no rename of their own (a per-file rename costs about a fifth of a small-file copy).
  A file that lands in a directory that already exists is written under a temporary name
  beside its final one and renamed when complete. Either way a cancel or a crash never leaves
  a torn file under a real name, and a cancel removes the temporaries.
* Modes are kept (a directory's applied after its contents); times only with ``preserve``
  (dcp's ``-p``; without it dcp and ``cp -r`` leave the time of the copy); symlinks inside the tree are
  copied as symlinks, never followed; special files (fifos, sockets, devices) are skipped and
  counted. Ownership is left to the copying user, as ``cp -r`` does.
* ``dryrun`` walks and counts, and writes nothing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence, Tuple

from copy_offload.server.local.beneath import (
    Tree,
    join,
    open_beneath,
    reason,
    relative,
    remove_at,
    root_of,
)
from copy_offload.server.local.copier import (
    KIND_FILE,
    KIND_LINK,
    SIZE_UNKNOWN,
    Failure,
    Stopped,
    looks_sparse,
    temp_name,
)
from copy_offload.server.local.outcome import Outcome
from copy_offload.server.local.progress import copied_line, human_bytes
from copy_offload.server.local.workers import CopierSettings, Crew

if TYPE_CHECKING:
    from copy_offload.server.local.copier import Batch, Entry

__all__ = ["CopyJob", "CopyError", "CopyCancelled", "Progress"]

CHUNK = 32 << 20  # bytes per copy call: the longest a cancel waits for in a thread
BATCH_FILES = 128
SAMPLE = 8  # files of a directory the walk stats before it trusts that the rest are small
LARGE = 1 << 20  # a sampled file this big makes the walk stat the whole directory
BATCH_BYTES = 64 << 20
MAX_WORKERS = 64
DIRECT_MIN = 64 << 20  # with direct=True, files this big bypass the page cache


class CopyError(Exception):
    """A copy that cannot be done; ``client_error`` when the request itself is at fault."""

    def __init__(self, message: str, client_error: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.client_error = client_error


class CopyCancelled(Exception):
    """The copy stopped because ``cancel()`` was called."""


@dataclass(frozen=True)
class Progress:
    """A snapshot of a job's counters; every counter only grows."""

    bytes_total: int
    bytes_done: int
    files_total: int
    files_done: int
    elapsed: float
    walking: bool
    finished: bool
    bytes_verified: int = 0  # verify: bytes read back and found equal to the source
    mismatches: int = 0  # verify: files that differed from their source
    sizes_late: bool = False  # a tree: bytes_total grows as copiers learn the sizes (no stat in the walk)

    @property
    def rate(self) -> float:
        return self.bytes_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def percent(self) -> Optional[int]:
        """Whole percent done; None while the total is still unknown; 100 only when finished."""
        if self.finished:
            return 100
        if self.walking:
            return None
        if self.bytes_total and not self.sizes_late:
            share = self.bytes_done / self.bytes_total
        elif self.files_total:  # a tree's files are all known once walked; its bytes are not

            share = self.files_done / self.files_total
        else:
            share = 0.0
        return min(99, int(share * 100))


def _read_umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # only without /proc: read it back at once
    os.umask(mask)
    return mask


class _Stop(Exception):
    """Internal: the walk ends because the job is stopping."""


class CopyJob:
    """One copy of ``source`` (a file or a directory tree) to ``destination``.

    Both paths must already be confined and resolved (paths.py) and lie inside one of ``roots``
    (default ``/``). Everything the job touches is reached beneath its root's descriptor and never
    through a symlink (beneath.py), so a component swapped for a symlink while the copy runs makes
    it fail instead of leading it out. If the destination is an existing directory the source is
    copied into it; otherwise the destination path is created, missing parent directories
    included. ``run()`` blocks; ``cancel()``, ``progress()`` and ``message()`` may be called from
    any thread.
    """

    def __init__(
        self,
        source: str,
        destination: str,
        *,
        roots: Optional[Sequence[str]] = None,
        workers: Optional[int] = None,
        dryrun: bool = False,
        chunk_size: int = CHUNK,
        processes: bool = True,
        process_budget: Optional[threading.Semaphore] = None,
        direct: bool = False,
        verify: bool = False,
        preserve: bool = False,
    ) -> None:
        self.source = source.rstrip("/") or "/"
        self.verify = verify
        self.preserve = preserve
        self.destination = destination
        self.roots = tuple(roots) if roots else ("/",)
        self.dryrun = dryrun
        self.workers = max(1, min(MAX_WORKERS, workers or os.cpu_count() or 1))
        self.chunk = max(1 << 16, chunk_size) >> 16 << 16  # aligned, as O_DIRECT needs
        self.processes = processes
        self.process_budget = process_budget
        self.direct = direct
        self.target = ""
        self.skipped = 0
        self.token = secrets.token_hex(4)
        self._umask = _read_umask()
        self._outcome = Outcome()  # the stop flag and the verdict, shared with the crew
        self._lock = threading.Lock()
        self._crew: Optional[Crew] = None
        self._bytes_total = 0
        self._files_total = 0
        self._walking = True
        self._finished = False
        self._started: Optional[float] = None
        self._ended: Optional[float] = None
        self._prepared = False
        self._source_is_dir = False
        self._src = self._dst = Tree("/")  # the roots; open only while the job works
        self._src_rel = self._target_rel = ""
        self._staged: List[Tuple[str, str, str]] = []  # (parent, temporary name, final name)
        self._made_parents: List[str] = []
        self._planned: List[str] = []  # where the first temporary will be, known at prepare()
        self._dirs: List[Tuple[str, os.stat_result, bool]] = []  # (path, source stat, staged)

    # ------------------------------------------------------------------ public API

    def prepare(self) -> None:
        """Decide the target path and refuse impossible copies, writing nothing.

        Raises CopyError(client_error=True) for what the request got wrong (cp's refusals).
        """
        if self._prepared:
            return
        src_root = self._root("source", self.source)
        dst_root = self._root("destination", self.destination)
        self._src, self._dst = Tree(src_root), Tree(dst_root)
        self._src_rel = relative(self.source, src_root)
        with self._open_trees():
            self._check(relative(self.destination, dst_root))
        self._prepared = True

    def _root(self, what: str, path: str) -> str:
        root = root_of(path, self.roots)
        if root is None:
            raise CopyError("%s path %s is outside the allowed roots" % (what, path), True)
        return root

    def _check(self, dest_rel: str) -> None:
        try:
            src_st = self._src.lstat(self._src_rel)
        except OSError as exc:
            raise CopyError("source path %s: %s" % (self.source, reason(exc)), True) from None
        if src_st is None:
            raise CopyError("source path %s: No such file or directory" % self.source, True)
        self._source_is_dir = stat.S_ISDIR(src_st.st_mode)
        if not (self._source_is_dir or stat.S_ISREG(src_st.st_mode)):
            raise CopyError("source path %s is neither a regular file nor a directory" % self.source, True)
        name = os.path.basename(self.source)
        if not name:
            raise CopyError("cannot copy the file system root %s" % self.source, True)
        try:
            dest_st = self._dst.lstat(dest_rel)
            if dest_st is not None and stat.S_ISDIR(dest_st.st_mode):
                self._target_rel = join(dest_rel, name)
            else:
                self._target_rel = dest_rel
            self.target = self._dst.show(self._target_rel)
            target_st = self._dst.lstat(self._target_rel) if self._target_rel else dest_st
        except OSError as exc:  # a name too long, a symlink, no permission: the request's fault
            raise CopyError("destination path %s: %s" % (self.destination, reason(exc)), True) from None
        if self._source_is_dir:
            if self.target == self.source or self.target.startswith(self.source.rstrip("/") + "/"):
                raise CopyError("cannot copy a directory, %s, into itself, %s" % (self.source, self.target), True)
            if target_st is not None and not stat.S_ISDIR(target_st.st_mode):
                raise CopyError(
                    "cannot overwrite non-directory %s with directory %s" % (self.target, self.source), True
                )
        else:
            if target_st is not None and stat.S_ISDIR(target_st.st_mode):
                raise CopyError(
                    "cannot overwrite directory %s with non-directory %s" % (self.target, self.source), True
                )
            if target_st is not None and os.path.samestat(src_st, target_st):
                raise CopyError("%s and %s are the same file" % (self.source, self.target), True)
        parent = os.path.dirname(self._target_rel)
        ancestor = parent
        try:
            while (ancestor_st := self._dst.lstat(ancestor)) is None:
                ancestor = os.path.dirname(ancestor)
        except OSError as exc:
            raise CopyError("destination path %s: %s" % (self.destination, reason(exc)), True) from None
        if not stat.S_ISDIR(ancestor_st.st_mode):
            raise CopyError("destination %s cannot be created: %s is not a directory"
                            % (self.target, self._dst.show(ancestor)), True)
        if not self._source_is_dir or target_st is None:
            self._planned = [self._dst.show(parent, temp_name(os.path.basename(self.target), self.token))]

    @contextlib.contextmanager
    def _open_trees(self) -> Iterator[None]:
        """Open both roots for the duration of a step; the descriptors everything is reached by."""
        src, dst = Tree.open(self._src.path), None
        try:
            dst = Tree.open(self._dst.path)
            self._src, self._dst = src, dst
            yield
        finally:
            src.close()
            if dst is not None:
                dst.close()

    def run(self, *, defer_cleanup: bool = False) -> Progress:
        """Copy; return the final progress, or raise CopyCancelled / CopyError.

        Temporaries are removed before it raises, unless ``defer_cleanup`` (then the caller
        calls ``cleanup()`` when it suits it).
        """
        self._started = time.monotonic()
        try:
            self.prepare()
        except CopyError as exc:
            self._record(exc)
            self._ended = time.monotonic()
            with self._lock:
                self._walking = False
            raise exc from None
        with self._open_trees():
            return self._run(defer_cleanup)

    def _run(self, defer_cleanup: bool) -> Progress:
        settings = CopierSettings(self.token, self._umask, self.chunk, (self._src, self._dst),
                                  direct_min=DIRECT_MIN if self.direct else 0, verify=self.verify,
                                  preserve=self.preserve)
        outcome = self._outcome
        self._crew = Crew(self.workers, settings, outcome, processes=self.processes, budget=self.process_budget)
        try:
            if not self.dryrun:
                self._make_parents()
            if self._source_is_dir:
                self._walk_tree()
            else:
                self._walk_file()
        except (_Stop, Stopped):
            pass
        except OSError as exc:
            self._fail(exc, "walking", self.source)
        except CopyError as exc:
            self._record(exc)
        finally:
            with self._lock:
                self._walking = False
            self._crew.finish()
        mismatches = self._crew.totals()[3]
        if mismatches and not outcome.stopped:  # nothing of a copy that differs goes into place
            self._record(CopyError(_mismatch_text(mismatches, outcome.mismatched)))
        if not outcome.stopped and not self.dryrun:
            try:
                self._finish_tree()
            except OSError as exc:
                self._fail(exc, "finishing", self.target)
        self._ended = time.monotonic()
        if outcome.stopped:
            self._crew.sweep()
            if not defer_cleanup:
                self._cleanup()
            if outcome.cancelled:
                raise CopyCancelled()
            assert outcome.error is not None
            raise CopyError(outcome.error)
        outcome.succeed()
        self._finished = True
        return self.progress()

    def cancel(self) -> None:
        """Stop the copy: threads notice between chunks and files, processes are killed."""
        self._outcome.cancel()
        if self._crew is not None:
            self._crew.halt()

    def cleanup(self) -> None:
        """Remove what a stopped copy left: the staged trees and the parents it created."""
        if not (self._staged or self._made_parents):
            return
        with self._open_trees():
            self._cleanup()

    def _cleanup(self) -> None:
        for parent, temp, _final in self._staged:
            try:
                fd = self._dst.opendir(parent)
            except OSError:
                continue
            try:
                remove_at(fd, temp)
            except OSError:
                pass
            finally:
                os.close(fd)
        self._staged = []
        for made in reversed(self._made_parents):
            try:
                fd, name = self._dst.parent(made)
            except OSError:
                break
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError:
                break
            finally:
                os.close(fd)
        self._made_parents = []

    def temporaries(self) -> List[str]:
        """Temporaries this job has made or is about to make (for a sweep after a crash)."""
        staged = [self._dst.show(parent, temp) for parent, temp, _final in list(self._staged)]
        return self._planned + [temp for temp in staged if temp not in self._planned]

    def progress(self) -> Progress:
        done = self._crew.totals() if self._crew is not None else [0, 0, 0, 0, 0]
        start = self._started
        end = self._ended if self._ended is not None else time.monotonic()
        return Progress(
            bytes_total=self._bytes_total + done[4],
            bytes_done=done[0],
            files_total=self._files_total,
            files_done=done[1],
            elapsed=(end - start) if start is not None else 0.0,
            walking=self._walking,
            finished=self._finished,
            bytes_verified=done[2],
            mismatches=done[3],
            sizes_late=self._source_is_dir and not self.dryrun,
        )

    def message(self) -> str:
        """A dcp-like line for ``lastMessage``, with dcp's trailing newline."""
        snap = self.progress()
        if self.dryrun:
            text = "Dry run: %s %d files, %s, from %s to %s" % (
                "would copy" if snap.finished else "counted", snap.files_total,
                human_bytes(snap.bytes_total), self.source, self.target or self.destination)
        elif snap.walking:
            text = "Walking %s: %d files, %s so far; copied %s in %.3f secs" % (
                self.source, snap.files_total, human_bytes(snap.bytes_total),
                human_bytes(snap.bytes_done), snap.elapsed)
        else:
            text = copied_line(snap.bytes_done, snap.bytes_total, snap.percent or 0, snap.elapsed,
                               snap.rate, snap.finished)
        if snap.finished and self.verify:
            text += ", verified %s" % human_bytes(snap.bytes_verified)
        if snap.finished and self.skipped:
            text += " (skipped %d special files)" % self.skipped
        return text + "\n"

    # ------------------------------------------------------------------ stop and failure

    def _record(self, error: CopyError) -> None:
        """The job fails with ``error`` (unless it already ended otherwise); the copiers stop."""
        self._outcome.fail(error.message)
        if self._crew is not None:
            self._crew.halt()

    def _fail(self, exc: OSError, doing: str, path: str) -> None:
        self._record(CopyError(Failure(exc.errno or 0, reason(exc), doing, path).describe()))

    # ------------------------------------------------------------------ planning (caller thread)

    def _make_parents(self) -> None:
        """``mkdir -p`` the target's parent beneath the root, remembering what it made."""
        parent = os.path.dirname(self._target_rel)
        if not parent:
            return
        fd = os.dup(self._dst.fd)
        done = ""
        try:
            for name in parent.split("/"):
                done = join(done, name)
                try:
                    os.mkdir(name, dir_fd=fd)
                    self._made_parents.append(done)
                except FileExistsError:
                    pass
                step = open_beneath(fd, name)
                os.close(fd)
                fd = step
        except OSError as exc:
            self._fail(exc, "creating directory", self._dst.show(done))
            raise _Stop() from None
        finally:
            os.close(fd)

    def _walk_file(self) -> None:
        st = self._src.lstat(self._src_rel)
        if st is None or not stat.S_ISREG(st.st_mode):
            raise CopyError("copy failed: source path %s changed since the request: it is no longer a"
                            " regular file" % self.source)
        entry: Entry = (os.path.basename(self._src_rel), os.path.basename(self._target_rel), KIND_FILE,
                        st.st_size, st.st_mode, st.st_atime_ns, st.st_mtime_ns, looks_sparse(st))
        self._bytes_total = st.st_size
        self._files_total = 1
        if not self.dryrun:
            assert self._crew is not None
            self._crew.copy_here((os.path.dirname(self._src_rel), os.path.dirname(self._target_rel), [entry], True))

    def _stage(self, dir_fd: int, parent: str, name: str) -> str:
        """Create the temporary root for the new directory ``parent/name``; return its path."""
        temp = temp_name(name, self.token)
        try:
            os.mkdir(temp, 0o700, dir_fd=dir_fd)
        except OSError as exc:
            self._fail(exc, "creating directory", self._dst.show(parent, temp))
            raise _Stop() from None
        self._staged.append((parent, temp, name))
        return join(parent, temp)

    def _open(self, tree: Tree, rel: str, doing: str) -> int:
        try:
            return tree.opendir(rel)
        except OSError as exc:
            self._fail(exc, doing, tree.show(rel))
            raise _Stop() from None

    def _walk_tree(self) -> None:
        dryrun = self.dryrun
        src, dst = self._src, self._dst
        root_st = src.lstat(self._src_rel)
        if root_st is None or not stat.S_ISDIR(root_st.st_mode):
            raise CopyError("copy failed: source path %s changed since the request: it is no longer a"
                            " directory" % self.source)
        target = self._target_rel
        if dst.lstat(target) is not None:
            root_dst, merge = target, True
        elif dryrun:
            root_dst, merge = target, False
        else:
            parent = os.path.dirname(target)
            pfd = self._open(dst, parent, "opening directory")
            try:
                root_dst, merge = self._stage(pfd, parent, os.path.basename(target)), False
            finally:
                os.close(pfd)
        self._dirs.append((root_dst, root_st, not merge))
        stack = [(self._src_rel, root_dst, merge)]
        sizes = files = 0
        while stack:
            if self._outcome.stopped:
                raise _Stop()
            src_dir, dst_dir, merge = stack.pop()
            sfd = self._open(src, src_dir, "reading directory")
            dfd = -1
            try:
                try:
                    with os.scandir(sfd) as it:
                        entries = list(it)
                except OSError as exc:
                    self._fail(exc, "reading directory", src.show(src_dir))
                    raise _Stop() from None
                if merge or not dryrun:
                    dfd = self._open(dst, dst_dir, "opening directory")
                if not (merge or dryrun):
                    entries, files = self._submit_names(entries, sfd, src_dir, dst_dir, files)
                batch: List[Entry] = []
                batch_bytes = 0
                # A directory's files go in batches of up to BATCH_FILES, never mixed with another
                # directory's (two copiers creating in one directory contend for its lock),
                # unstatted, unless a sampled file is large: then every file is statted and the
                # batches are cut by bytes, so large files go to different copiers.
                sized, sampled = dryrun, 0
                for entry in entries:
                    name = entry.name
                    try:  # d_type says what it is; only directories, links and a dry run stat here
                        if entry.is_dir(follow_symlinks=False):
                            st = entry.stat(follow_symlinks=False)
                            stack.append((join(src_dir, name),
                                          *self._subdir(dfd, dst_dir, name, merge, st, src_dir)))
                            continue
                        if entry.is_file(follow_symlinks=False):
                            if sized or sampled < SAMPLE:
                                sampled += 1
                                st = entry.stat(follow_symlinks=False)
                                size = st.st_size
                                sized = sized or size >= LARGE
                                item: Entry = (name, name, KIND_FILE, size, st.st_mode, st.st_atime_ns,
                                               st.st_mtime_ns, looks_sparse(st))
                            else:  # the copier stats it on its open descriptor (copier.py)
                                size = 0
                                item = (name, name, KIND_FILE, SIZE_UNKNOWN, 0, 0, 0, False)
                        elif entry.is_symlink():
                            st = entry.stat(follow_symlinks=False)
                            size = 0
                            item = (name, name, KIND_LINK, 0, st.st_mode, st.st_atime_ns, st.st_mtime_ns, False)
                        else:
                            self.skipped += 1
                            continue
                    except OSError as exc:
                        self._fail(exc, "reading", src.show(src_dir, name))
                        raise _Stop() from None
                    if merge:
                        existing = _lstat_at(dfd, name)
                        if existing is not None and stat.S_ISDIR(existing.st_mode):
                            self._record(CopyError("cannot overwrite directory %s with non-directory %s"
                                                   % (dst.show(dst_dir, name), src.show(src_dir, name))))
                            raise _Stop()
                    files += 1
                    sizes += size
                    batch.append(item)
                    batch_bytes += size
                    if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                        self._bytes_total, self._files_total = sizes, files
                        self._submit((src_dir, dst_dir, batch, merge))
                        batch, batch_bytes = [], 0
            finally:
                os.close(sfd)
                if dfd >= 0:
                    os.close(dfd)
            self._bytes_total, self._files_total = sizes, files
            if batch:
                self._submit((src_dir, dst_dir, batch, merge))

    def _submit_names(self, entries: List[os.DirEntry], sfd: int, src_dir: str, dst_dir: str,
                      files: int) -> Tuple[List[os.DirEntry], int]:
        """The fast path of a new directory: its regular files go as bare names (the copiers
        stat them on their descriptors), in batches of BATCH_FILES, unless one of a sample is
        large. Returns what is left for the careful loop (subdirectories, links, specials; or
        every entry when the files must be statted and cut by bytes) and the file count."""
        names = [entry.name for entry in entries if entry.is_file(follow_symlinks=False)]
        if not names:
            return entries, files
        for name in names[:SAMPLE]:
            try:
                if os.stat(name, dir_fd=sfd, follow_symlinks=False).st_size >= LARGE:
                    return entries, files
            except OSError as exc:
                self._fail(exc, "reading", self._src.show(src_dir, name))
                raise _Stop() from None
        for start in range(0, len(names), BATCH_FILES):
            batch = names[start:start + BATCH_FILES]
            files += len(batch)
            self._files_total = files
            self._submit((src_dir, dst_dir, batch, False))
        if len(names) == len(entries):
            return [], files
        return [entry for entry in entries if not entry.is_file(follow_symlinks=False)], files

    def _subdir(self, dfd: int, dst_dir: str, name: str, merge: bool, st: os.stat_result,
                src_dir: str) -> Tuple[str, bool]:
        """The destination of a source subdirectory, made (or staged) now; and whether it merges."""
        dst = join(dst_dir, name)
        sub_merge = False
        if merge:
            existing = _lstat_at(dfd, name)
            if existing is not None:
                if not stat.S_ISDIR(existing.st_mode):
                    self._record(CopyError("cannot overwrite non-directory %s with directory %s"
                                           % (self._dst.show(dst), self._src.show(src_dir, name))))
                    raise _Stop()
                sub_merge = True
            elif not self.dryrun:
                dst = self._stage(dfd, dst_dir, name)
        elif not self.dryrun:
            try:
                os.mkdir(name, 0o700, dir_fd=dfd)
            except OSError as exc:
                self._fail(exc, "creating directory", self._dst.show(dst))
                raise _Stop() from None
        self._dirs.append((dst, st, not sub_merge))
        return dst, sub_merge

    def _submit(self, batch: Batch) -> None:
        if not self.dryrun:
            assert self._crew is not None
            self._crew.submit(batch)

    def _finish_tree(self) -> None:
        """Directory modes and times after their contents, then staged trees into place."""
        dst = self._dst
        for path, st, staged in reversed(self._dirs):
            if staged:
                dst.set_dir_meta(path, st, self.preserve)
        for parent, temp, final in self._staged:
            fd = dst.opendir(parent)
            try:
                os.rename(temp, final, src_dir_fd=fd, dst_dir_fd=fd)
            finally:
                os.close(fd)
        self._staged = []
        self._made_parents = []
        for path, st, staged in reversed(self._dirs):
            if not staged:
                dst.set_dir_meta(path, st, self.preserve)


def _mismatch_text(count: int, examples: List[str]) -> str:
    more = "; ..." if count > len(examples) else ""
    return "verification failed: %d file(s) differ from the source after the copy: %s%s" % (
        count, "; ".join(examples), more)


def _lstat_at(dir_fd: int, name: str) -> Optional[os.stat_result]:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
