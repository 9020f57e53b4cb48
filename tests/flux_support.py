"""Helpers for the Flux-side tests: Workflow and Secret objects, a recording handle, a loop.

The recording handle stands in for a Flux handle with the two methods the service uses
(``respond`` and ``respond_error``); the Kubernetes side is the real client against
tests/kube_double.py over HTTP.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from copy_offload.flux.config import ServiceConfig
from copy_offload.flux.runtime import Runtime
from kube_double import DWS, KubeDouble

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLWNvbnRhaW5lciJ9.c2lnbmF0dXJl"
UID = 1001
CO_DW = ["#DW jobdw type=gfs2 capacity=10GiB name=my-storage requires=copy-offload",
         "#DW container name=copyoff-container profile=copy-offload-default "
         "DW_JOB_my_storage=my-storage"]
PLAIN_DW = ["#DW jobdw type=xfs capacity=1GiB name=scratch"]
ENV = {"DW_JOB_my_storage": "/mnt/nnf/abc-0", "NNF_CONTAINER_PORTS": "5000",
       "NNF_CONTAINER_LAUNCHER": "rabbit-01"}


def workflow(jobid: int, *, state: str = "PreRun", ready: bool = True,
             status: str = "Completed", env: Optional[Dict[str, str]] = None,
             token: bool = True, userid: int = UID, dw: Optional[List[str]] = None,
             message: str = "", namespace: str = "default",
             version: str = "v1alpha7") -> Dict[str, Any]:
    """A Workflow object as nnf-sos leaves it (``fluxjob-<jobid>``)."""
    name = f"fluxjob-{jobid}"
    st: Dict[str, Any] = {"state": state, "ready": ready, "status": status,
                          "env": dict(ENV if env is None else env), "message": message}
    if token:
        st["workflowToken"] = {"secretName": f"{name}-token", "secretNamespace": namespace}
        st["requires"] = ["copy-offload", "container-auth"]
    return {
        "apiVersion": f"{DWS}/{version}", "kind": "Workflow",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"desiredState": state, "wlmID": "flux", "jobID": str(jobid), "userID": userid,
                 "groupID": userid, "dwDirectives": list(CO_DW if dw is None else dw)},
        "status": st,
    }


def token_secret(jobid: int, token: str = TOKEN, namespace: str = "default") -> Dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": f"fluxjob-{jobid}-token", "namespace": namespace},
            "data": {"token": base64.b64encode(token.encode()).decode()}}


def set_status(**fields: Any) -> Callable[[dict], None]:
    """A ``KubeDouble.modify`` function that updates status fields."""
    def fn(obj: dict) -> None:
        obj.setdefault("status", {}).update(fields)
        if "state" in fields:
            obj["spec"]["desiredState"] = fields["state"]
    return fn


@dataclass
class Msg:
    """A stand-in request message: only identity matters to the service."""

    tag: str


@dataclass
class RecordingHandle:
    """The replier side of a Flux handle: records every respond and respond_error."""

    replies: List[tuple] = field(default_factory=list)

    def respond(self, msg: Any, payload: Any = None) -> None:
        self.replies.append(("ok", msg, payload))

    def respond_error(self, msg: Any, errnum: int, text: str) -> None:
        self.replies.append(("error", msg, errnum, text))

    def for_msg(self, msg: Any) -> List[tuple]:
        return [r for r in self.replies if r[1] is msg]

    def one(self, msg: Any) -> tuple:
        got = self.for_msg(msg)
        assert len(got) == 1, f"expected one reply to {msg}, got {got}"
        return got[0]


def drive(rt: Any, until: Callable[[], bool], timeout: float = 5.0) -> float:
    """Run the runtime's queue (as the reactor would) until ``until()``; returns seconds taken."""
    t0 = time.monotonic()
    while not until():
        left = timeout - (time.monotonic() - t0)
        assert left > 0, "timed out driving the service"
        deadline = rt.next_deadline()
        wait = min(left, 0.05 if deadline is None else max(deadline - time.monotonic(), 0))
        rt.queue.wait(wait)
        rt.run_queued()
    return time.monotonic() - t0


