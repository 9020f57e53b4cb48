"""Entry points of the server-side scripts that check for the ``server`` extra first.

``pip install flux-copy-offload`` without ``[server]`` still installs copy-offload-server and
copy-offload-admin; without this check they would die with ModuleNotFoundError. Instead they
say which module is missing and the pip command (for this very Python) that adds it, exit 2.
Only the standard library is imported here.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import List, Optional, Sequence

DISTRIBUTION = "flux-copy-offload"
# Import names the server and the admin tool load at start (the `server` extra in pyproject.toml).
SERVER_MODULES = ("tornado", "jwt", "cryptography")
ADMIN_MODULES = ("jwt", "cryptography", "kubernetes", "yaml")
EXIT_MISSING_EXTRA = 2


def missing_modules(names: Sequence[str]) -> List[str]:
    """The names in ``names`` that this Python cannot import."""
    return [name for name in names if importlib.util.find_spec(name) is None]


def install_hint(prog: str, missing: Sequence[str]) -> str:
    """One line: what is missing and the command that installs it into this interpreter."""
    return "%s: needs the server extra (%s not installed); add it with: %s -m pip install '%s[server]'" % (
        prog, ", ".join(missing), sys.executable, DISTRIBUTION)


def _require(prog: str, names: Sequence[str]) -> bool:
    missing = missing_modules(names)
    if missing:
        print(install_hint(prog, missing), file=sys.stderr)
    return not missing


def server_main(argv: Optional[Sequence[str]] = None) -> int:
    if not _require("copy-offload-server", SERVER_MODULES):
        return EXIT_MISSING_EXTRA
    from copy_offload.server.__main__ import main

    return main(None if argv is None else list(argv))


def admin_main(argv: Optional[Sequence[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["paths"]:  # where the kit was installed: useful before the extra is added
        from copy_offload.server import admin_paths

        return admin_paths.main(args[1:])
    if not _require("copy-offload-admin", ADMIN_MODULES):
        return EXIT_MISSING_EXTRA
    from copy_offload.server.admin import main

    return main(args)
