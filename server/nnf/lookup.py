"""The submit path of the reference server: from a copy request to an NnfDataMovement and its hosts.

Each step reads Kubernetes through ``Kube`` and fails with the reference's error text as
``Internal(text)`` (the server answers it as a 500 with that body). The order of the checks is the
reference's, so the first problem reported is the same one nnf-dm's server would report.
"""

from __future__ import annotations

import asyncio
import posixpath
import random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from copy_offload.client.wire import CopyRequest
from copy_offload.server.drivers.errors import Internal
from copy_offload.server.nnf.command import read_prebuilt_hosts
from copy_offload.server.nnf.kube import Kube, KubeError, KubeNotFound, Res

WF_NAME = "dataworkflowservices.github.io/workflow.name"
WF_NAMESPACE = "dataworkflowservices.github.io/workflow.namespace"
WF_UID = "dataworkflowservices.github.io/workflow.uid"
OWNER_KIND = "dataworkflowservices.github.io/owner.kind"
OWNER_NAME = "dataworkflowservices.github.io/owner.name"
OWNER_NAMESPACE = "dataworkflowservices.github.io/owner.namespace"
OWNER_UID = "dataworkflowservices.github.io/owner.uid"
DIRECTIVE_INDEX = "nnf.cray.hpe.com/directive_index"
TEARDOWN_STATE = "nnf.cray.hpe.com/teardown_state"
INITIATOR = "dm.cray.hpe.com/initiator"

DM_NAMESPACE = "nnf-dm-system"
PROFILE_NAMESPACE = "nnf-system"
NAME_BASE = "nnf-copy-offload-"
NODE_NAME_BASE = "nnf-copy-offload-node-"
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the API server's generateName alphabet

# CRD defaults of NnfDataMovementProfile.data, which a real API server fills in.
PROFILE_DEFAULTS = {
    "default": False,
    "slots": 8,
    "maxSlots": 0,
    "logStdout": False,
    "storeStdout": False,
    "progressIntervalSeconds": 5,
    "createDestDir": True,
    "statCommand": "mpirun --allow-run-as-root -np 1 --hostfile $HOSTFILE -- $SETPRIV stat --cached never -c '%F' $PATH",
    "mkdirCommand": "mpirun --allow-run-as-root -np 1 --hostfile $HOSTFILE -- $SETPRIV mkdir -p $PATH",
    "setprivCommand": "setpriv --euid $UID --egid $GID --clear-groups",
}


@dataclass
class Kinds:
    """The resource types at the API versions found at startup."""

    workflows: Res
    clientmounts: Res
    systemconfigurations: Res
    lustrefilesystems: Res
    nnfdatamovements: Res
    nnfdatamovementprofiles: Res
    nnfnodes: Res
    nnfnodestorages: Res
    nnfstorages: Res
    pods: Res

    @classmethod
    def at(cls, nnf: str, dws: str, lus: str) -> Kinds:
        n, d, lg = "nnf.cray.hpe.com", "dataworkflowservices.github.io", "lus.cray.hpe.com"
        return cls(
            workflows=Res(d, dws, "workflows"),
            clientmounts=Res(d, dws, "clientmounts"),
            systemconfigurations=Res(d, dws, "systemconfigurations"),
            lustrefilesystems=Res(lg, lus, "lustrefilesystems"),
            nnfdatamovements=Res(n, nnf, "nnfdatamovements"),
            nnfdatamovementprofiles=Res(n, nnf, "nnfdatamovementprofiles"),
            nnfnodes=Res(n, nnf, "nnfnodes"),
            nnfnodestorages=Res(n, nnf, "nnfnodestorages"),
            nnfstorages=Res(n, nnf, "nnfstorages"),
            pods=Res("", "v1", "pods"),
        )


def fail(text: str) -> Internal:
    return Internal(text)


def profile_data(profile: Dict[str, Any]) -> Dict[str, Any]:
    data = dict(PROFILE_DEFAULTS)
    data.update({k: v for k, v in (profile.get("data") or {}).items() if v is not None})
    return data


def random_name(prefix: str) -> str:
    return prefix + "".join(random.choice(_NAME_CHARS) for _ in range(5))


