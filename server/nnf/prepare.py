"""Destination preparation (nnf-dm's ``PrepareDestination``): stat and mkdir through the profile's commands.

With ``createDestDir``, nnf-dm stats the source and destination with the profile's
``statCommand`` (run by mpirun on the copy's hosts, as the user), works out the directory to
create (the destination, its parent for a file-to-file copy, and for a gfs2/xfs source below
``<rabbit>-<n>/`` that index-mount directory appended, so copies from several Rabbits fan in
side by side), and makes it with ``mkdirCommand``. The error texts are the reference's,
including its ``internal error: ...`` resource-error prefix.

The reference runs up to five one-rank ``mpirun`` launches for that, each a second or more
to start and stop. Here all the steps run in one launch (``PREP_SCRIPT``, run by the profile's
own launcher, e.g. ``mpirun ... --``, with each step's command exactly as the reference would
run it after the launcher) or in none, on this machine, when the server sees the source as
the copy's hosts do (``local_ok``: a node-local gfs2 copy on this Rabbit or a global Lustre
one, and the source exists here). Each step's exit code and output come back framed; the
reference's logic then runs on those recorded answers, so its decisions and error texts are
the reference's; a command it asks for that was not recorded simply runs then.

Commands run in worker threads with a timeout (killing their process group), never on the
event loop.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shlex
import signal
from typing import Any, Dict, List, Optional, Tuple

from copy_offload.server.drivers.errors import Internal
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


STEP_MARK = "@@copy-offload-step"
PREP_MODES = ("auto", "launch", "each", "local")

# $1 ENVIRONMENT, $2 1 if the destination ends in "/", $3 stat source, $4 stat destination,
# $5 $6 stat/mkdir of the directory for a file-to-file copy, $7 $8 the same otherwise ("" = skip).
# It mirrors the reference's choices only to know which directory to stat and make; the server
# judges every answer again with the reference's own logic.
PREP_SCRIPT = r"""T=$(mktemp -d) || exit 97
trap 'rm -rf "$T"' EXIT
step() {
    bash -c "$2" >"$T/o" 2>"$T/e"; rc=$?
    printf '@@copy-offload-step %s %s %s %s
' "$1" "$rc" "$(base64 -w0 <"$T/o")" "$(base64 -w0 <"$T/e")"
    return $rc
}
ftype() {
    t=$(tr '[:upper:]' '[:lower:]' <"$T/o")
    case $t in *directory*) return 1 ;; *file*) return 0 ;; esac
    [ "$1" = kind ] && [ "$t" = "symbolic link" ] && return 1
    return 2
}
step src "$3" || exit 0
ftype "$1"; s=$?
[ $s = 2 ] && exit 0
k=2
if [ $s = 0 ]; then
    if step dest "$4"; then ftype "$1"; d=$?; else d=3; fi
    if [ $d = 0 ] || { [ $d -ge 2 ] && [ "$2" = 0 ]; }; then k=1; fi
fi
if [ $k = 1 ]; then st=$5 mk=$6; else st=$7 mk=$8; fi
[ -n "$st" ] || exit 0
step stat$k "$st" && exit 0
grep -qi 'no such file or directory' "$T/o" "$T/e" && step mkdir$k "$mk"
exit 0
"""


def parse_steps(output: str) -> Tuple[Dict[str, Tuple[int, str, str]], str]:
    """The framed step answers in a launch's output, and the rest of the output."""
    steps: Dict[str, Tuple[int, str, str]] = {}
    rest: List[str] = []
    for line in output.splitlines(keepends=True):
        if not line.startswith(STEP_MARK + " "):
            rest.append(line)
            continue
        fields = (line.rstrip("\n").split(" ") + ["", ""])[1:5]
        try:
            steps[fields[0]] = (int(fields[1]), _b64(fields[2]), _b64(fields[3]))
        except ValueError:
            rest.append(line)
    return steps, "".join(rest)


def _b64(text: str) -> str:
    return base64.b64decode(text.encode("ascii"), validate=False).decode("utf-8", "replace") if text else ""


