"""The thin layer between a Flux handle and the service: watchers in, replies out.

Used by both ways of running the service: the broker module (``brokermod.py``) and the
standalone process (``service.py``). It adds to a Runtime an fd watcher on the call queue (so
helper threads wake the reactor), one timer re-armed to the next request deadline, and the
request handlers. Every handler ends in a respond or respond_error, and no exception escapes
into the reactor (one would stop it).

RPCs (topic prefix = the service name, ``copy-offload``):

- ``prepare {id, userid, dw?}`` -> ``{"variables": {NAME: value}}`` (instance owner only)
- ``forget {id}`` -> ``{}``; the job is inactive (instance owner only)
- ``stats {}`` -> counters, see TokenService.stats (guests: without settings naming a file)
- ``env {id}`` -> ``{"variables": ...}`` with the token redacted (instance owner only)
"""

from __future__ import annotations

import errno
import syslog
import time
import traceback
from typing import Any, Callable, Dict, Optional

from copy_offload.flux.config import ConfigError, ServiceConfig, parse_config
from copy_offload.flux.logic import BadRequest, parse_jobid
from copy_offload.flux.runtime import Runtime
from copy_offload.flux.vocabulary import SERVICE, VARIABLES

FLUX_ROLE_OWNER = 1


def is_owner(msg: Any) -> bool:
    return bool(msg.rolemask & FLUX_ROLE_OWNER)


def payload_of(msg: Any) -> Any:
    """The request's JSON payload, or None when it has none or it is not JSON."""
    try:
        text = msg.payload_str
        if not text:
            return None
        import json

        return json.loads(text)
    except (ValueError, TypeError):
        return None


class Frontend:
    """Binds a Runtime to handle ``h``; call ``close`` when the reactor is done."""

    def __init__(self, h: Any, cfg: ServiceConfig, log: Callable[[int, str], None]) -> None:
        from flux.constants import FLUX_POLLIN

        self.h = h
        self.log = log
        self.rt = Runtime(cfg, h, log=log)
        self._fdw = h.fd_watcher_create(self.rt.queue.fileno(), self._on_queue,
                                        events=FLUX_POLLIN)
        self._fdw.start()
        self._timer = h.timer_watcher_create(3600.0, self._on_timer)
        self._armed: Optional[float] = None

    # -- watcher callbacks ----------------------------------------------------------------

    def _guard(self, what: str, fn: Callable[[], None], msg: Any = None) -> None:
        try:
            fn()
        except Exception as exc:  # keep the reactor alive; say what broke
            self.log(syslog.LOG_ERR, f"{what}: internal error: {type(exc).__name__}: {exc}")
            self.log(syslog.LOG_DEBUG, traceback.format_exc())
            if msg is not None:
                try:
                    self.h.respond_error(msg, errno.EINVAL,
                                         f"copy-offload: internal error in {what}: {exc}")
                except OSError:
                    pass
        self._rearm()

    def _on_queue(self, h: Any, w: Any, fd: int, revents: int, args: Any = None) -> None:
        self._guard("queue", self.rt.run_queued)

    def _on_timer(self, h: Any, w: Any, revents: int, args: Any = None) -> None:
        self._armed = None
        self._guard("timer", self.rt.logic.expire)

    def _rearm(self) -> None:
        deadline = self.rt.next_deadline()
        if deadline == self._armed:
            return
        self._armed = deadline
        if deadline is None:
            self._timer.stop()
        else:
            self._timer.reset(after=max(deadline - time.monotonic(), 0.0) + 0.001, repeat=0.0)

    # -- requests -------------------------------------------------------------------------

    def prepare(self, msg: Any) -> None:
        self._guard("prepare", lambda: self.rt.logic.prepare(
            msg, payload_of(msg), from_owner=is_owner(msg)), msg)

    def _owner_jobid(self, msg: Any, topic: str, refusal: str = "") -> Optional[int]:
        """The job id of an owner-only request, or None once the refusal has been sent."""
        if not is_owner(msg):
            self.h.respond_error(msg, errno.EPERM, SERVICE + ".%s is only for the instance owner%s"
                                 % (topic, refusal))
            return None
        try:
            return parse_jobid(payload_of(msg))
        except BadRequest as exc:
            self.h.respond_error(msg, errno.EPROTO, f"{SERVICE}.{topic}: {exc}")
            return None

    def forget(self, msg: Any) -> None:
        def run() -> None:
            jobid = self._owner_jobid(msg, "forget")
            if jobid is None:
                return
            self.rt.logic.forget(jobid)
            self.h.respond(msg, {})

        self._guard("forget", run, msg)

    def env(self, msg: Any) -> None:
        def run() -> None:
            jobid = self._owner_jobid(msg, "env", "; users read their job's copy-offload-env event "
                                      "with 'flux job eventlog'")
            if jobid is None:
                return
            given = self.rt.logic.given(jobid)
            if given is None:
                self.h.respond_error(msg, errno.ENOENT, f"the service holds no variables for "
                                     f"job {jobid} (not prepared yet, or inactive)")
                return
            self.h.respond(msg, {VARIABLES: given})

        self._guard("env", run, msg)

    def stats(self, msg: Any) -> None:
        self._guard("stats", lambda: self.h.respond(
            msg, self.rt.logic.stats(files=is_owner(msg))), msg)

    def reload(self, conf: Optional[Dict[str, Any]]) -> Optional[str]:
        """Apply a new config object; returns an error text if it is invalid (nothing changes)."""
        try:
            cfg = parse_config(conf)
        except ConfigError as exc:
            return str(exc)
        self.rt.reconfigure(cfg)
        self.log(syslog.LOG_INFO, "configuration reloaded")
        self._rearm()
        return None

    def close(self) -> None:
        self._fdw.stop()
        self._timer.stop()
        self.rt.close()
