"""A DWS Workflow as the service sees it: the few fields it reads, taken from the raw object.

flux-coral2 names a job's Workflow ``fluxjob-<decimal jobid>``. The watch cache keeps one
WorkflowView per such name, so memory stays small even with thousands of jobs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

NAME_PREFIX = "fluxjob-"
_NAME = re.compile(r"^fluxjob-(\d+)$")

PRERUN = "PreRun"
AFTER_PRERUN = frozenset({"PostRun", "DataOut", "Teardown"})
STATUS_ERROR = "Error"


def workflow_name(jobid: int) -> str:
    """The Workflow name flux-coral2 gives job ``jobid``."""
    return f"{NAME_PREFIX}{jobid}"


def jobid_of(name: str) -> Optional[int]:
    """The job id in a ``fluxjob-<id>`` name, or None for any other name."""
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class WorkflowView:
    """The parts of a Workflow the service needs; built from the raw dict by from_raw."""

    name: str
    namespace: str
    state: str = ""
    ready: bool = False
    status: str = ""
    message: str = ""
    env: Tuple[Tuple[str, str], ...] = ()
    token_ref: Optional[Tuple[str, str]] = None  # (secretName, secretNamespace)
    user_id: Optional[int] = None
    directives: Tuple[str, ...] = ()
    requires: Tuple[str, ...] = ()
    resource_version: str = ""

    @classmethod
    def from_raw(cls, obj: Dict[str, Any]) -> WorkflowView:
        """Read a Workflow object (a dict as the API returns it); odd fields are ignored."""
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        env = status.get("env") or {}
        env_items = tuple(sorted((str(k), v) for k, v in env.items() if isinstance(v, str))) \
            if isinstance(env, dict) else ()
        tok = status.get("workflowToken") or None
        token_ref = None
        if isinstance(tok, dict) and tok.get("secretName"):
            token_ref = (str(tok["secretName"]),
                         str(tok.get("secretNamespace") or meta.get("namespace") or ""))
        uid = spec.get("userID")
        directives = spec.get("dwDirectives") or []
        req = status.get("requires") or []
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            state=str(status.get("state") or ""),
            ready=status.get("ready") is True,
            status=str(status.get("status") or ""),
            message=str(status.get("message") or ""),
            env=env_items,
            token_ref=token_ref,
            user_id=uid if isinstance(uid, int) and not isinstance(uid, bool) else None,
            directives=tuple(d for d in directives if isinstance(d, str))
            if isinstance(directives, list) else (),
            requires=tuple(r for r in req if isinstance(r, str)) if isinstance(req, list) else (),
            resource_version=str(meta.get("resourceVersion") or ""),
        )

    @property
    def at_prerun_ready(self) -> bool:
        return self.state == PRERUN and self.ready

    @property
    def failed(self) -> bool:
        return self.status == STATUS_ERROR

    @property
    def past_prerun(self) -> bool:
        return self.state in AFTER_PRERUN

    def env_dict(self) -> Dict[str, str]:
        return dict(self.env)

    def describe(self) -> str:
        """A short state line for logs and errors (never the token)."""
        parts = [f"state={self.state or '?'}", f"ready={str(self.ready).lower()}"]
        if self.status:
            parts.append(f"status={self.status}")
        return " ".join(parts)


def views_by_name(items: List[Dict[str, Any]]) -> Dict[str, WorkflowView]:
    """Index a list result by name, keeping only ``fluxjob-<id>`` Workflows."""
    out = {}
    for obj in items:
        view = WorkflowView.from_raw(obj)
        if jobid_of(view.name) is not None:
            out[view.name] = view
    return out
