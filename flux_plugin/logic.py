"""The copy-offload service's logic: which job gets which variables, and when.

A plain class that never sees the Flux handle. It runs on one thread (the reactor) and is fed
by three kinds of calls:

- requests: ``prepare`` (from the jobtap plugin at job.state.run), ``forget`` (job inactive),
  ``stats``; replies go out through the injected ``replier`` (``respond(msg, payload)`` and
  ``respond_error(msg, errno, text)``, the Flux handle's own method names);
- the Workflow watch (``on_synced``, ``on_event``, ``on_lost``), posted by the watcher thread;
- Secret reads finishing, posted by the TokenReader.

A job's answer comes from the watch cache: the Workflow ``fluxjob-<id>`` at PreRun with
``ready: true`` gives ``DW_WORKFLOW_NAME``, ``DW_WORKFLOW_NAMESPACE``, the allowed
``status.env`` keys and, when ``status.workflowToken`` is set, ``DW_WORKFLOW_TOKEN`` from one
Secret GET. Until then the request waits, with a deadline; a Workflow in ``status: Error`` or
past PreRun fails it at once; a Workflow that does not exist once the cache is in sync is
waited for from the watch for ``workflow-grace`` seconds (the watch may lag, or flux-coral2 may
be re-creating it after a restart), then answered (an error only for a job that asked for
copy-offload). Tokens are kept only until the job becomes inactive, and never logged.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from copy_offload.flux.config import ServiceConfig, allowed_env, config_summary
from copy_offload.flux.directives import COPY_OFFLOAD, DirectiveError, asks_copy_offload
from copy_offload.flux.kube import KubeError
from copy_offload.flux.vocabulary import (
    NAME_VAR,
    NAMESPACE_VAR,
    TOKEN_VAR,
    TOPIC_PREPARE,
    VARIABLES,
)
from copy_offload.flux.workflow import WorkflowView, jobid_of, views_by_name, workflow_name

REDACTED = "<redacted>"

Log = Callable[[int, str], None]
LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG = 3, 4, 6, 7


def redact(variables: Dict[str, str]) -> Dict[str, str]:
    """A copy of a job's variables that is safe to show or log."""
    return {k: (REDACTED if k == TOKEN_VAR else v) for k, v in variables.items()}


class BadRequest(ValueError):
    """A malformed prepare/forget payload."""


@dataclass
class Pending:
    """One prepare request waiting for its Workflow."""

    msg: Any
    jobid: int
    owner: int
    name: str
    asks: bool
    deadline: float
    t_request: float
    grace_end: float = 0.0
    seen: bool = False  # its Workflow was in the cache once (so a later absence is a deletion)
    done: bool = False


@dataclass
class _Read:
    """A token Secret GET in flight, and the requests waiting for it."""

    view: WorkflowView
    waiters: List[Pending] = field(default_factory=list)
    t_event: Optional[float] = None


def parse_prepare(payload: Any) -> Tuple[int, int, Any]:
    """(jobid, owner userid, dw attribute or None) from a prepare payload."""
    if not isinstance(payload, dict):
        raise BadRequest("payload must be a JSON object")
    jobid, owner = payload.get("id"), payload.get("userid")
    if not isinstance(jobid, int) or isinstance(jobid, bool) or jobid <= 0:
        raise BadRequest("'id' must be a positive integer job id")
    if not isinstance(owner, int) or isinstance(owner, bool) or owner < 0:
        raise BadRequest("'userid' must be a non-negative integer")
    return jobid, owner, payload.get("dw")


def parse_jobid(payload: Any) -> int:
    if not isinstance(payload, dict):
        raise BadRequest("payload must be a JSON object")
    jobid = payload.get("id")
    if not isinstance(jobid, int) or isinstance(jobid, bool) or jobid <= 0:
        raise BadRequest("'id' must be a positive integer job id")
    return jobid


