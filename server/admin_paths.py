"""``copy-offload-admin paths``: where an installation keeps the man pages, the site kit and the
jobtap sources, so a site installing from a wheel can reach them (``make -C "$(... paths jobtap)"``).

Standard library only: it answers even before the ``server`` extra is installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import site
import sys
import sysconfig
from typing import Dict, List, Optional, Sequence

PROG = "copy-offload-admin paths"
WHAT = {
    "man": "manual pages (man -M DIR copy-offload-admin)",
    "share": "site kit: container image, NnfContainerProfile, RBAC, Flux configuration",
    "jobtap": "C sources and Makefile of the Flux plugins (make -C DIR BUILD=/tmp/build)",
    "flux": "the Python package flux's Python must import (copy_offload.flux)",
}


def package_dir(name: str) -> Optional[str]:
    """The directory of an installed (possibly data-only) package, or None."""
    try:
        spec = importlib.util.find_spec(name)
    except ImportError:
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return os.path.realpath(locations[0]) if locations else None


def man_dir(share: Optional[str]) -> Optional[str]:
    """The man directory (holding man1/) that has our pages: the install prefix's, else the kit's."""
    candidates: List[str] = [os.path.join(sysconfig.get_path("data"), "share", "man")]
    if site.ENABLE_USER_SITE:
        candidates.append(os.path.join(site.getuserbase(), "share", "man"))
    if share:
        candidates.append(os.path.join(share, "man"))
    for candidate in candidates:
        if os.path.isfile(os.path.join(candidate, "man1", "copy-offload-admin.1")):
            return os.path.realpath(candidate)
    return None


def installed_paths() -> Dict[str, Optional[str]]:
    share = package_dir("copy_offload.share")
    return {"man": man_dir(share), "share": share, "jobtap": package_dir("copy_offload.jobtap"),
            "flux": package_dir("copy_offload.flux")}


def build_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=sorted(WHAT),
                        help="print only this directory (for scripts); default: all, one per line")
    return parser


def run(what: Optional[str]) -> int:
    paths = installed_paths()
    if what:
        if not paths[what]:
            print("copy-offload-admin: this installation has no %s directory" % what, file=sys.stderr)
            return 1
        print(paths[what])
        return 0
    for name in sorted(WHAT):
        print("%-7s %s\n        %s" % (name, paths[name] or "(not installed)", WHAT[name]))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(build_parser().parse_args(argv).what)
