"""The service assembled: logic, call queue, Workflow watcher and token reader, without Flux.

The Flux glue (``service.py``) adds only an fd watcher on ``queue.fileno()`` that calls
``run_queued()`` and a timer at ``next_deadline()``; tests drive the same object with
``queue.wait()``. Reconfiguring with new Kubernetes settings starts a new watcher generation,
so nothing the old watch sent can reach the new cache.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from copy_offload.flux.callqueue import CallQueue
from copy_offload.flux.config import ServiceConfig
from copy_offload.flux.kube import KubeApi
from copy_offload.flux.logic import Log, TokenService
from copy_offload.flux.tokens import TokenReader
from copy_offload.flux.watcher import WorkflowWatcher


class Runtime:
    """Owns the threads; every logic call happens on the thread that calls ``run_queued``."""

    def __init__(self, cfg: ServiceConfig, replier: Any, *, log: Optional[Log] = None,
                 api_factory: Callable[[ServiceConfig], KubeApi] = KubeApi,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.queue = CallQueue()
        self._log = log
        self._api_factory = api_factory
        self.logic = TokenService(cfg, replier, clock=clock, log=log)
        self._generation = 0
        self.watcher: Optional[WorkflowWatcher] = None
        self.reader: Optional[TokenReader] = None
        self._start_kube(cfg)

    def _start_kube(self, cfg: ServiceConfig) -> None:
        self._generation += 1
        self.watcher = WorkflowWatcher(cfg, self.logic, self.queue.post, self._generation,
                                       api_factory=self._api_factory, log=self._log)
        self.reader = TokenReader(cfg, self.queue.post, api_factory=self._api_factory)
        self.logic.attach(self._generation, self.reader, self.watcher.counters)
        self.watcher.start()

    def _stop_kube(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.reader is not None:
            self.reader.close()

    def reconfigure(self, cfg: ServiceConfig) -> None:
        """Apply new settings; a new watch only if the Kubernetes settings changed."""
        old = self.logic.cfg
        self.logic.reconfigure(cfg)
        if cfg.kube_settings() != old.kube_settings():
            self._stop_kube()
            self._start_kube(cfg)

    def run_queued(self) -> None:
        """Run what the helper threads posted, then time out overdue requests."""
        self.queue.drain()
        self.logic.expire()

    def next_deadline(self) -> Optional[float]:
        return self.logic.next_deadline()

    def close(self) -> None:
        self._stop_kube()
        self.queue.close()
