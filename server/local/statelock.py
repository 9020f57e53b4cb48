"""One server per state directory: an exclusive ``flock`` held for the server's whole life.

At start a local-driver server marks the requests its predecessor left running as failed and
removes their temporaries. A second server on the same ``--state-dir`` would do that to a server
that is still running, failing its copies under it. So the first one locks
``<state-dir>/server.lock`` (the kernel drops the lock when the process ends, however it ends)
and writes its pid and address there; a second one is refused, naming the holder.
"""

from __future__ import annotations

import fcntl
import os

__all__ = ["StateLock", "StateDirInUse", "LOCK_NAME"]

LOCK_NAME = "server.lock"


class StateDirInUse(ValueError):
    """Another server holds the state directory; the text names it and what to do."""


class StateLock:
    """The held lock; ``close()`` (or the process's end) releases it."""

    def __init__(self, state_dir: str, address: str = "") -> None:
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(state_dir, LOCK_NAME)
        # O_CLOEXEC: copy commands and worker processes must not inherit (and so keep) the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "pid unknown"
            os.close(fd)
            raise StateDirInUse(
                "the state directory %s is in use by another copy-offload-server (%s); stop that server"
                " or give this one its own --state-dir" % (state_dir, holder)) from None
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.record(address)

    def record(self, address: str) -> None:
        """Write who holds the lock (read by a server that is refused)."""
        text = ("pid %d, address %s" % (os.getpid(), address or "not yet listening")).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text + b"\n", 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
