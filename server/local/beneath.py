"""Filesystem access confined beneath an open directory, never through a symlink.

Request paths are checked against the allowed roots at submit, but a user who can write inside a
root can swap a directory for a symlink while a copy runs. So the engine never hands the kernel
a full path: it opens each allowed root once and reaches everything below it relative to that
descriptor, with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` where the kernel has it
(Linux >= 5.6) and otherwise one ``O_NOFOLLOW | O_DIRECTORY`` open per component. Files are then
opened, made, renamed and removed relative to their parent's descriptor, and metadata is set on
descriptors. A symlink met on the way is an error (``ELOOP``), never followed.

Standard-library only, because worker processes (copier.py run as a script) load it too; they
walk per component, which spares each of them the ``ctypes`` import. ``COPY_OFFLOAD_NO_OPENAT2=1``
forces the per-component way in the server too (tests exercise both).
"""

from __future__ import annotations

import errno
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Sequence, Tuple

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
O_PATH_DIR = getattr(os, "O_PATH", 0o10000000) | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW
SYMLINK_TEXT = "a symlink in the path (or a component replaced by one); copies never follow symlinks"
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_SYS_OPENAT2 = 437  # the same number on every architecture Linux added it to after 5.1
_openat2 = None  # the ctypes call, once probed; False where the kernel (or a seccomp filter) lacks it


def reason(exc: OSError) -> str:
    """The error's text; a symlink or an escape beneath the root says so in plain words."""
    if exc.errno in (errno.ELOOP, errno.EXDEV):
        return SYMLINK_TEXT
    return exc.strerror or str(exc)


def use_openat2(wanted: bool) -> None:
    """Choose the way for this process: openat2 (probed on first use) or per component."""
    global _openat2
    _openat2 = None if wanted else False


def _load_openat2():
    global _openat2
    if os.environ.get("COPY_OFFLOAD_NO_OPENAT2") or not hasattr(os, "O_PATH"):
        _openat2 = False
        return _openat2
    import ctypes  # ~3 ms: only once per process

    class How(ctypes.Structure):
        _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]

    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    size = ctypes.sizeof(How)

    def call(dir_fd: int, path: str, flags: int) -> int:
        how = How(flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS)
        fd = syscall(_SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.addressof(how), size)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
        return fd

    top = os.open("/", O_PATH_DIR)
    try:
        os.close(call(top, ".", O_PATH_DIR))
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
            _openat2 = False
            return _openat2
    finally:
        os.close(top)
    _openat2 = call
    return _openat2


def _parts(rel: str) -> Sequence[str]:
    parts = [part for part in rel.split("/") if part and part != "."]
    if ".." in parts:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), rel)
    return parts


def open_beneath(dir_fd: int, rel: str, flags: int = O_DIR) -> int:
    """Open ``rel`` (relative; a leading ``/`` is ignored) beneath ``dir_fd``, no symlink anywhere."""
    call = _openat2 if _openat2 is not None else _load_openat2()
    rel = rel.lstrip("/") or "."
    if call:
        try:
            return call(dir_fd, rel, flags | os.O_NOFOLLOW)
        except NotADirectoryError:  # O_DIRECTORY met a symlink last: say it is one
            _raise_if_symlink(dir_fd, rel)
            raise
    parts = _parts(rel)
    fd = os.open(".", O_PATH_DIR, dir_fd=dir_fd)
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            try:
                step = os.open(part, (flags | os.O_NOFOLLOW) if last else O_PATH_DIR, dir_fd=fd)
            except NotADirectoryError:  # O_DIRECTORY|O_NOFOLLOW on a symlink: say it is one
                _raise_if_symlink(fd, part)
                raise
            os.close(fd)
            fd = step
        if not parts:
            step = os.open(".", flags, dir_fd=fd)
            os.close(fd)
            fd = step
    except BaseException:
        os.close(fd)
        raise
    return fd


