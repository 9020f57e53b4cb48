"""The data path of the copy engine: copy one batch of files, in a thread or a worker process.

A batch is the files of one source directory going to one destination directory, both named
relative to their allowed root, each file a bare name (most of a tree: the walk read only the
directory, the copier stats the open file) or an entry with its status; the copier opens both directories once beneath the root's
descriptor, never through a symlink (beneath.py), and works relative to them (``dir_fd``), which
also saves a path lookup per file. It is standard-library only and runs as a script
(``python -I -S copier.py``) so a worker process starts in about 10 ms: on trees of many small
files, copying in separate processes keeps the interpreter lock out of the kernel's way
(bench/bench_copy.py measures it).

Worker protocol, on stdin/stdout, frames of a 4-byte big-endian length and a ``marshal`` blob:
in, per job, first a config ``(token, umask, chunk, direct_min, source root, its fd, destination
root, its fd, verify, preserve)`` (root descriptors inherited with ``pass_fds``, or, when both numbers are
``PASSED_FDS``, sent with ``SCM_RIGHTS`` on the stdin socket right after the config) then
frames, each a list of batches, then ``None``, answered ``("z",)``: the job is over and the process waits for the next
config (the server keeps such processes in a pool, so a job starts none). Out,
``("p", bytes, files, verified, bytes found)`` progress deltas, ``("d", ...)`` the same when a frame is done,
``("m", text)`` for a file that differs from its source after the copy (verify), and
``("e", errno, strerror, step, path)`` on failure, after which the worker exits. End of stdin
ends the worker; a cancel kills it, and the engine removes what it left; a worker whose server
died (its parent changed) stops at the next file or chunk and removes its temporary.
"""

from __future__ import annotations

import errno
import fcntl
import marshal
import mmap
import os
import stat
import struct
import sys
import time

if __name__ == "__main__":  # a worker process (python -I -S copier.py): its sibling by path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import beneath
else:
    from copy_offload.server.local import beneath

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs ~10 ms at the start of every worker process
    from typing import Callable, List, Optional, Sequence, Tuple, Union

    # Entry: (source name, destination name, kind, size, mode, atime_ns, mtime_ns, sparse)
    Entry = Tuple[str, str, int, int, int, int, int, bool]
    # Batch: (source dir, destination dir, entries, replace), the directories relative to their
    # roots; an entry a bare name is a regular file of that name at both ends, status unknown;
    # replace = write beside, then rename.
    Batch = Tuple[str, str, List[Union[str, Entry]], bool]

TEMP_MARK = ".copy-offload-"
KIND_FILE, KIND_LINK = 0, 1
FALLBACK_ERRNOS = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP})
SPARSE_MIN = 1 << 20  # files this big whose blocks do not cover their size are copied by extent
SIZE_UNKNOWN = -1  # an entry's size when the walk did not stat it: the copier does, on its descriptor
# O_NONBLOCK: a source swapped for a fifo after the walk must not block the open (it then fails
# as "no longer a regular file"); it changes nothing for regular files.
_O_SRC = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_O_NOATIME = getattr(os, "O_NOATIME", 0)  # reading must not dirty the source's inode (atime)
_O_DST = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
_CFR, _SENDFILE, _RW = 0, 1, 2
_FRAME = struct.Struct(">I")



