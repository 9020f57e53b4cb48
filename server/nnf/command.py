"""The data-movement command line and the MPI hostfile, from a profile and an NnfDataMovement.

As nnf-dm's ``BuildDMCommand``/``CreateMpiHostfile``, for copy offload:
the server runs as the job's user, so ``--uid $UID``/``--gid $GID`` are removed from the
profile command and ``$SETPRIV`` is emptied unless the server runs as root; user options go
after the first ``mpirun``/``dcp``; each mpirun gets its own ORTE session directory (the
hostfile's directory) so concurrent copies do not race on ``/tmp/ompi.*``. Pure functions
except ``write_hostfile``, which the driver runs in a thread.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, List, Optional

DRYRUN_COMMAND = "true"


def _insert_after(cmd: str, word: str, text: str) -> str:
    idx = cmd.find(word)
    if idx == -1:
        return cmd
    idx += len(word)
    return cmd[:idx] + text + cmd[idx:]


def inject_orte_tmpdir_base(cmd: str, hostfile: str) -> str:
    """`` --mca orte_tmpdir_base <dir of hostfile>`` after the first ``mpirun``."""
    return _insert_after(cmd, "mpirun", " --mca orte_tmpdir_base " + os.path.dirname(hostfile))


def build_dm_command(profile_data: Dict[str, Any], hostfile: str, dm: Dict[str, Any]) -> str:
    """The shell command for ``dm`` (run as ``/bin/bash -c <command>``)."""
    spec = dm.get("spec") or {}
    user = spec.get("userConfig") or {}
    if user.get("dryrun"):
        return DRYRUN_COMMAND
    cmd = str(profile_data.get("command") or "")
    cmd = cmd.replace("--uid $UID", "").replace("--gid $GID", "")
    cmd = cmd.replace("$HOSTFILE", hostfile)
    cmd = cmd.replace("$UID", str(spec.get("userId") or 0))
    cmd = cmd.replace("$GID", str(spec.get("groupId") or 0))
    cmd = cmd.replace("$SRC", ((spec.get("source") or {}).get("path") or ""))
    cmd = cmd.replace("$DEST", ((spec.get("destination") or {}).get("path") or ""))
    if user.get("mpirunOptions"):
        cmd = _insert_after(cmd, "mpirun", " " + user["mpirunOptions"])
    if user.get("dcpOptions"):
        cmd = _insert_after(cmd, "dcp", " " + user["dcpOptions"])
    return inject_orte_tmpdir_base(cmd, hostfile)


def build_stat_or_mkdir_command(
    template: str, setpriv_template: str, *, uid: int, gid: int, hostfile: str, path: str, use_setpriv: bool
) -> str:
    """The profile's ``statCommand``/``mkdirCommand`` for ``path``."""
    setpriv = setpriv_template if use_setpriv else ""
    cmd = template.replace("$SETPRIV", setpriv)
    cmd = cmd.replace("$HOSTFILE", hostfile)
    cmd = cmd.replace("$UID", str(uid)).replace("$GID", str(gid))
    cmd = cmd.replace("$PATH", path)
    return inject_orte_tmpdir_base(cmd, hostfile)


def hostfile_slots(profile_data: Dict[str, Any], dm: Dict[str, Any]) -> tuple[int, int]:
    """(slots, max_slots): the request's when set and >= 0, else the profile's."""
    user = (dm.get("spec") or {}).get("userConfig") or {}
    slots = int(profile_data.get("slots", 8) or 0)
    max_slots = int(profile_data.get("maxSlots", 0) or 0)
    if isinstance(user.get("slots"), int) and user["slots"] >= 0:
        slots = user["slots"]
    if isinstance(user.get("maxSlots"), int) and user["maxSlots"] >= 0:
        max_slots = user["maxSlots"]
    return slots, max_slots


def hostfile_text(hosts: List[str], slots: int, max_slots: int) -> str:
    """One line per distinct host: ``host[ slots=N][ max_slots=M]`` (0 leaves a key out)."""
    lines, seen = [], set()
    for host in hosts:
        if host in seen:
            continue
        seen.add(host)
        line = host
        if slots > 0:
            line += " slots=%d" % slots
        if max_slots > 0:
            line += " max_slots=%d" % max_slots
        lines.append(line + "\n")
    return "".join(lines)


def write_hostfile(text: str, parent: Optional[str] = None) -> str:
    """Write ``<parent>/dm-XXXX/hostfile`` (a fresh private directory); returns its path."""
    directory = tempfile.mkdtemp(prefix="dm-", dir=parent or tempfile.gettempdir())
    path = os.path.join(directory, "hostfile")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def read_prebuilt_hosts(path: str) -> List[str]:
    """The first field of each line of mpi-operator's hostfile (``/etc/mpi/hostfile``)."""
    hosts = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            if fields:
                hosts.append(fields[0])
    return hosts