def _raise_if_symlink(dir_fd: int, rel: str) -> None:
    """After ENOTDIR: ELOOP if ``rel``'s last component is a symlink, or a directory again (it
    was swapped a moment ago); looked at beneath ``dir_fd``, not followed."""
    head, _, name = rel.rpartition("/")
    try:
        parent = open_beneath(dir_fd, head, O_PATH_DIR) if head else os.dup(dir_fd)
    except OSError:
        return
    try:
        mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        if stat.S_ISLNK(mode) or stat.S_ISDIR(mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), rel) from None
    except FileNotFoundError:
        pass
    finally:
        os.close(parent)


def join(rel: str, name: str) -> str:
    return "%s/%s" % (rel, name) if rel else name


class Tree:
    """An allowed root, open: paths below it are relative (``""`` is the root itself)."""

    __slots__ = ("path", "fd")

    def __init__(self, path: str, fd: int = -1) -> None:
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: str) -> Tree:
        """Open the root itself; the administrator named it, so its own path is trusted."""
        return cls(path, os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def show(self, rel: str, name: str = "") -> str:
        """The absolute path, for messages (always inside the root)."""
        path = os.path.join(self.path, rel.lstrip("/"), name) if (rel or name) else self.path
        return path.rstrip("/") or "/"

    def opendir(self, rel: str, flags: int = O_DIR) -> int:
        return open_beneath(self.fd, rel, flags | os.O_DIRECTORY)

    def parent(self, rel: str) -> Tuple[int, str]:
        """The parent directory of ``rel`` (open) and its last name; ``rel`` must not be the root."""
        head, _, name = rel.strip("/").rpartition("/")
        return self.opendir(head), name

    def lstat(self, rel: str) -> Optional[os.stat_result]:
        """``rel``'s own status (a symlink is not followed); None if it does not exist."""
        try:
            if not rel.strip("/"):
                return os.fstat(self.fd)
            fd, name = self.parent(rel)
            try:
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
            finally:
                os.close(fd)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def set_dir_meta(self, rel: str, st: os.stat_result, times: bool = True) -> None:
        """Mode (and, with ``times``, times) of the directory ``rel`` from ``st``, set on its descriptor."""
        try:
            fd = self.opendir(rel)
        except PermissionError:  # a directory its owner may not read: pin it with O_PATH
            fd = self.opendir(rel, O_PATH_DIR)
            try:
                pinned = "/proc/self/fd/%d" % fd  # names this very inode, whatever the path is now
                os.chmod(pinned, stat.S_IMODE(st.st_mode))
                if times:
                    os.utime(pinned, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(fd)
            return
        try:
            os.chmod(fd, stat.S_IMODE(st.st_mode))
            if times:
                os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        finally:
            os.close(fd)

    def remove(self, rel: str) -> None:
        """Remove ``rel`` (a file, a link or a whole tree) without following any symlink."""
        fd, name = self.parent(rel)
        try:
            remove_at(fd, name)
        finally:
            os.close(fd)


def remove_at(dir_fd: int, name: str) -> None:
    """``rm -rf name`` relative to ``dir_fd``; symlinks are removed, never followed."""
    try:
        os.unlink(name, dir_fd=dir_fd)
        return
    except IsADirectoryError:
        pass
    except OSError as exc:
        if exc.errno != errno.EPERM:  # EPERM: unlink(2) of a directory on some file systems
            raise
    fd = open_beneath(dir_fd, name)
    try:
        with os.scandir(fd) as entries:
            names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for child, is_dir in names:
            if is_dir:
                remove_at(fd, child)
            else:
                try:
                    os.unlink(child, dir_fd=fd)
                except FileNotFoundError:
                    pass
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def root_of(path: str, roots: Sequence[str]) -> Optional[str]:
    """The innermost root that holds ``path`` (both absolute and resolved), or None."""
    best = None
    for root in roots:
        inside = path == root or path.startswith(root.rstrip("/") + "/")
        if inside and (best is None or len(root) > len(best)):
            best = root
    return best


def relative(path: str, root: str) -> str:
    return path[len(root.rstrip("/")):].strip("/")
