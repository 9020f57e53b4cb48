"""Helpers for the local driver tests (no tests here): build real trees, compare them byte for byte."""

from __future__ import annotations

import os
import stat
from typing import Dict, Optional, Tuple

MARK = ".copy-offload-"


def write(path: str, data: bytes, mode: int = 0o644, mtime_ns: int = 1_600_000_000_123_456_789) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns - 1_000_000_000, mtime_ns))


def make_tree(root: str) -> None:
    """Nested directories, empty files, odd modes and times, symlinks inside and outside."""
    write(os.path.join(root, "top.txt"), b"top\n", 0o640, 1_500_000_000_000_000_001)
    write(os.path.join(root, "empty"), b"", 0o600)
    write(os.path.join(root, "exec.sh"), b"#!/bin/sh\necho hi\n", 0o755)
    write(os.path.join(root, "a", "b", "c", "deep.bin"), os.urandom(70_000), 0o444)
    write(os.path.join(root, "a", "b", "sibling"), os.urandom(4096))
    write(os.path.join(root, "a", "setgid"), b"x", 0o2755)
    write(os.path.join(root, "a", "world-writable"), b"w", 0o666)  # wider than the umask allows
    os.makedirs(os.path.join(root, "a", "emptydir"))
    os.symlink("b/sibling", os.path.join(root, "a", "rel-link"))
    os.symlink("/etc/hostname", os.path.join(root, "a", "abs-link"))
    os.symlink("missing-target", os.path.join(root, "a", "dangling"))
    for i in range(300):  # more than one batch
        write(os.path.join(root, "many", "f%03d" % i), os.urandom(i * 7))
    os.chmod(os.path.join(root, "a", "emptydir"), 0o750)
    os.utime(os.path.join(root, "a", "emptydir"), ns=(1, 1_400_000_000_000_000_000))
    os.chmod(os.path.join(root, "a", "b"), 0o711)
    os.chmod(os.path.join(root, "many"), 0o777)
    os.utime(os.path.join(root, "a"), ns=(1, 1_300_000_000_000_000_000))


def snapshot(root: str, times: bool = True) -> Dict[str, Tuple]:
    """Relative path -> (kind, mode, mtime_ns, content or link text) for a whole tree; mtime_ns
    None without ``times`` (a copy without dcp's -p keeps modes, not times)."""
    result: Dict[str, Tuple] = {}

    def mtime(st: os.stat_result) -> Optional[int]:
        return st.st_mtime_ns if times else None

    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                result[rel] = ("link", os.readlink(path), mtime(st))
            elif stat.S_ISDIR(st.st_mode):
                result[rel] = ("dir", stat.S_IMODE(st.st_mode), mtime(st))
            else:
                with open(path, "rb") as handle:
                    result[rel] = ("file", stat.S_IMODE(st.st_mode), mtime(st), handle.read())
    st = os.stat(root)
    result["."] = ("dir", stat.S_IMODE(st.st_mode), mtime(st))
    return result


def leftovers(root: str) -> list:
    """Every path under ``root`` that carries the temporary mark."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        found += [os.path.join(dirpath, n) for n in dirnames + filenames if MARK in n]
    return found
