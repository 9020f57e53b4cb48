"""The nnf driver's Kubernetes verbs: async, retried, and never blocking the loop.

The errors and the configuration loader are the server's one layer (``copy_offload.server.kube``).

The synchronous ``kubernetes`` client runs in a small thread pool of its own, so a slow API
server never stalls the event loop, and Kubernetes exceptions stop here: callers see
``KubeError`` and its subclasses, chosen by HTTP code, with the API server's own message
(``workflows.dataworkflowservices.github.io "x" not found``). Transient failures (5xx, 429,
timeouts, refused or reset connections) are retried with capped exponential backoff and
jitter; everything else is raised at once. urllib3's own retries are turned off so there is
one retry policy, and a POST is retried only when the caller says it is safe (a create with
an explicit name is: a repeat answers 409 AlreadyExists instead of making a second object).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Union

from copy_offload.server.kube import (  # the server's one error family, re-exported for the driver
    KubeAlreadyExists,
    KubeConflict,
    KubeError,
    KubeNotFound,
    KubeUnavailable,
    map_api_exception,
    warm_pool,
)

__all__ = ["Kube", "KubeSettings", "Res", "KubeError", "KubeNotFound", "KubeConflict", "KubeAlreadyExists",
           "KubeUnavailable"]

log = logging.getLogger("copy_offload.server.nnf")

@dataclass
class KubeSettings:
    """How the driver talks to the API server."""

    request_timeout: float = 10.0
    """Seconds for one HTTP request (connect + read)."""
    attempts: int = 6
    """Tries for a transient failure before giving up."""
    backoff: float = 0.2
    """First retry delay in seconds; doubles each time, with jitter."""
    backoff_max: float = 5.0
    threads: int = 8
    """Threads running client calls (and HTTP connections kept to the API server)."""
    qps: Optional[float] = None
    """Client-side rate limit (``NNF_REST_CONFIG_QPS``); None = unlimited."""
    burst: Optional[int] = None
    """Burst for the rate limit (``NNF_REST_CONFIG_BURST``)."""


@dataclass(frozen=True)
class Res:
    """A resource type at the version in use: core when ``group`` is empty."""

    group: str
    version: str
    plural: str

    def __str__(self) -> str:
        return "%s.%s/%s" % (self.plural, self.group, self.version) if self.group else self.plural


class _RateLimiter:
    """A token bucket, awaited before each call (client-go's QPS/Burst)."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.capacity = float(max(burst, 1))
        self.tokens = self.capacity
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.qps)
            self.stamp = now
            if self.tokens < 1.0:
                await asyncio.sleep((1.0 - self.tokens) / self.qps)
                self.tokens = 1.0
                self.stamp = time.monotonic()
            self.tokens -= 1.0


class Kube:
    """The verbs the driver uses, as coroutines over a ``kubernetes.client.ApiClient``."""

    def __init__(self, api_client: Any, settings: Optional[KubeSettings] = None) -> None:
        from kubernetes import client

        self.settings = settings or KubeSettings()
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self._api_exception = client.ApiException
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, self.settings.threads), thread_name_prefix="copy-offload-kube"
        )
        self._limiter: Optional[_RateLimiter] = None
        if self.settings.qps:
            self._limiter = _RateLimiter(self.settings.qps, self.settings.burst or int(self.settings.qps))
        self.calls = 0

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.api_client, "close", None)
        if close is not None:
            await asyncio.get_running_loop().run_in_executor(None, close)

    # ----------------------------------------------------------------- the call path

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, retry: bool = True, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in the pool; map errors; retry transient ones."""
        import urllib3

        s = self.settings
        loop = asyncio.get_running_loop()
        delay = s.backoff
        attempts = max(1, s.attempts) if retry else 1
        for attempt in range(1, attempts + 1):
            if self._limiter is not None:
                await self._limiter.acquire()
            self.calls += 1
            call = functools.partial(fn, *args, _request_timeout=s.request_timeout, **kwargs)
            try:
                return await loop.run_in_executor(self._pool, call)
            except self._api_exception as exc:
                err = map_api_exception(exc)
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                err = KubeUnavailable("%s: %s" % (what, _describe(exc)))
            if not err.transient or attempt == attempts:
                if err.transient and attempts > 1:
                    err.message = "%s (gave up after %d attempts)" % (err.message, attempts)
                    err.args = (err.message,)
                raise err
            pause = min(delay, s.backoff_max) * (0.5 + random.random() / 2)
            text = err.message if err.message.startswith(what) else "%s: %s" % (what, err.message)
            log.warning("%s; retrying in %.2fs (attempt %d of %d)", text, pause, attempt, attempts)
            await asyncio.sleep(pause)
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------- verbs

    async def get(self, res: Res, namespace: str, name: str) -> Dict[str, Any]:
        what = "get %s %s/%s" % (res, namespace, name)
        return await self._call(what, self.custom.get_namespaced_custom_object, res.group, res.version, namespace, res.plural, name)

    async def list(
        self, res: Res, namespace: Optional[str] = None, labels: Union[str, Dict[str, str], None] = None, fields: Optional[str] = None
    ) -> List[Dict[str, Any]]:
        """Items of ``res`` in ``namespace`` (all namespaces when None or empty)."""
        kwargs: Dict[str, Any] = {}
        if labels:
            kwargs["label_selector"] = labels if isinstance(labels, str) else ",".join("%s=%s" % kv for kv in labels.items())
        if fields:
            kwargs["field_selector"] = fields
        what = "list %s in %s" % (res, namespace or "all namespaces")
        if not res.group:
            if res.plural != "pods" or not namespace:
                raise ValueError("only namespaced pods are listed from the core group")
            doc = await self._call(what, self._list_pods, namespace, **kwargs)
        elif namespace:
            doc = await self._call(what, self.custom.list_namespaced_custom_object, res.group, res.version, namespace, res.plural, **kwargs)
        else:
            doc = await self._call(what, self.custom.list_cluster_custom_object, res.group, res.version, res.plural, **kwargs)
        return list((doc or {}).get("items") or [])

    def _list_pods(self, namespace: str, **kwargs: Any) -> Dict[str, Any]:
        """In the worker thread: the client's typed answer turned back into plain data."""
        return self.api_client.sanitize_for_serialization(self.core.list_namespaced_pod(namespace, **kwargs))

    def warm(self) -> None:
        """Start the worker threads now, not during the first burst of requests."""
        warm_pool(self._pool, self.settings.threads)

    async def create(self, res: Res, namespace: str, body: Dict[str, Any]) -> Dict[str, Any]:
        """Create; retried on transient errors only when ``body`` names the object."""
        name = (body.get("metadata") or {}).get("name")
        what = "create %s %s/%s" % (res, namespace, name or "(generated)")
        return await self._call(
            what, self.custom.create_namespaced_custom_object, res.group, res.version, namespace, res.plural, body, retry=bool(name)
        )

    async def replace_status(self, res: Res, namespace: str, name: str, body: Dict[str, Any]) -> Dict[str, Any]:
        what = "update %s/status %s/%s" % (res, namespace, name)
        return await self._call(
            what, self.custom.replace_namespaced_custom_object_status, res.group, res.version, namespace, res.plural, name, body
        )

    async def served(self, group: str, version: str) -> bool:
        """Whether the API server serves ``group/version`` (discovery; 404 = no)."""
        try:
            await self._call("discover %s/%s" % (group, version), self.custom.get_api_resources, group, version)
        except KubeNotFound:
            return False
        return True


def _describe(exc: BaseException) -> str:
    """A short text for a connection-level failure (urllib3 wraps the cause)."""
    reason = getattr(exc, "reason", None)
    if reason is not None and reason is not exc:
        return "%s (%s)" % (type(exc).__name__, reason)
    return "%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__
