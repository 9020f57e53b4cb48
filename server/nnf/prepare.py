"""Destination preparation (spec §3.7): stat and mkdir through the profile's commands.

With ``createDestDir``, nnf-dm stats the source and destination with the profile's
``statCommand`` (run by mpirun on the copy's hosts, as the user), works out the directory to
create (the destination, its parent for a file-to-file copy, and for a gfs2/xfs source below
``<rabbit>-<n>/`` that index-mount directory appended, so copies from several Rabbits fan in
side by side), and makes it with ``mkdirCommand``. The error texts are the reference's,
including its ``internal error: ...`` resource-error prefix.

Commands run in worker threads with a timeout (killing their process group), never on the
event loop.
"""

from __future__ import annotations

import os
import re
import signal
from typing import Any, Dict, Optional

from copy_offload.client.wire import WireError
from copy_offload.server.nnf.command import build_stat_or_mkdir_command
from copy_offload.server.nnf.kube import Kube, KubeNotFound
from copy_offload.server.nnf.lookup import Kinds, clean, dest_base
from copy_offload.server.nnf.process import Processes
from copy_offload.server.nnf.progress import explain_output


class CommandError(Exception):
    """A prep command failed; the text is nnf-sos ``command.Run``'s."""

    def __init__(self, text: str, stdout: str = "") -> None:
        super().__init__(text)
        self.stdout = stdout


def exit_text(returncode: Optional[int]) -> str:
    """Go's ``*exec.ExitError`` text for a return code: ``exit status 1``, ``signal: killed``."""
    if returncode is None:
        return "exec: not started"
    if returncode >= 0:
        return "exit status %d" % returncode
    try:
        name = signal.strsignal(-returncode) or "signal %d" % -returncode
    except ValueError:
        name = "signal %d" % -returncode
    return "signal: " + name.lower()


async def run_command(processes: Processes, cmd: str, timeout: Optional[float]) -> str:
    """``bash -c cmd``; stdout on success, ``CommandError`` with nnf-sos' text otherwise."""
    try:
        returncode, out, err = await processes.run(["bash", "-c", cmd], timeout)
    except OSError as exc:
        raise CommandError("command: %s - stderr:  - stdout:  - error: fork/exec bash: %s" % (cmd, exc.strerror)) from None
    return command_result(cmd, returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


def command_result(cmd: str, returncode: int, stdout: str, stderr: str) -> str:
    """nnf-sos ``command.Run``'s answer: stdout, or a ``CommandError`` naming the command and
    its output (external output cut to the lines that explain the failure)."""
    if returncode != 0:
        raise CommandError("command: %s - stderr: %s - stdout: %s - error: %s"
                           % (cmd, explain_output(stderr), explain_output(stdout), exit_text(returncode)), stdout)
    return stdout


class DestinationPreparer:
    """``PrepareDestination`` for one request."""

    def __init__(self, kube: Kube, kinds: Kinds, processes: Processes, profile_data: Dict[str, Any], dm: Dict[str, Any],
                 hostfile: str, *, use_setpriv: bool, environment: str, timeout: Optional[float]) -> None:
        self.kube = kube
        self.processes = processes
        self.kinds = kinds
        self.data = profile_data
        self.dm = dm
        self.hostfile = hostfile
        self.use_setpriv = use_setpriv
        self.environment = environment
        self.timeout = timeout
        spec = dm["spec"]
        self.uid = int(spec.get("userId") or 0)
        self.gid = int(spec.get("groupId") or 0)

    @property
    def source(self) -> str:
        return str(self.dm["spec"]["source"].get("path") or "")

    @property
    def dest(self) -> str:
        return str(self.dm["spec"]["destination"].get("path") or "")

    def _cmd(self, template_key: str, path: str) -> str:
        return build_stat_or_mkdir_command(
            str(self.data.get(template_key) or ""), str(self.data.get("setprivCommand") or ""),
            uid=self.uid, gid=self.gid, hostfile=self.hostfile, path=path, use_setpriv=self.use_setpriv,
        )

    async def stat(self, path: str) -> str:
        try:
            return await run_command(self.processes, self._cmd("statCommand", path), self.timeout)
        except CommandError as exc:
            raise CommandError("could not stat path ('%s'): %s" % (path, exc)) from None

    async def is_dir(self, path: str) -> bool:
        output = await self.stat(path)
        lowered = output.lower()
        if "directory" in lowered:
            return True
        if "file" in lowered:
            return False
        if self.environment == "kind" and output == "symbolic link\n":
            return True
        raise CommandError("could not determine file type of path ('%s'): %s" % (path, output))

    async def source_is_file(self) -> bool:
        return not await self.is_dir(self.source)

    async def dest_is_file(self) -> bool:
        try:
            return not await self.is_dir(self.dest)
        except CommandError:
            return not self.dest.endswith("/")

    async def run(self) -> None:
        """Prepare the destination; may append the index-mount directory to the DM's destination."""
        if not self.data.get("createDestDir"):
            return
        try:
            dest_dir = self.dest
            if await self.source_is_file() and await self.dest_is_file():
                dest_dir = os.path.dirname(self.dest)
            dest_dir = clean(dest_dir)
        except CommandError as exc:
            raise _internal("could not determine source type", exc) from None
        try:
            index_mount = await self.index_mount_dir()
        except CommandError as exc:
            raise _internal("could not determine index mount directory", exc) from None
        if index_mount:
            try:
                dest_dir = await self.handle_index_mount(dest_dir, index_mount)
            except CommandError as exc:
                raise _internal("could not handle index mount directory", exc) from None
        try:
            await self.create_dir(dest_dir)
        except CommandError as exc:
            raise _internal("could not create destination directory", exc) from None

    async def index_mount_dir(self) -> str:
        ref = self.dm["spec"]["source"].get("storageReference") or {}
        kind = ref.get("kind")
        if kind == "NnfStorage":
            res = self.kinds.nnfstorages
        elif kind == "NnfNodeStorage":
            res = self.kinds.nnfnodestorages
        else:
            return ""
        try:
            storage = await self.kube.get(res, ref.get("namespace", ""), ref.get("name", ""))
        except KubeNotFound as exc:
            raise CommandError("could not retrieve %s for checking index mounts: %s" % (kind, exc)) from None
        if (storage.get("spec") or {}).get("fileSystemType") not in ("gfs2", "xfs"):
            return ""
        namespace = self.dm["metadata"]["namespace"]
        pattern = r"(%s-\d+)(/|$)" % namespace  # the reference does not escape the namespace
        match = re.search(pattern, self.source)
        if match is None:
            raise CommandError("could not extract index mount directory from source path: %s. Looking for pattern '%s'"
                               % (self.source, pattern))
        return "" if self.source.endswith(match.group(1)) else match.group(1)

    async def handle_index_mount(self, dest_dir: str, index_mount: str) -> str:
        if self.source.endswith(index_mount):
            return dest_dir
        index_dir = clean(os.path.join(dest_dir, index_mount))
        new_dest = index_dir
        if await self.source_is_file() and await self.dest_is_file():
            new_dest = clean(os.path.join(index_dir, dest_base(self.dest)))
        if self.dest.endswith("/"):
            new_dest += "/"
        self.dm["spec"]["destination"]["path"] = new_dest
        return index_dir

    async def create_dir(self, path: str) -> None:
        try:
            await self.stat(path)
            return
        except CommandError as exc:
            if "no such file or directory" not in str(exc).lower():
                raise
        cmd = self._cmd("mkdirCommand", path)
        try:
            await run_command(self.processes, cmd, self.timeout)
        except CommandError as exc:
            raise CommandError("data movement mkdir failed ('%s'): %s output: %s" % (cmd, exc, exc.stdout)) from None


def _internal(context: str, exc: Exception) -> WireError:
    return WireError(500, "internal error: %s: %s" % (context, exc))
