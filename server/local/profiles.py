"""Named local profiles for a request's ``dmProfile``.

In the reference a profile is an NnfDataMovementProfile holding the ``mpirun ... dcp`` command;
here it is either the built-in engine (``""`` or ``"default"``; ``"verify"`` is the engine that
then reads every file back and compares it with its source) or a command template from an
optional TOML file, for sites that prefer rsync, dcp or their own tool::

    default = "rsync"                 # optional: what "" means (else the built-in engine)

    [profiles.rsync]
    command = "rsync -a $SRC $DEST"

    [profiles.dcp]
    command = "dcp --progress 1 $SRC $DEST"
    storeStdout = true                # keep the output in the status message on success

A template is split with ``shlex`` once, and ``$SRC``/``$DEST`` are substituted inside each
argument: the command runs without a shell, so no path can inject anything.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from copy_offload.server.drivers.errors import BadRequest

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["Profile", "Profiles", "ProfileConfigError", "BUILTIN", "VERIFY", "unknown_profile_text"]

BUILTIN = "default"
VERIFY = "verify"  # the built-in engine, then every file read back and compared with its source
_BUILTIN_NAMES = ("", BUILTIN, VERIFY)
_KEYS = {"command", "storeStdout", "logStdout"}


class ProfileConfigError(ValueError):
    """The profiles file cannot be used; the text says which file and what is wrong."""


def unknown_profile_text(name: str) -> str:
    # The reference's words for a profile it cannot find.
    return "unable to retrieve NnfDataMovementProfile: %s" % name


@dataclass(frozen=True)
class Profile:
    """A profile: ``template`` None means the built-in engine (``verify``: and check the copy)."""

    name: str
    template: Optional[Tuple[str, ...]] = None
    store_stdout: bool = False
    log_stdout: bool = False
    verify: bool = False

    @property
    def builtin(self) -> bool:
        return self.template is None

    def argv(self, source: str, destination: str) -> List[str]:
        """The command for one copy, ``$SRC``/``$DEST`` substituted per argument."""
        assert self.template is not None
        return [arg.replace("$SRC", source).replace("$DEST", destination) for arg in self.template]


class Profiles:
    """The built-in profile plus those of the optional TOML file, read once at start-up."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path
        self._profiles: Dict[str, Profile] = {BUILTIN: Profile(BUILTIN), VERIFY: Profile(VERIFY, verify=True)}
        self._default = BUILTIN
        if path:
            self._load(path)

    def _load(self, path: str) -> None:
        try:
            with open(path, "rb") as handle:
                doc = tomllib.load(handle)
        except OSError as exc:
            raise ProfileConfigError("cannot read the profiles file %s: %s" % (path, exc.strerror)) from None
        except tomllib.TOMLDecodeError as exc:
            raise ProfileConfigError("the profiles file %s is not valid TOML: %s" % (path, exc)) from None
        unknown = sorted(set(doc) - {"default", "profiles"})
        if unknown:
            raise ProfileConfigError("the profiles file %s has unknown keys: %s" % (path, ", ".join(unknown)))
        table = doc.get("profiles", {})
        if not isinstance(table, dict):
            raise ProfileConfigError("%s: 'profiles' must be a table of [profiles.<name>] tables" % path)
        for name, body in table.items():
            self._profiles[name] = self._parse(path, name, body)
        default = doc.get("default", BUILTIN)
        if not isinstance(default, str) or default not in self._profiles:
            raise ProfileConfigError("%s: default profile %r is not defined" % (path, default))
        self._default = default

    @staticmethod
    def _parse(path: str, name: str, body: object) -> Profile:
        where = "%s: [profiles.%s]" % (path, name)
        if name in _BUILTIN_NAMES:
            raise ProfileConfigError("%s: the name %r is reserved for the built-in engine" % (where, name))
        if not isinstance(body, dict):
            raise ProfileConfigError("%s must be a table" % where)
        unknown = sorted(set(body) - _KEYS)
        if unknown:
            raise ProfileConfigError("%s has unknown keys: %s" % (where, ", ".join(unknown)))
        command = body.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ProfileConfigError("%s needs a non-empty command string" % where)
        try:
            template = tuple(shlex.split(command))
        except ValueError as exc:
            raise ProfileConfigError("%s: cannot split the command: %s" % (where, exc)) from None
        for var in ("$SRC", "$DEST"):
            if not any(var in arg for arg in template):
                raise ProfileConfigError("%s: the command must contain %s" % (where, var))
        flags = {}
        for key in ("storeStdout", "logStdout"):
            value = body.get(key, False)
            if not isinstance(value, bool):
                raise ProfileConfigError("%s: %s must be true or false" % (where, key))
            flags[key] = value
        return Profile(name, template, flags["storeStdout"], flags["logStdout"])

    def names(self) -> List[str]:
        return sorted(self._profiles)

    def get(self, name: str) -> Profile:
        """The profile a request names; BadRequest in the reference's words if unknown."""
        if name == "":
            return self._profiles[self._default]
        profile = self._profiles.get(name)
        if profile is None:
            raise BadRequest(unknown_profile_text(name))
        return profile