class Failure(Exception):
    """A copy step failed: errno, text, what was being done and to which path."""

    def __init__(self, code: int, text: str, step: str, path: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.step = step
        self.path = path

    def describe(self) -> str:
        """The job's error text: ``copy failed: <why> (<ERRNO name>) <step> <path>``."""
        name = errno.errorcode.get(self.code or 0, "E?")
        return "copy failed: %s (%s) %s %s" % (self.text, name, self.step, self.path)


class Stopped(Exception):
    """The job is stopping; leave the current file."""


def _failure(exc: OSError, step: str, src_dir: str, sname: str, dst_dir: str, dname: str) -> Failure:
    """The Failure of a file's ``step``, naming the source, the destination or both."""
    src = os.path.join(src_dir, sname)
    dst = os.path.join(dst_dir, dname)
    where = src if step == "reading" else ("%s to %s" % (src, dst) if step == "copying" else dst)
    return Failure(exc.errno or 0, beneath.reason(exc), step, where)


def temp_name(name: str, token: str) -> str:
    """``.<name>.copy-offload-<token>.tmp``, hashed when that would exceed NAME_MAX."""
    temp = ".%s%s%s.tmp" % (name, TEMP_MARK, token)
    if len(os.fsencode(temp)) > 255:
        import hashlib  # rare: only for names near NAME_MAX

        digest = hashlib.sha1(os.fsencode(name)).hexdigest()[:20]
        temp = "%s%s-%s.tmp" % (TEMP_MARK, token, digest)
    return temp


class Copier:
    """Copies batches; ``counter`` is ``[bytes, files, verified bytes, mismatches, bytes found]``,
    grown as work completes (bytes found: the sizes of entries the walk left unstatted, learned
    here with one ``fstat`` of the open source; a counter of four is enough without such entries).

    ``stopping()`` is polled between files and between chunks; ``on_chunk()``, if given, is
    called after each chunk of a large file (worker processes report progress from it).
    ``trees`` are the open (source, destination) roots; by default ``/`` for both. With
    ``verify`` each file is read back after its copy and compared with the source, byte for byte;
    one that differs is not put in place, and ``on_mismatch(text)`` says which and where. The
    mode of every copy is its source's; its times are only with ``preserve`` (dcp's ``-p``: by
    default dcp and ``cp -r`` leave them the time of the copy, and setting them is a tenth of a
    small file's copy).
    """

    def __init__(
        self,
        token: str,
        umask: int,
        chunk: int,
        counter: List[int],
        stopping: Callable[[], bool],
        on_chunk: Optional[Callable[[], None]] = None,
        direct_min: int = 0,
        trees: Optional[Tuple[beneath.Tree, beneath.Tree]] = None,
        verify: bool = False,
        on_mismatch: Optional[Callable[[str], None]] = None,
        preserve: bool = False,
    ) -> None:
        self.verify = verify
        self.preserve = preserve
        self.on_mismatch = on_mismatch
        self.dst_flags = (_O_DST & ~os.O_WRONLY) | os.O_RDWR if verify else _O_DST
        if trees is None:
            top = beneath.Tree.open("/")
            trees = (top, top)
        self.src_tree, self.dst_tree = trees
        self.token = token
        self.umask = umask
        self.chunk = chunk
        self.counter = counter
        self.stopping = stopping
        self.on_chunk = on_chunk
        self.method = _CFR
        self.src_flags = _O_SRC | _O_NOATIME
        self.direct_min = direct_min  # files this big are written with O_DIRECT (0: never)
        self._buffer: Optional[mmap.mmap] = None

    def copy_batch(self, batch: Sequence) -> None:
        src_rel, dst_rel, entries, replace = batch
        src_dir, dst_dir = self.src_tree.show(src_rel), self.dst_tree.show(dst_rel)
        try:
            sfd = self.src_tree.opendir(src_rel)
        except OSError as exc:
            raise Failure(exc.errno or 0, beneath.reason(exc), "opening directory", src_dir) from None
        try:
            try:
                dfd = self.dst_tree.opendir(dst_rel)
            except OSError as exc:
                raise Failure(exc.errno or 0, beneath.reason(exc), "opening directory", dst_dir) from None
            try:
                if replace or self.verify:
                    self.copy_entries(sfd, dfd, entries, replace, src_dir, dst_dir)
                else:
                    self.copy_new(sfd, dfd, entries, src_dir, dst_dir)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def copy_entries(self, sfd: int, dfd: int, entries: Sequence, replace: bool, src_dir: str, dst_dir: str) -> None:
        """Every kind of entry, every option: the general way."""
        counter = self.counter
        stopping = self.stopping
        copy_file = self.copy_file
        for entry in entries:
            if stopping():
                raise Stopped()
            if entry.__class__ is str:  # a name the walk did not stat
                copy_file(sfd, dfd, entry, entry, None, replace, src_dir, dst_dir)
            elif entry[2] == KIND_FILE:
                copy_file(sfd, dfd, entry[0], entry[1], entry, replace, src_dir, dst_dir)
            else:
                self.copy_link(sfd, dfd, entry, replace, src_dir, dst_dir)
            counter[1] += 1

    def copy_new(self, sfd: int, dfd: int, entries: Sequence, src_dir: str, dst_dir: str) -> None:
        """The hot path of a many-small-file tree: files that are new at the destination (no
        rename), named by the walk without a stat, each copied with one ``fstat`` and one
        ``copy_file_range`` and no more Python than that needs (a tenth of the copier's CPU per
        file less than ``copy_file``). Anything else, and every failure to open a source, goes
        to ``copy_entries``, which says what went wrong."""
        open_, fstat, cfr, close = os.open, os.fstat, os.copy_file_range, os.close
        src_flags, dst_flags, umask, preserve = self.src_flags, self.dst_flags, self.umask, self.preserve
        limit = SPARSE_MIN - 1  # from 1 MiB on: the sparse check, chunks, O_DIRECT (copy_entries)
        counter, stopping = self.counter, self.stopping
        for name in entries:
            if stopping():
                raise Stopped()
            if name.__class__ is not str:  # a statted entry or a link
                self.copy_entries(sfd, dfd, (name,), False, src_dir, dst_dir)
                continue
            try:
                fi = open_(name, src_flags, dir_fd=sfd)
            except OSError:  # O_NOATIME refused, or a failure the general way names
                self.copy_entries(sfd, dfd, (name,), False, src_dir, dst_dir)
                continue
            fo = -1
            step = "reading"
            try:
                st = fstat(fi)
                size = st.st_size
                mode = st.st_mode
                if size > limit or mode & 0o170000 != stat.S_IFREG:
                    close(fi)
                    fi = -1
                    self.copy_entries(sfd, dfd, (name,), False, src_dir, dst_dir)
                    continue
                counter[4] += size
                step = "creating"
                perm = mode & 0o7777
                fo = open_(name, dst_flags, perm, dir_fd=dfd)
                step = "copying"
                if size:
                    copied = 0
                    if self.method == _CFR:
                        try:
                            copied = cfr(fi, fo, size, 0, 0)
                        except OSError as exc:  # refused here: copy_range() falls back, as for any file
                            if exc.errno not in FALLBACK_ERRNOS:
                                raise
                    counter[0] += copied
                    if copied < size:  # short, refused, or a fallback method already
                        self.copy_range(fi, fo, copied, size - copied)
                step = "setting attributes of"
                if perm & umask:
                    os.fchmod(fo, perm)
                if preserve:
                    os.utime(fo, ns=(st.st_atime_ns, st.st_mtime_ns))
                close(fo)
                fo = -1
            except OSError as exc:
                raise _failure(exc, step, src_dir, name, dst_dir, name) from None
            finally:
                if fo >= 0:
                    close(fo)
                if fi >= 0:
                    close(fi)
            counter[1] += 1

    def copy_file(self, sfd: int, dfd: int, sname: str, dname: str, known: Optional[Entry], replace: bool,
                  src_dir: str, dst_dir: str) -> None:
        """Copy the file ``sname`` of ``sfd`` to ``dname`` in ``dfd``; ``known`` is its entry
        when the walk statted it, else None (its status then comes from the open descriptor)."""
        step = "reading"
        fi = fo = -1
        temp = None
        counter = self.counter
        try:
            try:
                fi = os.open(sname, self.src_flags, dir_fd=sfd)
            except PermissionError:
                if not self.src_flags & _O_NOATIME:
                    raise
                fi = os.open(sname, _O_SRC, dir_fd=sfd)  # O_NOATIME needs ownership (or CAP_FOWNER)
            if known is None or known[3] == SIZE_UNKNOWN:  # the walk read only the directory
                st = os.fstat(fi)
                mode = st.st_mode
                if not stat.S_ISREG(mode):
                    raise Failure(0, "no longer a regular file (it changed while copying)", "reading",
                                  os.path.join(src_dir, sname))
                size = st.st_size
                sparse = looks_sparse(st)
                counter[4] += size
            else:
                size, mode, sparse = known[3], known[4], known[7]
                st = None
            step = "creating"
            perm = mode & 0o7777
            if replace:
                temp = temp_name(dname, self.token)
                fo = os.open(temp, self.dst_flags, perm, dir_fd=dfd)
            else:
                fo = os.open(dname, self.dst_flags, perm, dir_fd=dfd)
            step = "copying"
            if size:
                if sparse:
                    self.copy_sparse(fi, fo, size)
                elif not (self.direct_min and size >= self.direct_min and self.copy_direct(fi, fo, size)):
                    self.copy_range(fi, fo, 0, size)
            if self.verify:
                step = "verifying"
                differs = self.compare(fi, fo, size)
                if differs is not None:  # not put in place; a staged tree goes as the job fails
                    counter[3] += 1
                    if self.on_mismatch is not None:
                        self.on_mismatch("%s: %s" % (os.path.join(src_dir, sname), differs))
                    return
            step = "setting attributes of"
            if perm & self.umask:
                os.fchmod(fo, perm)
            if self.preserve:
                times = (st.st_atime_ns, st.st_mtime_ns) if st is not None else known[5:7]  # type: ignore[index]
                os.utime(fo, ns=times)
            os.close(fo)
            fo = -1
            if temp is not None:
                step = "renaming into place"
                os.rename(temp, dname, src_dir_fd=dfd, dst_dir_fd=dfd)
                temp = None
        except OSError as exc:
            raise _failure(exc, step, src_dir, sname, dst_dir, dname) from None
        finally:
            if fo >= 0:
                os.close(fo)
            if fi >= 0:
                os.close(fi)
            if temp is not None:
                try:
                    os.unlink(temp, dir_fd=dfd)
                except OSError:
                    pass

    def copy_link(self, sfd: int, dfd: int, entry: Entry, replace: bool, src_dir: str, dst_dir: str) -> None:
        sname, dname, _kind, _size, _mode, atime, mtime, _sparse = entry
        temp = None
        step = "reading"
        try:
            text = os.readlink(sname, dir_fd=sfd)
            step = "creating"
            if replace:
                temp = temp_name(dname, self.token)
                os.symlink(text, temp, dir_fd=dfd)
                step = "renaming into place"
                os.rename(temp, dname, src_dir_fd=dfd, dst_dir_fd=dfd)
                temp = None
            else:
                os.symlink(text, dname, dir_fd=dfd)
            if self.preserve:
                step = "setting attributes of"
                os.utime(dname, ns=(atime, mtime), dir_fd=dfd, follow_symlinks=False)
        except OSError as exc:
            where = os.path.join(src_dir, sname) if step == "reading" else os.path.join(dst_dir, dname)
            text = beneath.reason(exc)
            if step == "reading" and exc.errno == errno.EINVAL:
                text = "no longer a symlink (it changed while copying)"
            raise Failure(exc.errno or 0, text, step, where) from None
        finally:
            if temp is not None:
                try:
                    os.unlink(temp, dir_fd=dfd)
                except OSError:
                    pass

    def compare(self, fi: int, fo: int, size: int) -> Optional[str]:
        """Read the copy back beside the source; None when equal, else where they differ.

        The last read asks for one byte more than ``size``: a source that grew since the walk
        differs in length then, with no fstat per file (a small file costs two preads).
        """
        step = min(self.chunk, 8 << 20)
        counter = self.counter
        offset = 0
        while True:
            if self.stopping():
                raise Stopped()
            last = size - offset <= step
            want = size - offset + 1 if last else step
            a = os.pread(fi, want, offset)
            b = os.pread(fo, want, offset)
            if a != b:
                if len(a) != len(b):
                    return "the copy has %d bytes, the source %d now (it changed during the copy?)" % (
                        os.fstat(fo).st_size, os.fstat(fi).st_size)
                at = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
                return "the copy differs from the source at byte %d" % (offset + at)
            offset += len(a)
            counter[2] += len(a)
            if last or len(a) < want:
                return None
            if self.on_chunk is not None:
                self.on_chunk()

    def copy_sparse(self, fi: int, fo: int, size: int) -> None:
        """Copy only the data extents; holes stay holes (ftruncate sets the size)."""
        counter = self.counter
        try:
            os.lseek(fi, 0, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # nothing but a hole
                counter[0] += size
                os.ftruncate(fo, size)
                return
            if exc.errno in FALLBACK_ERRNOS:
                self.copy_range(fi, fo, 0, size)
                return
            raise
        offset = 0
        while offset < size:
            if self.stopping():
                raise Stopped()
            try:
                data = min(os.lseek(fi, offset, os.SEEK_DATA), size)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                data = size
            counter[0] += data - offset
            if data >= size:
                break
            hole = min(os.lseek(fi, data, os.SEEK_HOLE), size)
            self.copy_range(fi, fo, data, hole - data)
            offset = hole
        os.ftruncate(fo, size)

    def copy_direct(self, fi: int, fo: int, size: int) -> bool:
        """Write with O_DIRECT through one aligned buffer; False if the file system refuses.

        dcp's ``--direct``: the destination bypasses the page cache, so a large copy neither
        evicts the server's cache nor waits on dirty-page throttling. The unaligned tail is
        written buffered.
        """
        flags = fcntl.fcntl(fo, fcntl.F_GETFL)
        try:
            fcntl.fcntl(fo, fcntl.F_SETFL, flags | os.O_DIRECT)
        except OSError as exc:
            if exc.errno in FALLBACK_ERRNOS:
                return False
            raise
        if self._buffer is None:
            self._buffer = mmap.mmap(-1, self.chunk)  # page aligned, as O_DIRECT needs
        view = memoryview(self._buffer)
        counter = self.counter
        offset = 0
        try:
            while offset < size:
                if self.stopping():
                    raise Stopped()
                got = os.preadv(fi, [view[: min(self.chunk, size - offset)]], offset)
                if got == 0:  # the source shrank since the walk
                    break
                if got % 4096:
                    fcntl.fcntl(fo, fcntl.F_SETFL, flags)
                written = 0
                while written < got:
                    try:
                        written += os.pwritev(fo, [view[written:got]], offset + written)
                    except OSError as exc:  # an alignment the device wants and we missed
                        if exc.errno != errno.EINVAL or not fcntl.fcntl(fo, fcntl.F_GETFL) & os.O_DIRECT:
                            raise
                        fcntl.fcntl(fo, fcntl.F_SETFL, flags)
                offset += got
                counter[0] += got
                if self.on_chunk is not None:
                    self.on_chunk()
        finally:
            view.release()
            fcntl.fcntl(fo, fcntl.F_SETFL, flags)
        return True

    def copy_range(self, fi: int, fo: int, offset: int, length: int) -> None:
        """Kernel-side copy in bounded chunks: copy_file_range, else sendfile, else pread/pwrite."""
        end = offset + length
        chunk = self.chunk
        counter = self.counter
        while offset < end:  # the caller checked stopping() before the first chunk
            want = min(chunk, end - offset)
            method = self.method
            try:
                if method == _CFR:
                    got = os.copy_file_range(fi, fo, want, offset, offset)
                elif method == _SENDFILE:
                    os.lseek(fo, offset, os.SEEK_SET)
                    got = os.sendfile(fo, fi, offset, want)
                else:
                    got = _pcopy(fi, fo, offset, want)
            except OSError as exc:
                if exc.errno in FALLBACK_ERRNOS and method != _RW:
                    self.method = method + 1
                    continue
                raise
            if got == 0:  # the source shrank since the walk: copy what there is
                return
            offset += got
            counter[0] += got
            if offset < end and self.stopping():
                raise Stopped()
            if self.on_chunk is not None and want == chunk:
                self.on_chunk()


def looks_sparse(st: os.stat_result) -> bool:
    """A file big enough to care whose blocks do not cover its size: copied by extent."""
    return st.st_size >= SPARSE_MIN and st.st_blocks * 512 < st.st_size


def _pcopy(fi: int, fo: int, offset: int, want: int) -> int:
    data = os.pread(fi, min(want, 8 << 20), offset)
    view = memoryview(data)
    written = 0
    while written < len(data):
        written += os.pwrite(fo, view[written:], offset + written)
    return len(data)


# ---------------------------------------------------------------------- worker process


def _read_exact(fd: int, size: int) -> bytes:
    parts = []
    while size:
        part = os.read(fd, size)
        if not part:
            raise EOFError()
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def send_frame(fd: int, message: tuple) -> None:
    blob = marshal.dumps(message)
    data = _FRAME.pack(len(blob)) + blob
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def receive_frame(fd: int):
    (size,) = _FRAME.unpack(_read_exact(fd, _FRAME.size))
    return marshal.loads(_read_exact(fd, size))


PASSED_FDS = -2  # a root descriptor number meaning: sent with SCM_RIGHTS right after the config


def main() -> int:
    """Worker process: serve jobs (a config, then its batches) from stdin until it closes."""
    parent = int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()
    # Per component here: as safe (O_NOFOLLOW at every step, from the inherited root), a few
    # opens per batch, and no ctypes import (3-15 ms) at the start of every worker.
    beneath.use_openat2(False)
    rfd, wfd = sys.stdin.fileno(), sys.stdout.fileno()
    while True:
        try:
            config = receive_frame(rfd)
        except EOFError:
            return 0
        code = _serve_job(config, rfd, wfd, parent)
        if code is not None:
            return code


def _receive_fds(fd: int, count: int) -> list:
    import socket  # only workers kept in the server's pool get their roots this way

    sock = socket.socket(fileno=os.dup(fd))
    try:
        _data, fds, _flags, _addr = socket.recv_fds(sock, 1, count)
    finally:
        sock.close()
    if len(fds) != count:
        raise EOFError()
    return fds


def _serve_job(config: tuple, rfd: int, wfd: int, parent: int) -> Optional[int]:
    """One job: its batches until a ``None`` frame (answered ``("z",)``: ready for the next job,
    the server's pool keeps this process) or end of input; the exit code when the process ends."""
    token, umask, chunk, direct_min = config[:4]
    trees = None
    received: list = []
    if len(config) >= 8:
        fds = [config[5], config[7]]
        if PASSED_FDS in fds:
            try:
                received = fds = _receive_fds(rfd, 2)
            except EOFError:
                return 0
        trees = (beneath.Tree(config[4], fds[0]), beneath.Tree(config[6], fds[1]))
    verify = len(config) >= 9 and bool(config[8])
    preserve = len(config) >= 10 and bool(config[9])
    counter = [0, 0, 0, 0, 0]
    sent = [0, 0, 0, 0]
    last = [time.monotonic()]

    def deltas(kind: str) -> tuple:
        message = (kind, counter[0] - sent[0], counter[1] - sent[1], counter[2] - sent[2], counter[4] - sent[3])
        sent[:] = counter[0], counter[1], counter[2], counter[4]
        return message

    def report() -> None:
        now = time.monotonic()
        if now - last[0] >= 0.2:
            last[0] = now
            send_frame(wfd, deltas("p"))

    checked = [0.0]

    def orphaned() -> bool:
        # A server that died (crash, kill -9) must not have a worker writing on: the restarted
        # server sweeps the temporaries. Asked between files and chunks, answered by getppid()
        # at most every 20 ms (a syscall per small file is a few per cent of its copy).
        now = time.monotonic()
        if now - checked[0] < 0.02:
            return False
        checked[0] = now
        return os.getppid() != parent

    copier = Copier(token, umask, chunk, counter, orphaned, report, direct_min, trees, verify,
                    lambda text: send_frame(wfd, ("m", text)), preserve)
    try:
        while True:
            try:
                batch = receive_frame(rfd)
            except EOFError:
                return 0
            if batch is None:
                send_frame(wfd, ("z",))
                return None
            try:
                for one in [batch] if isinstance(batch, tuple) else batch:  # a frame: a list of batches
                    copier.copy_batch(one)
            except Stopped:
                return 1
            except Failure as exc:
                send_frame(wfd, ("e", exc.code, exc.text, exc.step, exc.path))
                return 1
            send_frame(wfd, deltas("d"))
    finally:
        for fd in received:
            os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