class Service:
    """One service process's worth of state: a Runtime against the double, with a recording handle
    and a log."""

    def __init__(self, kube: KubeDouble, tmp_path: Any, **cfg: Any) -> None:
        path = kube.write_kubeconfig(str(tmp_path / "kubeconfig"))
        base = dict(kubeconfig=path, prepare_timeout=5.0, backoff_min=0.05, backoff_max=0.2,
                    watch_timeout=30, request_timeout=5.0)
        base.update(cfg)
        self.cfg = ServiceConfig(**base)
        self.handle = RecordingHandle()
        self.logs: List[Tuple[int, str]] = []
        self.rt = Runtime(self.cfg, self.handle, log=lambda lvl, text: self.logs.append(
            (lvl, text)))
        self.logic = self.rt.logic
        self.closed = False

    def synced(self, timeout: float = 5.0) -> None:
        drive(self.rt, lambda: self.logic.synced, timeout)

    def prepare(self, jobid: int, *, dw: Any = None, owner: int = UID,
                from_owner: bool = True) -> Msg:
        msg = Msg(f"prepare-{jobid}")
        payload = {"id": jobid, "userid": owner}
        if dw is not None:
            payload["dw"] = dw
        self.logic.prepare(msg, payload, from_owner=from_owner)
        return msg

    def wait_reply(self, msg: Msg, timeout: float = 5.0) -> tuple:
        drive(self.rt, lambda: bool(self.handle.for_msg(msg)), timeout)
        return self.handle.one(msg)

    def settle(self) -> None:
        """Run whatever the threads have posted so far."""
        self.rt.queue.wait(0.1)
        self.rt.run_queued()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.rt.close()


def env_of(output: str) -> Dict[str, str]:
    """``printenv`` output as a dict."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def assert_job_got_variables(printenv_output: str, jobid: int, token: str) -> None:
    """What a copy-offload job's tasks must see: the token, the Workflow, and its status.env."""
    env = env_of(printenv_output)
    assert env["DW_WORKFLOW_TOKEN"] == token
    assert env["DW_WORKFLOW_NAME"] == f"fluxjob-{jobid}"
    assert env["DW_WORKFLOW_NAMESPACE"] == "default"
    for key, value in ENV.items():
        assert env[key] == value


# -- memcheck logs (the valgrind mode of the real-Flux tier) -------------------------------

OUR_CODE = ("copy-offload.c", "copy-offload-env.c", "copy-offload.so", "copy-offload-env.so")


def memcheck_errors(text: str, ours: Tuple[str, ...] = OUR_CODE) -> List[str]:
    """The error reports in one valgrind log whose stack (or allocation/free stack) names our
    plugins; each is returned as its block of lines.

    A report starts at a line ``==PID== <what>`` that is not a stack frame and runs to the next
    blank ``==PID==`` line; ``HEAP SUMMARY``/``ERROR SUMMARY`` and friends are not reports.
    """
    blocks: List[List[str]] = []
    current: List[str] = []
    for line in text.splitlines():
        if not line.startswith("=="):
            continue
        body = line.split("==", 2)[-1].strip()
        if not body:
            if current:
                blocks.append(current)
            current = []
            continue
        current.append(line)
    if current:
        blocks.append(current)
    header_words = ("Memcheck,", "Copyright", "Using Valgrind", "Command:", "Parent PID",
                    "HEAP SUMMARY", "LEAK SUMMARY", "ERROR SUMMARY", "For lists of",
                    "For counts of", "in use at exit", "total heap usage", "All heap blocks",
                    "Rerun with", "To see them", "Warning: set address range perms")
    errors = []
    for block in blocks:
        head = block[0].split("==", 2)[-1].strip()
        if any(head.startswith(w) for w in header_words):
            continue
        if any(name in line for line in block for name in ours):
            errors.append("\n".join(block))
    return errors


# A local-driver profile whose copy stays running until ``<source>.go`` exists: tests decide
# when a copy ends instead of guessing how long a big one takes.
GATE_PROFILE = ('[profiles.gate]\ncommand = "sh -c \'while [ ! -e \\"$0.go\\" ]; do sleep 0.05; '
                'done; exec cp \\"$0\\" \\"$1\\"\' $SRC $DEST"\n')


def write_gate_profiles(directory: str) -> str:
    """A --profiles file with the ``gate`` profile; returns its path."""
    path = os.path.join(directory, "profiles.toml")
    with open(path, "w") as fh:
        fh.write(GATE_PROFILE)
    return path