class DestinationPreparer:
    """``PrepareDestination`` for one request."""

    def __init__(self, kube: Kube, kinds: Kinds, processes: Processes, profile_data: Dict[str, Any], dm: Dict[str, Any],
                 hostfile: str, *, use_setpriv: bool, environment: str, timeout: Optional[float], mode: str = "auto",
                 local_ok: bool = False) -> None:
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
        self.mode = mode if mode in PREP_MODES else "auto"
        self.local_ok = local_ok
        self.launches = 0
        """Commands started (a launch each): 1 for a batched launch, 0 when run here."""
        self.ran_here = False
        self._recorded: Dict[str, Tuple[int, str, str]] = {}
        self._index: Optional[Tuple[str, Optional[CommandError]]] = None

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

    async def _exec(self, cmd: str) -> str:
        """The answer of ``cmd``: recorded by the batched launch, else run now."""
        if cmd in self._recorded:
            returncode, stdout, stderr = self._recorded[cmd]
            return command_result(cmd, returncode, stdout, stderr)
        self.launches += 1
        return await run_command(self.processes, cmd, self.timeout)

    async def stat(self, path: str) -> str:
        try:
            return await self._exec(self._cmd("statCommand", path))
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
        with_index = await self._index_mount_or_error()
        if self.mode != "each":
            await self._batch(with_index)
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

    # ----------------------------------------------------------------- one launch, or none

    def _split(self, template_key: str, path: str) -> Optional[Tuple[str, str]]:
        """(launcher, step): the profile command for ``path`` cut where ``$SETPRIV`` starts."""
        template = str(self.data.get(template_key) or "")
        if "$SETPRIV" not in template:
            return None
        head, tail = template.split("$SETPRIV", 1)
        setpriv = str(self.data.get("setprivCommand") or "")
        common = dict(uid=self.uid, gid=self.gid, hostfile=self.hostfile, use_setpriv=self.use_setpriv)
        launcher = build_stat_or_mkdir_command(head, setpriv, path=path, **common)
        step = build_stat_or_mkdir_command("$SETPRIV" + tail, setpriv, path=path, **common)
        return (launcher, step) if launcher + step == self._cmd(template_key, path) else None

    def _dest_dirs(self, index_mount: str) -> List[str]:
        """The directory the reference would make: for a file-to-file copy, and otherwise."""
        dirs = [clean(os.path.dirname(self.dest)), clean(self.dest)]
        if index_mount and not self.source.endswith(index_mount):
            dirs = [clean(os.path.join(d, index_mount)) for d in dirs]
        return dirs

    async def _batch(self, index_mount: Optional[str]) -> None:
        """Run every step in one launch (or here), recording each step's answer."""
        keys: List[Tuple[str, str, str]] = [("src", "statCommand", self.source), ("dest", "statCommand", self.dest)]
        if index_mount is not None:
            for n, path in zip(("1", "2"), self._dest_dirs(index_mount)):
                keys += [("stat" + n, "statCommand", path), ("mkdir" + n, "mkdirCommand", path)]
        split = [self._split(template, path) for _, template, path in keys]
        if any(part is None for part in split) or len({part[0] for part in split if part}) != 1:
            return  # a profile whose commands do not share one launcher: step by step, as the reference
        launcher = split[0][0] if split[0] else ""
        args = [self.environment, "1" if self.dest.endswith("/") else "0"] + [part[1] for part in split if part]
        args += [""] * (8 - len(args))
        here = self.mode == "local" or (self.mode == "auto" and self.local_ok
                                        and await asyncio.get_running_loop().run_in_executor(None, os.path.exists, self.source))
        if here:
            self.ran_here = True
            argv = ["/bin/bash", "-c", PREP_SCRIPT, "copy-offload-prep", *args]
        else:
            self.launches += 1
            script = "/bin/bash -c %s copy-offload-prep %s" % (shlex.quote(PREP_SCRIPT), " ".join(shlex.quote(a) for a in args))
            argv = ["bash", "-c", launcher + script]
        try:
            returncode, out, err = await self.processes.run(argv, self.timeout)
        except OSError:
            return  # step by step then; that path reports the failure in the reference's words
        steps, rest = parse_steps(out.decode("utf-8", "replace"))
        full = {key: self._cmd(template, path) for key, template, path in keys}
        for key, answer in steps.items():
            if key in full:
                self._recorded[full[key]] = answer
        if "src" not in steps:  # the launch itself failed: that is the first step's answer, as for the reference
            self._recorded[full["src"]] = (returncode or 1, rest, err.decode("utf-8", "replace"))

    async def _index_mount_or_error(self) -> Optional[str]:
        """The index-mount directory (looked up once), or None when looking it up failed."""
        try:
            return await self.index_mount_dir()
        except CommandError:
            return None

    async def index_mount_dir(self) -> str:
        if self._index is None:
            try:
                self._index = (await self._lookup_index_mount_dir(), None)
            except CommandError as exc:
                self._index = ("", exc)
        if self._index[1] is not None:
            raise self._index[1]
        return self._index[0]

    async def _lookup_index_mount_dir(self) -> str:
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
            await self._exec(cmd)
        except CommandError as exc:
            raise CommandError("data movement mkdir failed ('%s'): %s output: %s" % (cmd, exc, exc.stdout)) from None


def _internal(context: str, exc: Exception) -> Internal:
    return Internal("internal error: %s: %s" % (context, exc))