class TokenService:
    """The state of the service; every method runs on the reactor thread."""

    def __init__(self, cfg: ServiceConfig, replier: Any, *,
                 clock: Callable[[], float] = time.monotonic, log: Optional[Log] = None) -> None:
        self.cfg = cfg
        self._replier = replier
        self._clock = clock
        self._log = log or (lambda level, text: None)
        self._reader: Any = None
        self._watch_counters: Callable[[], Dict[str, Any]] = dict
        self.generation = 0
        self.synced = False
        self.lost_reason = ""
        self.cache: Dict[str, WorkflowView] = {}
        self._pending: Dict[str, List[Pending]] = {}
        self._deadlines: List[Tuple[float, int, Pending]] = []
        self._seq = itertools.count()
        self._reads: Dict[str, _Read] = {}
        self._given: Dict[int, Dict[str, str]] = {}
        self._given_tokens: Dict[int, str] = {}
        self._event_seen: Dict[str, float] = {}
        self.counts: Dict[str, int] = dict.fromkeys(
            ("requests", "answered", "errors", "no-workflow", "with-token", "without-token",
             "timeouts", "denied", "forgotten", "secret-reads", "repeats"), 0)
        self._latency: List[float] = []
        self._latency_max = 0.0
        self._latency_n = 0
        self._latency_sum = 0.0

    # -- wiring ---------------------------------------------------------------------------

    def attach(self, generation: int, reader: Any,
               watch_counters: Callable[[], Dict[str, Any]]) -> None:
        """Use a new watcher generation and token reader (at start and after a reconfig).

        Secret reads still in flight belong to the old reader (whose client is being closed):
        their results are dropped, and their jobs wait again, to be read anew by the new
        generation once its list is in.
        """
        for name, read in self._reads.items():
            waiting = [p for p in read.waiters if not p.done]
            if waiting:
                self._pending.setdefault(name, []).extend(waiting)
        self._reads.clear()
        self.generation = generation
        self._reader = reader
        self._watch_counters = watch_counters
        self.synced = False
        self.lost_reason = "waiting for the first Workflow list"

    def reconfigure(self, cfg: ServiceConfig) -> None:
        """Take new settings; pending deadlines keep the timeout they started with."""
        self.cfg = cfg

    # -- requests -------------------------------------------------------------------------

    def prepare(self, msg: Any, payload: Any, *, from_owner: bool) -> None:
        """Handle copy-offload.prepare {id, userid, dw?}: reply now or when the Workflow is ready."""
        self.counts["requests"] += 1
        if not from_owner:
            self.counts["denied"] += 1
            self._replier.respond_error(msg, errno.EPERM, TOPIC_PREPARE + " is only for "
                                        "the instance owner (the copy-offload jobtap plugin)")
            return
        try:
            jobid, owner, dw = parse_prepare(payload)
            asks = asks_copy_offload(dw)
        except (BadRequest, DirectiveError) as exc:
            self._fail_msg(msg, errno.EPROTO, f"{TOPIC_PREPARE}: {exc}")
            return
        given = self._given.get(jobid)
        if given is not None:
            self.counts["repeats"] += 1
            self._answer_msg(msg, self._with_token(jobid, given))
            return
        now = self._clock()
        p = Pending(msg=msg, jobid=jobid, owner=owner, name=workflow_name(jobid), asks=asks,
                    deadline=now + self.cfg.prepare_timeout, t_request=now,
                    grace_end=now + self.cfg.workflow_grace)
        if not self._try(p, None):
            self._pending.setdefault(p.name, []).append(p)
            heapq.heappush(self._deadlines, (p.deadline, next(self._seq), p))
            if p.grace_end < p.deadline:  # wake up to re-check a still missing Workflow
                heapq.heappush(self._deadlines, (p.grace_end, next(self._seq), p))

    def forget(self, jobid: int) -> None:
        """The job is inactive: drop its variables and token, and any request still waiting."""
        if self._given.pop(jobid, None) is not None:
            self.counts["forgotten"] += 1
        self._given_tokens.pop(jobid, None)
        name = workflow_name(jobid)
        read = self._reads.get(name)
        waiting = self._pending.pop(name, []) + (read.waiters if read else [])
        for p in waiting:
            if not p.done:
                self._fail(p, errno.ECANCELED, f"job {jobid} became inactive before it "
                           "got its variables")

    def stats(self, *, files: bool = True) -> Dict[str, Any]:
        """Counters for ``flux copy-offload status`` (no tokens, no variables); ``files=False``
        leaves out settings that name a file (the answer to a guest)."""
        n = self._latency_n
        return {
            "config": config_summary(self.cfg, files=files),
            "synced": self.synced,
            "lost-reason": "" if self.synced else self.lost_reason,
            "workflows-cached": len(self.cache),
            "pending": sum(1 for ps in self._pending.values() for p in ps if not p.done),
            "secret-reads-in-flight": len(self._reads),
            "jobs-with-variables": len(self._given),
            "jobs-with-token": len(self._given_tokens),
            "counts": dict(self.counts),
            "kubernetes-gets": self._reader_gets(),
            "watch": self._watch_counters(),
            "event-to-reply-ms": {
                "count": n,
                "last": round(self._latency[-1] * 1000, 3) if self._latency else None,
                "mean": round(self._latency_sum / n * 1000, 3) if n else None,
                "max": round(self._latency_max * 1000, 3) if n else None,
            },
        }

    def given(self, jobid: int) -> Optional[Dict[str, str]]:
        """What job ``jobid`` was given, token redacted (None if unknown or forgotten)."""
        v = self._given.get(jobid)
        return redact(self._with_token(jobid, v)) if v is not None else None

    # -- timers ---------------------------------------------------------------------------

    def next_deadline(self) -> Optional[float]:
        while self._deadlines and self._deadlines[0][2].done:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self) -> None:
        """Time out every request whose deadline passed; re-check those whose grace ended."""
        now = self._clock()
        while self._deadlines and (self._deadlines[0][2].done or self._deadlines[0][0] <= now):
            _, _, p = heapq.heappop(self._deadlines)
            if p.done:
                continue
            if p.deadline > now:  # the grace for a missing Workflow ended
                self._unlist(p)
                if not self._try(p, None):
                    self._pending.setdefault(p.name, []).append(p)
                continue
            self._drop_pending(p)
            self.counts["timeouts"] += 1
            self._timed_out(p)

    def _timed_out(self, p: Pending) -> None:
        ns, t = self.cfg.namespace, self.cfg.prepare_timeout
        view = self.cache.get(p.name)
        if not self.synced:
            why = (f"the Workflow watch is not in sync with the Kubernetes API "
                   f"({self.lost_reason}); check [copy-offload] kubeconfig and the API server")
        elif view is None:
            why = f"Workflow {ns}/{p.name} does not exist"
        else:
            why = (f"Workflow {ns}/{p.name} is still {view.describe()}; check it with "
                   f"'kubectl get workflows.{self.cfg.api_group} -n {ns} {p.name}' "
                   "and the flux-coral2 service")
        asks = p.asks or (view is not None and self._view_asks(view))
        if asks:
            self._fail(p, errno.ETIMEDOUT, f"timed out after {t:g}s waiting for PreRun with "
                       f"ready=true: {why}")
            return
        self._log(LOG_WARNING, f"job {p.jobid}: no PreRun/ready after {t:g}s ({why}); the job "
                  "did not ask for copy-offload, so it proceeds without a token")
        self._answer(p, self._names(view) if view is not None else {}, None)

    # -- the watch ------------------------------------------------------------------------

    def on_synced(self, generation: int, items: List[Dict[str, Any]], version: str) -> None:
        """A full list arrived: it replaces the cache, then every waiting request is re-checked."""
        if generation != self.generation:
            return
        first = not self.synced
        self.cache = views_by_name(items)
        self.synced = True
        self.lost_reason = ""
        if first:
            self._log(LOG_INFO, f"Workflow cache in sync: {len(self.cache)} fluxjob Workflows "
                      f"in {self.cfg.namespace} ({self.cfg.api_group}/{version})")
        for name in list(self._pending):
            self._recheck(name, None)

    def on_event(self, generation: int, kind: str, obj: Dict[str, Any], t_recv: float) -> None:
        """One watch event: update the cache and answer requests it unblocks."""
        if generation != self.generation:
            return
        view = WorkflowView.from_raw(obj)
        jobid = jobid_of(view.name)
        if jobid is None:
            return
        if kind == "DELETED":
            self.cache.pop(view.name, None)
            self._given.pop(jobid, None)
            self._given_tokens.pop(jobid, None)
        elif kind in ("ADDED", "MODIFIED"):
            self.cache[view.name] = view
        else:
            return
        if view.name in self._pending:
            self._recheck(view.name, t_recv)

    def on_lost(self, generation: int, text: str) -> None:
        """The watch broke: keep the cache, but make no "does not exist" answers until a relist."""
        if generation != self.generation:
            return
        self.synced = False
        self.lost_reason = text

    # -- deciding -------------------------------------------------------------------------

    def _recheck(self, name: str, t_event: Optional[float]) -> None:
        waiting = self._pending.pop(name, [])
        keep = [p for p in waiting if not p.done and not self._try(p, t_event)]
        if keep:
            self._pending[name] = keep

    def _view_asks(self, view: WorkflowView) -> bool:
        if COPY_OFFLOAD in view.requires:
            return True
        try:
            return asks_copy_offload(list(view.directives))
        except DirectiveError:
            return False

    def _try(self, p: Pending, t_event: Optional[float]) -> bool:
        """Answer ``p`` if the cache allows it; False means keep waiting."""
        if not self.synced:
            return False
        ns = self.cfg.namespace
        view = self.cache.get(p.name)
        if view is None:
            if not p.seen and self._clock() < p.grace_end:
                return False  # the watch may still bring it
            if p.asks and p.seen:
                self._fail(p, errno.ENOENT, f"Workflow {ns}/{p.name} of job {p.jobid} was "
                           "deleted before the job started; check flux-coral2's coral2_dws "
                           "service and 'flux job eventlog' for the job's exception")
            elif p.asks:
                grace = p.grace_end - p.t_request
                self._fail(p, errno.ENOENT, f"job {p.jobid} asked for copy-offload but its "
                           f"Workflow {ns}/{p.name} did not appear within {grace:g}s "
                           "([copy-offload] workflow-grace); check that flux-coral2's "
                           "coral2_dws service is running and created it ('kubectl get "
                           f"workflows.{self.cfg.api_group} -n {ns} {p.name}'), and that "
                           "[copy-offload] namespace is where it creates Workflows")
            else:
                self.counts["no-workflow"] += 1
                self._answer(p, {}, None)
            return True
        p.seen = True
        if view.user_id is not None and view.user_id != p.owner:
            self._fail(p, errno.EPERM, f"Workflow {ns}/{p.name} belongs to uid {view.user_id}, "
                       f"not to the job's owner uid {p.owner}; refusing to hand out its token")
            return True
        if view.failed:
            msg = f": {view.message}" if view.message else ""
            self._fail(p, errno.EIO, f"Workflow {ns}/{p.name} failed ({view.describe()}){msg}")
            return True
        if view.past_prerun:
            self._fail(p, errno.ECANCELED, f"Workflow {ns}/{p.name} moved on to "
                       f"{view.state} before the job started")
            return True
        if not view.at_prerun_ready:
            return False
        if view.token_ref is None:
            if p.asks or self._view_asks(view):
                self._fail(p, errno.ENOENT, f"Workflow {ns}/{p.name} reached PreRun without "
                           "status.workflowToken although the job asked for copy-offload; "
                           "check the '#DW container' directive and the nnf-sos logs")
            else:
                self.counts["without-token"] += 1
                self._answer(p, self._base(view), t_event)
            return True
        self._read_token(p, view, t_event)
        return True

    def _read_token(self, p: Pending, view: WorkflowView, t_event: Optional[float]) -> None:
        read = self._reads.get(p.name)
        if read is not None:
            read.waiters.append(p)
            return
        read = _Read(view=view, waiters=[p], t_event=t_event)
        self._reads[p.name] = read
        self.counts["secret-reads"] += 1
        secret, secret_ns = view.token_ref or ("", "")
        generation = self.generation
        self._reader.read(secret, secret_ns or self.cfg.namespace,
                          lambda token, error: self._token_read(p.name, token, error, generation))

    def _token_read(self, name: str, token: Optional[str], error: Optional[KubeError],
                    generation: int) -> None:
        if generation != self.generation:
            return  # read by a reader of before a reconfiguration; its jobs wait again
        read = self._reads.pop(name, None)
        if read is None:
            return
        view = self.cache.get(name, read.view)
        secret, secret_ns = read.view.token_ref or ("", "")
        for p in read.waiters:
            if p.done:
                continue
            if token is None:
                hint = ""
                if error is not None and error.status == 403:
                    hint = "; the service's Kubernetes account needs 'get' on secrets"
                elif error is not None and error.status == 404:
                    hint = "; the Secret named by status.workflowToken is missing"
                self._fail(p, errno.EIO, f"cannot read the token Secret {secret_ns}/{secret} "
                           f"of Workflow {self.cfg.namespace}/{name}: {error}{hint}")
                continue
            self.counts["with-token"] += 1
            self._given_tokens[p.jobid] = token
            self._answer(p, self._base(view), read.t_event)

    # -- replies --------------------------------------------------------------------------

    def _base(self, view: WorkflowView) -> Dict[str, str]:
        env = allowed_env(self.cfg, view.env_dict())
        env.pop(TOKEN_VAR, None)
        env.update(self._names(view))
        return env

    def _names(self, view: WorkflowView) -> Dict[str, str]:
        return {NAME_VAR: view.name, NAMESPACE_VAR: view.namespace or self.cfg.namespace}

    def _with_token(self, jobid: int, variables: Dict[str, str]) -> Dict[str, str]:
        token = self._given_tokens.get(jobid)
        if token is None:
            return dict(variables)
        out = dict(variables)
        out[TOKEN_VAR] = token
        return out

    def _drop_pending(self, p: Pending) -> None:
        p.done = True
        self._unlist(p)

    def _unlist(self, p: Pending) -> None:
        """Take ``p`` off its Workflow's waiting list (it stays undecided)."""
        ps = self._pending.get(p.name)
        if ps is not None:
            rest = [q for q in ps if q is not p]
            if rest:
                self._pending[p.name] = rest
            else:
                del self._pending[p.name]

    def _answer(self, p: Pending, variables: Dict[str, str], t_event: Optional[float]) -> None:
        p.done = True
        self._given[p.jobid] = variables
        self._answer_msg(p.msg, self._with_token(p.jobid, variables))
        if t_event is not None:
            self._record_latency(self._clock() - t_event)
        names = ", ".join(sorted(redact(self._with_token(p.jobid, variables))))
        self._log(LOG_DEBUG, f"job {p.jobid}: variables given: {names or '(none)'}")

    def _answer_msg(self, msg: Any, variables: Dict[str, str]) -> None:
        self.counts["answered"] += 1
        self._replier.respond(msg, {VARIABLES: variables})

    def _fail(self, p: Pending, errnum: int, text: str) -> None:
        p.done = True
        self._log(LOG_ERR, f"job {p.jobid}: {text}")
        self._fail_msg(p.msg, errnum, text)

    def _fail_msg(self, msg: Any, errnum: int, text: str) -> None:
        self.counts["errors"] += 1
        self._replier.respond_error(msg, errnum, text)

    def _record_latency(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        self._latency.append(seconds)
        if len(self._latency) > 1000:
            del self._latency[:500]
        self._latency_n += 1
        self._latency_sum += seconds
        self._latency_max = max(self._latency_max, seconds)

    def _reader_gets(self) -> int:
        return int(getattr(self._reader, "gets", 0))