def _device_reference(mount: Dict[str, Any]) -> Optional[Tuple[Tuple[str, ...], int]]:
    """A comparable form of ``device.deviceReference`` (Go struct equality), or None."""
    ref = (mount.get("device") or {}).get("deviceReference")
    if not isinstance(ref, dict):
        return None
    obj = ref.get("objectReference") or {}
    keys = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    return tuple(str(obj.get(k) or "") for k in keys), int(ref.get("data") or 0)


class Planner:
    """Reads what a request needs from Kubernetes and builds the NnfDataMovement."""

    def __init__(self, kube: Kube, kinds: Kinds, *, workflow_name: str, workflow_namespace: str, node_name: str,
                 mpi_hostfile: str, reads: Any = None) -> None:
        self.api = kube  # the Workflow, always from the API server: it must be PreRun/Completed now
        self.kube = reads if reads is not None else kube  # everything else (a ``CachedReads`` or ``Kube``)
        self.kinds = kinds
        self.workflow_name = workflow_name
        self.workflow_namespace = workflow_namespace
        self.node_name = node_name
        self.mpi_hostfile = mpi_hostfile

    @property
    def workflow_labels(self) -> Dict[str, str]:
        return {WF_NAME: self.workflow_name, WF_NAMESPACE: self.workflow_namespace}

    async def workflow(self) -> Dict[str, Any]:
        """the Workflow, which must be PreRun/Completed."""
        wf = await self.api.get(self.kinds.workflows, self.workflow_namespace, self.workflow_name)
        status = wf.get("status") or {}
        if status.get("state") != "PreRun" or status.get("status") != "Completed":
            raise fail("workflow must be in 'PreRun' state and 'Completed' status")
        return wf

    async def compute_mount(self, request: CopyRequest) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """the compute's ClientMount and the mount whose mountPath prefixes the source."""
        mounts = await self.kube.list(self.kinds.clientmounts, request.computeName, self.workflow_labels)
        if not mounts:
            raise fail("no client mounts found for node '%s'" % request.computeName)
        for cm in mounts:
            for mount in (cm.get("spec") or {}).get("mounts") or []:
                if request.sourcePath.startswith(str(mount.get("mountPath") or "")):
                    device = mount.get("device") or {}
                    if device.get("deviceReference") is None and device.get("type") != "lustre":
                        meta = cm.get("metadata") or {}
                        raise fail("ClientMount %s/%s: Source path '%s' does not have device reference"
                                   % (meta.get("namespace"), meta.get("name"), request.sourcePath))
                    return cm, mount
        raise fail("source path not found in list of client mounts: %s" % request.sourcePath)

    async def rabbit_for(self, compute: str) -> str:
        """the Rabbit whose ``computesAccess`` lists ``compute`` ("" when none does)."""
        try:
            sc = await self.kube.get(self.kinds.systemconfigurations, "default", "default")
        except KubeError as exc:
            raise fail("failed to retrieve system configuration: %s" % exc) from None
        for node in (sc.get("spec") or {}).get("storageNodes") or []:
            for access in node.get("computesAccess") or []:
                if access.get("name") == compute:
                    return str(node.get("name") or "")
        return ""

    async def rabbit_source(self, request: CopyRequest, mount: Dict[str, Any], rabbit: str) -> str:
        """the source path as the Rabbit sees it."""
        mounts = await self.kube.list(self.kinds.clientmounts, rabbit or None, self.workflow_labels)
        if not mounts:
            raise fail("no client mounts found for node '%s'" % rabbit)
        wanted = _device_reference(mount)
        if wanted is not None:  # the reference dereferences a nil pointer here; we report it
            for cm in mounts:
                for rmount in (cm.get("spec") or {}).get("mounts") or []:
                    if _device_reference(rmount) == wanted:
                        relative = request.sourcePath[len(str(mount.get("mountPath") or "")):]
                        return str(rmount.get("mountPath") or "") + relative
        raise fail("initiator not found in list of client mounts: %s" % request.computeName)

    async def lustre_filesystem(self, dest: str) -> Dict[str, Any]:
        """the first LustreFileSystem whose mountRoot contains ``dest``."""
        if not dest.startswith("/"):
            raise fail("destination must be an absolute path")
        try:
            filesystems = await self.kube.list(self.kinds.lustrefilesystems)
        except KubeError as exc:
            raise fail("unable to list LustreFileSystem resources: %s" % exc) from None
        if not filesystems:
            raise fail("no LustreFileSystem resources found")
        probe = dest if dest.endswith("/") else dest + "/"
        for fs in filesystems:
            root = str((fs.get("spec") or {}).get("mountRoot") or "")
            if not root.endswith("/"):
                root += "/"
            if probe.startswith(root):
                return fs
        raise fail("unable to find a LustreFileSystem resource matching %s" % dest)

    async def profile(self, name: str) -> Dict[str, Any]:
        """The named NnfDataMovementProfile, or the single default one, from ``nnf-system``."""
        if not name:
            profiles = await self.kube.list(self.kinds.nnfdatamovementprofiles, PROFILE_NAMESPACE)
            found = [p["metadata"]["name"] for p in profiles if (p.get("data") or {}).get("default")]
            if not found:
                raise fail("unable to find a default NnfDataMovementProfile to use")
            if len(found) > 1:
                raise fail("more than one default NnfDataMovementProfile found; unable to pick one: [%s]" % " ".join(found))
            name = found[0]
        try:
            return await self.kube.get(self.kinds.nnfdatamovementprofiles, PROFILE_NAMESPACE, name)
        except KubeError:
            raise fail("unable to retrieve NnfDataMovementProfile: %s" % name) from None

    async def build(self, request: CopyRequest) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """the NnfDataMovement body (not yet created) and the chosen profile."""
        wf = await self.workflow()
        cm, mount = await self.compute_mount(request)
        rabbit = await self.rabbit_for(request.computeName)
        fstype = mount.get("type")
        device_ref = ((mount.get("device") or {}).get("deviceReference") or {}).get("objectReference") or {}
        labels = {INITIATOR: request.computeName}
        if fstype == "lustre":
            source = await self.rabbit_source(request, mount, rabbit)
            cm_labels = (cm.get("metadata") or {}).get("labels")
            meta = cm.get("metadata") or {}
            if not cm_labels:
                raise fail("unable to find labels on compute ClientMount, namespaces=%s, name=%s" % (meta.get("namespace"), meta.get("name")))
            if DIRECTIVE_INDEX not in cm_labels:
                raise fail("unable to find directive index label on compute ClientMount, namespace=%s name=%s"
                           % (meta.get("namespace"), meta.get("name")))
            labels[DIRECTIVE_INDEX] = cm_labels[DIRECTIVE_INDEX]
            lustre = await self.lustre_filesystem(request.destinationPath)
            lmeta = lustre.get("metadata") or {}
            namespace, prefix = DM_NAMESPACE, NAME_BASE
            destination = {
                "path": request.destinationPath,
                "storageReference": {"kind": "LustreFileSystem", "namespace": lmeta.get("namespace", ""), "name": lmeta.get("name", "")},
            }
        elif fstype == "gfs2":
            source = await self.rabbit_source(request, mount, rabbit)
            if not rabbit:  # the reference would try to create in namespace ""
                raise fail("compute node '%s' has no Rabbit in SystemConfiguration default/default" % request.computeName)
            namespace, prefix = rabbit, NODE_NAME_BASE
            destination = {"path": request.destinationPath}
        else:
            raise fail("filesystem not supported")
        profile = await self.profile(request.dmProfile)
        spec: Dict[str, Any] = {
            "source": {"path": source, "storageReference": dict(device_ref)},
            "destination": destination,
            "profileReference": {"kind": "NnfDataMovementProfile", "name": profile["metadata"]["name"],
                                 "namespace": profile["metadata"].get("namespace", PROFILE_NAMESPACE)},
        }
        wf_spec, wf_meta = wf.get("spec") or {}, wf.get("metadata") or {}
        if wf_spec.get("userID"):
            spec["userId"] = int(wf_spec["userID"])
        if wf_spec.get("groupID"):
            spec["groupId"] = int(wf_spec["groupID"])
        user: Dict[str, Any] = {"dryrun": request.dryrun, "logStdout": request.logStdout, "storeStdout": request.storeStdout}
        if request.mpirunOptions:
            user["mpirunOptions"] = request.mpirunOptions
        if request.dcpOptions:
            user["dcpOptions"] = request.dcpOptions
        if request.slots >= 0:
            user["slots"] = request.slots
        if request.maxSlots >= 0:
            user["maxSlots"] = request.maxSlots
        spec["userConfig"] = user
        uid = str(wf_meta.get("uid") or "")
        labels.update({
            WF_NAME: str(wf_meta.get("name") or self.workflow_name),
            WF_NAMESPACE: str(wf_meta.get("namespace") or self.workflow_namespace),
            WF_UID: uid,
            OWNER_KIND: "Workflow",
            OWNER_NAME: str(wf_meta.get("name") or self.workflow_name),
            OWNER_NAMESPACE: str(wf_meta.get("namespace") or self.workflow_namespace),
            OWNER_UID: uid,
            TEARDOWN_STATE: "PostRun",
        })
        dm = {
            "apiVersion": "%s/%s" % (self.kinds.nnfdatamovements.group, self.kinds.nnfdatamovements.version),
            "kind": "NnfDataMovement",
            "metadata": {"generateName": prefix, "namespace": namespace, "labels": labels},
            "spec": spec,
        }
        return dm, profile

    async def storage_nodes(self, dm: Dict[str, Any]) -> List[str]:
        """``GetStorageNodeNames``: ``localhost`` for node-local copies, else the OST Rabbits."""
        spec = dm["spec"]
        src_ref = (spec.get("source") or {}).get("storageReference") or {}
        if dm["metadata"]["namespace"] == self.node_name or src_ref.get("kind") == "NnfNodeStorage":
            return ["localhost"]
        dst_ref = (spec.get("destination") or {}).get("storageReference") or {}
        if src_ref.get("kind") == "NnfStorage":
            ref = src_ref
        elif dst_ref.get("kind") == "NnfStorage":
            ref = dst_ref
        else:
            raise fail("Neither source or destination is of NNF Storage type")
        try:
            storage = await self.kube.get(self.kinds.nnfstorages, ref.get("namespace", ""), ref.get("name", ""))
        except KubeNotFound as exc:
            raise fail("NNF Storage not found: %s" % exc) from None
        sspec = storage.get("spec") or {}
        if sspec.get("fileSystemType") != "lustre":
            raise fail("Unsupported storage type %s" % (sspec.get("fileSystemType") or ""))
        target = None
        for allocation in sspec.get("allocationSets") or []:
            if allocation.get("targetType") == "ost":
                target = allocation
        if target is None:
            raise fail("ost allocation set not found")
        return [str(node.get("name") or "") for node in target.get("nodes") or []]

    async def worker_hosts(self, nodes: List[str], dm: Dict[str, Any]) -> List[str]:
        """``GetCopyOffloadWorkerHostnames``: the mpirun hosts."""
        if nodes and nodes[0] == "localhost":
            ref = (dm["spec"].get("source") or {}).get("storageReference") or {}
            if ref.get("kind") != "NnfNodeStorage":
                raise fail("copy offload source storage reference is not of type NnfNodeStorage")
            rabbit = str(ref.get("namespace") or "")
            pods = await self.kube.list(
                self.kinds.pods, self.workflow_namespace,
                {"training.kubeflow.org/job-name": self.workflow_name, "training.kubeflow.org/job-role": "worker"},
                fields="spec.nodeName=%s" % rabbit,
            )
            if not pods:
                raise fail("could not find any worker pods for node %s" % rabbit)
            if len(pods) != 1:
                raise fail("found more than one worker pod for node %s - there should only be one" % rabbit)
            pod = pods[0]["metadata"]["name"]
            return ["%s.%s.%s.svc.cluster.local" % (pod, self.workflow_name, self.workflow_namespace)]
        try:
            return await _in_thread(read_prebuilt_hosts, self.mpi_hostfile)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise fail("could not get pull hosts from mpi-operator created hostfile: open %s: %s" % (self.mpi_hostfile, reason)) from None


async def _in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def dest_base(path: str) -> str:
    """Go's ``filepath.Base``."""
    stripped = path.rstrip("/")
    if not stripped:
        return "/" if path else "."
    return posixpath.basename(stripped)


def clean(path: str) -> str:
    """Go's ``filepath.Clean``."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned
