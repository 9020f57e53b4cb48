"""Read Workflow token Secrets off the reactor thread.

A small thread pool does the GETs; the result is posted back to the reactor through the
CallQueue. A GET that fails with a transport error, 429 or 5xx is tried again (``secret-retries``
tries in all, short waits between), because a job should not fail for one dropped connection;
404 and 403 are final, since trying again cannot help.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from copy_offload.flux.config import ServiceConfig
from copy_offload.flux.kube import KubeApi, KubeError

Done = Callable[[Optional[str], Optional[KubeError]], None]


def _transient(exc: KubeError) -> bool:
    return exc.status == 0 or exc.status == 429 or exc.status >= 500


class TokenReader:
    """Runs ``KubeApi.read_token`` on worker threads and posts ``done(token, error)``."""

    def __init__(self, cfg: ServiceConfig, post: Callable[..., None], *,
                 api_factory: Callable[[ServiceConfig], KubeApi] = KubeApi,
                 workers: int = 4, sleep: Callable[[float], None] = time.sleep) -> None:
        self._cfg = cfg
        self._post = post
        self._api_factory = api_factory
        self._sleep = sleep
        self._pool = ThreadPoolExecutor(max_workers=workers,
                                        thread_name_prefix="copy-offload-secret")
        self._lock = threading.Lock()
        self._api: Optional[KubeApi] = None
        self.gets = 0

    def _get_api(self) -> KubeApi:
        with self._lock:
            if self._api is None:
                self._api = self._api_factory(self._cfg)
            return self._api

    def read(self, name: str, namespace: str, done: Done) -> None:
        """Start reading Secret namespace/name; ``done`` runs on the reactor thread."""
        self._pool.submit(self._read, name, namespace, done)

    def _read(self, name: str, namespace: str, done: Done) -> None:
        delay = self._cfg.backoff_min
        for attempt in range(1, self._cfg.secret_retries + 1):
            try:
                api = self._get_api()
                with self._lock:
                    self.gets += 1
                token = api.read_token(name, namespace)
            except KubeError as exc:
                if attempt < self._cfg.secret_retries and _transient(exc):
                    self._sleep(delay)
                    delay = min(delay * 2, self._cfg.backoff_max)
                    continue
                self._post(done, None, exc)
                return
            except Exception as exc:  # a bug or an odd reply: the job gets a clear error
                self._post(done, None, KubeError(f"{type(exc).__name__}: {exc}"))
                return
            self._post(done, token, None)
            return

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            api.close()
