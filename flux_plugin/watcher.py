"""One watch on the namespace's Workflows, on its own thread, feeding the reactor.

List, then watch from the list's resourceVersion; when the watch ends, watch again from the
last version seen. HTTP 410 Gone (the version is too old) means list again at once: the list
is the resync, and it replaces the whole cache. Any other failure is reported to the sink,
then the loop waits (``backoff-min`` doubling to ``backoff-max``) before it lists again. No
per-job request is ever made here.

The thread never calls the sink directly: every call goes through ``post`` (a CallQueue), so
the sink runs on the reactor thread. Each call carries the watcher's generation, so the sink
can drop what an old watcher sent after a reconfiguration.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional

from copy_offload.flux.config import ServiceConfig
from copy_offload.flux.kube import KubeApi, KubeError

Post = Callable[..., None]


class WorkflowSink:
    """What the watcher reports (implemented by the service logic)."""

    def on_synced(self, generation: int, items: List[Dict[str, Any]], version: str) -> None:
        raise NotImplementedError

    def on_event(self, generation: int, kind: str, obj: Dict[str, Any], t_recv: float) -> None:
        raise NotImplementedError

    def on_lost(self, generation: int, text: str) -> None:
        raise NotImplementedError


class WorkflowWatcher:
    """The list+watch loop. ``start`` runs it on a daemon thread; ``stop`` ends it."""

    def __init__(self, cfg: ServiceConfig, sink: WorkflowSink, post: Post, generation: int,
                 *, api_factory: Callable[[ServiceConfig], KubeApi] = KubeApi,
                 log: Optional[Callable[[int, str], None]] = None) -> None:
        self._cfg = cfg
        self._sink = sink
        self._post = post
        self.generation = generation
        self._api_factory = api_factory
        self._log = log
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._api: Optional[KubeApi] = None
        self.version = ""
        self.lists = 0
        self.watch_requests = 0
        self.events = 0
        self.resyncs = 0
        self.errors = 0
        self.last_error = ""
        self._streak = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="copy-offload-watch", daemon=True)
        self._thread.start()

    def stop(self, join: float = 2.0) -> None:
        self._stop.set()
        api = self._api
        if api is not None:
            api.stop_watch()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(join)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _probe(self, api: KubeApi) -> tuple:
        """List with the first served API version; remember it."""
        last: Optional[KubeError] = None
        versions = [self.version] if self.version else list(self._cfg.api_versions)
        for version in versions:
            try:
                items, rv = api.list_workflows(version)
                self.version = version
                return items, rv
            except KubeError as exc:
                if exc.status != 404:
                    raise
                last = exc
        tried = ", ".join(versions)
        raise KubeError(f"no served Workflow API version among {tried} "
                        f"({self._cfg.api_group}): {last.message if last else ''}", 404)

    def _run(self) -> None:
        cfg = self._cfg
        backoff = cfg.backoff_min
        while not self._stop.is_set():
            try:
                if self._api is None:
                    self._api = self._api_factory(cfg)
                items, rv = self._probe(self._api)
                self.lists += 1
                if self._streak:
                    self._say(6, f"Workflow watch recovered after {self._streak} failed "
                              "attempt(s)")
                    self._streak = 0
                self._post(self._sink.on_synced, self.generation, items, self.version)
                while not self._stop.is_set():
                    self.watch_requests += 1
                    for kind, obj in self._api.watch_workflows(self.version, rv):
                        t_recv = time.monotonic()
                        new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                        if new_rv:
                            rv = str(new_rv)
                        if kind == "BOOKMARK":
                            continue
                        self.events += 1
                        self._post(self._sink.on_event, self.generation, kind, obj, t_recv)
                        backoff = cfg.backoff_min
                    backoff = cfg.backoff_min
            except KubeError as exc:
                if self._stop.is_set():
                    break
                if exc.gone:
                    self.resyncs += 1
                    self._say(6, f"Workflow watch expired (410 Gone): listing again ({exc.message})")
                    continue
                if self._failed(str(exc), backoff):
                    break
                backoff = min(backoff * 2, cfg.backoff_max)
            except Exception as exc:  # a bug or an odd reply: report, back off, go on
                if self._stop.is_set():
                    break
                if self._failed(f"{type(exc).__name__}: {exc}", backoff):
                    break
                backoff = min(backoff * 2, cfg.backoff_max)
        api, self._api = self._api, None
        if api is not None:
            api.close()

    def _failed(self, text: str, backoff: float) -> bool:
        """Count and report a failure, then wait; True if stopped meanwhile.

        The first failure of a streak is an error in the log, the rest are debug lines, so an
        API server that is down for an hour does not flood the log.
        """
        self.errors += 1
        self._streak += 1
        self.last_error = text
        level = 3 if self._streak == 1 else 7
        self._say(level, f"Workflow watch failed: {text}; retrying in {backoff:g}s")
        self._post(self._sink.on_lost, self.generation, text)
        return self._stop.wait(backoff)

    def _say(self, level: int, text: str) -> None:
        if self._log is not None:
            self._post(self._log, level, text)

    def counters(self) -> Dict[str, Any]:
        return {"api-version": self.version, "lists": self.lists,
                "watch-requests": self.watch_requests, "events": self.events,
                "resyncs-410": self.resyncs, "errors": self.errors,
                "last-error": self.last_error}
