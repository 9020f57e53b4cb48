"""Confinement of request paths to the ``--allow-root`` trees.

A client names paths as text; the local driver may only read and write below the roots the
administrator allowed. Both paths are resolved the way the kernel will see them (symlinks
followed, ``..`` applied after the symlink it follows) and the resolved path must lie inside a
root, so neither ``..`` nor a symlink can lead a copy out. That is the check at submit; the
copy engine then reaches the resolved paths beneath the root's descriptor without following
any symlink (beneath.py), so a component swapped afterwards cannot lead it out either. A
refusal names the path and the roots, never where a symlink leads.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Iterable, List, Sequence

from copy_offload.server.drivers.errors import BadRequest
from copy_offload.server.local.beneath import Tree, reason, relative, root_of

__all__ = ["Confinement", "ConfinedPaths", "ERR_NO_ROOTS"]

ERR_NO_ROOTS = "no --allow-root configured: the local driver refuses every path"
_NAME_MAX = 255  # Linux's limits for one name and a whole path (bytes)
_PATH_MAX = 4096


@dataclass(frozen=True)
class ConfinedPaths:
    """A request's source and destination after resolution, both inside an allowed root."""

    source: str
    destination: str


def _why(exc: OSError) -> str:
    if exc.errno == errno.EINVAL:  # realpath's readlink of what was a symlink a moment before
        return "it changed while it was being resolved (a component swapped for a symlink, or back)"
    return reason(exc)


class Confinement:
    """The allowed roots, resolved once, and the checks that keep request paths inside them."""

    def __init__(self, roots: Iterable[str]) -> None:
        resolved: List[str] = []
        for root in roots:
            if not root:
                continue
            real = os.path.realpath(os.path.abspath(root))
            if real not in resolved:
                resolved.append(real)
        self.roots: Sequence[str] = tuple(resolved)

    def _roots_text(self) -> str:
        return ", ".join(self.roots)

    def _check_text(self, what: str, path: str) -> None:
        if not self.roots:
            raise BadRequest(ERR_NO_ROOTS)
        if "\0" in path:
            raise BadRequest("%s path %r contains a NUL byte" % (what, path))
        if not os.path.isabs(path):
            raise BadRequest("%s path %s must be absolute" % (what, path))
        encoded = os.fsencode(path)
        if len(encoded) >= _PATH_MAX or any(len(part) > _NAME_MAX for part in encoded.split(b"/")):
            raise BadRequest("%s path %s is too long (names up to %d bytes, paths under %d)"
                            % (what, path[:300] + ("..." if len(path) > 300 else ""), _NAME_MAX, _PATH_MAX))

    def _confine(self, what: str, path: str, real: str) -> str:
        if root_of(real, self.roots) is not None:
            return real
        # Never say where it leads: that would map the file system outside the roots for the caller.
        verb = "resolves" if real != os.path.normpath(path) else "is"
        raise BadRequest("%s path %s %s outside the allowed roots; allowed roots: %s"
                         % (what, path, verb, self._roots_text()))

    def source(self, path: str) -> str:
        """The resolved source; it must lie inside a root and exist.

        Confinement is checked first, so nothing is revealed about paths outside the roots.
        """
        self._check_text("source", path)
        try:
            real = self._confine("source", path, os.path.realpath(path))
            root = root_of(real, self.roots)
            assert root is not None
            tree = Tree.open(root)  # looked at beneath its root, as the copy will read it
            try:
                found = tree.lstat(relative(real, root))
            finally:
                tree.close()
        except OSError as exc:
            raise BadRequest("source path %s cannot be resolved: %s" % (path, _why(exc))) from None
        if found is None:
            raise BadRequest("source path %s does not exist" % path)
        return real

    def destination(self, path: str) -> str:
        """The resolved destination: its nearest existing ancestor resolved, the rest appended."""
        self._check_text("destination", path)
        try:
            # Non-strict realpath resolves every existing component (symlinks included) and
            # applies the remaining components, ".." among them, lexically.
            real = os.path.realpath(path)
        except OSError as exc:
            raise BadRequest("destination path %s cannot be resolved: %s" % (path, _why(exc))) from None
        return self._confine("destination", path, real)

    def request(self, source: str, destination: str) -> ConfinedPaths:
        """Both paths of a copy request, checked; the source first, as the reference validates."""
        return ConfinedPaths(self.source(source), self.destination(destination))
