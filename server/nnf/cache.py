"""Watch-fed caches for the planning reads: one list+watch per kind instead of reads per request.

A whole machine's job can send thousands of copy requests at one checkpoint; planning each
one reads ClientMounts, the SystemConfiguration, the profiles, the worker pods and the
storages, 7-8 calls that return the same objects every time. ``KindWatch`` keeps one kind
(scoped to a namespace and to the Workflow's labels where the objects carry them) current in
memory with a list and then a watch from its resourceVersion, in a thread of its own.

``CachedReads`` answers ``get``/``list`` from those caches and goes to the API server when it
cannot be sure: the cache is not in sync (starting, or its watch broke and is relisting), the
selector is not one the cache covers, or the cache has nothing to give (a miss is never
reported as "not found" without asking). The Workflow is not cached: its state must be
PreRun/Completed at the moment of the request, so it is read each time (the one read).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from copy_offload.server.nnf.kube import Kube, Res

log = logging.getLogger("copy_offload.server.nnf")

WATCH_SECONDS = 240  # one watch request's length; it then resumes from the last resourceVersion


def _labels_text(labels: Optional[Dict[str, str]]) -> str:
    return ",".join("%s=%s" % kv for kv in sorted((labels or {}).items()))


def _parse_labels(labels: Any) -> Dict[str, str]:
    if isinstance(labels, dict):
        return dict(labels)
    out = {}
    for part in str(labels or "").split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            out[key.strip()] = value.strip().lstrip("=")
    return out


def _dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _matches(obj: Dict[str, Any], labels: Dict[str, str], fields: Dict[str, str]) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    if any(have.get(k) != v for k, v in labels.items()):
        return False
    return all(str(_dig(obj, path) or "") == value for path, value in fields.items())


class _NotAWatch(Exception):
    """The API server answered a watch request with something other than watch events."""


class KindWatch:
    """One kind's objects, optionally in one namespace and label-selected, kept current by a watch."""

    def __init__(self, kube: Kube, res: Res, namespace: Optional[str] = None, labels: Optional[Dict[str, str]] = None,
                 request_timeout: float = 10.0) -> None:
        self.kube = kube
        self.res = res
        self.namespace = namespace
        self.labels = dict(labels or {})
        self.request_timeout = request_timeout
        self.objects: Dict[Tuple[str, str], Dict[str, Any]] = {}
        self.synced = threading.Event()
        self.relists = 0
        self.given_up: Optional[str] = None
        """Why this cache stopped for good (the API server refuses its list or watch: RBAC)."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, name="copy-offload-watch-%s" % res.plural, daemon=True)

    def __str__(self) -> str:
        scope = self.namespace or "all namespaces"
        return "%s in %s%s" % (self.res, scope, (" with " + _labels_text(self.labels)) if self.labels else "")

    # ----------------------------------------------------------------- reads (any thread)

    def covers(self, namespace: Optional[str], labels: Dict[str, str]) -> bool:
        """Whether every object such a query could match is in this cache."""
        if self.namespace and namespace != self.namespace:
            return False
        return all(labels.get(k) == v for k, v in self.labels.items())

    def get(self, namespace: str, name: str) -> Optional[Dict[str, Any]]:
        with self._lock:
            obj = self.objects.get((namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def select(self, namespace: Optional[str], labels: Dict[str, str], fields: Dict[str, str]) -> List[Dict[str, Any]]:
        with self._lock:
            found = [o for (ns, _), o in sorted(self.objects.items()) if (not namespace or ns == namespace) and _matches(o, labels, fields)]
        return copy.deepcopy(found)

    # ----------------------------------------------------------------- the watch thread

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()  # wakes the thread from its blocking read
            except Exception:  # noqa: BLE001 - best effort; the thread is a daemon and times out anyway
                pass

    def _call(self, **kwargs: Any) -> Any:
        res, kube = self.res, self.kube
        kwargs.update(_preload_content=False)
        if self.labels:
            kwargs["label_selector"] = _labels_text(self.labels)
        if not res.group:
            return kube.core.list_namespaced_pod(self.namespace, **kwargs)
        if self.namespace:
            return kube.custom.list_namespaced_custom_object(res.group, res.version, self.namespace, res.plural, **kwargs)
        return kube.custom.list_cluster_custom_object(res.group, res.version, res.plural, **kwargs)

    def _relist(self) -> str:
        response = self._call(_request_timeout=self.request_timeout)
        doc = json.loads(response.data)
        objects = {}
        for obj in doc.get("items") or []:
            meta = obj.get("metadata") or {}
            objects[(meta.get("namespace") or "", meta.get("name") or "")] = obj
        with self._lock:
            self.objects = objects
        self.relists += 1
        return str((doc.get("metadata") or {}).get("resourceVersion") or "")

    def _apply(self, event: Dict[str, Any]) -> Optional[str]:
        """Apply one watch event; returns its resourceVersion, None when the watch must relist."""
        if not isinstance(event, dict) or "type" not in event:
            raise _NotAWatch("the answer to a watch request is not a stream of watch events")
        kind, obj = event.get("type"), event.get("object") or {}
        if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
            return None  # ERROR (410 Expired and the like): start again from a list
        meta = obj.get("metadata") or {}
        if kind != "BOOKMARK":
            key = (meta.get("namespace") or "", meta.get("name") or "")
            with self._lock:
                if kind == "DELETED":
                    self.objects.pop(key, None)
                else:
                    self.objects[key] = obj
        return str(meta.get("resourceVersion") or "")

    def _run(self) -> None:
        pause = 0.2
        not_watches = 0
        while not self._stop.is_set():
            try:
                version = self._relist()
                self.synced.set()
                pause = 0.2
                while not self._stop.is_set():
                    self._response = self._call(watch=True, resource_version=version, timeout_seconds=WATCH_SECONDS,
                                                allow_watch_bookmarks=True,
                                                _request_timeout=(self.request_timeout, WATCH_SECONDS + self.request_timeout))
                    began, events = time.monotonic(), 0
                    for line in _lines(self._response):
                        applied = self._apply(json.loads(line))
                        if applied is None:
                            raise LookupError("the watch asked for a relist")
                        version = applied or version
                        events += 1
                        not_watches = 0
                    self._response.release_conn()
                    if not events and time.monotonic() - began < 1.0:  # never spin on a watch that ends at once
                        raise LookupError("the watch ended at once, without events")
            except Exception as exc:  # noqa: BLE001 - any failure: reads go to the API server until we relist
                self.synced.clear()
                if self._stop.is_set():
                    break
                not_watches = not_watches + 1 if isinstance(exc, (_NotAWatch, ValueError)) else 0
                refused = getattr(exc, "status", None) in (401, 403, 404, 405)
                if refused or not_watches >= 3:  # for good: no watching this kind
                    self.given_up = ("%s %s" % (getattr(exc, "status", ""), getattr(exc, "reason", "") or "")) if refused else str(exc)
                    log.warning("cannot list and watch %s (%s); its planning reads go to the API server", self, self.given_up.strip())
                    break
                log.debug("watch of %s interrupted (%s); relisting in %.1fs", self, exc, pause)
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)
        self.synced.clear()


def _lines(response: Any) -> Any:
    """The non-empty lines of a streamed answer, the last one even without its newline."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line.decode("utf-8", "replace")
    if buffer.strip():
        yield buffer.decode("utf-8", "replace")


class CachedReads:
    """``get``/``list`` like ``Kube``'s, from the caches when they can answer for sure."""

    def __init__(self, kube: Kube, caches: List[KindWatch]) -> None:
        self.kube = kube
        self.caches: Dict[Res, List[KindWatch]] = {}
        for cache in caches:
            self.caches.setdefault(cache.res, []).append(cache)
        self.hits = 0

    def start(self) -> None:
        for caches in self.caches.values():
            for cache in caches:
                cache.start()

    def wait_synced(self, timeout: float) -> bool:
        """Block (in a thread) until every cache has listed once, or ``timeout``."""
        deadline = time.monotonic() + timeout
        for caches in self.caches.values():
            for cache in caches:
                while not cache.synced.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
                    if cache.given_up is not None:
                        break
                    if time.monotonic() >= deadline:
                        return False
        return True

    def stop(self) -> None:
        for caches in self.caches.values():
            for cache in caches:
                cache.stop()

    def _cache(self, res: Res, namespace: Optional[str], labels: Dict[str, str]) -> Optional[KindWatch]:
        for cache in self.caches.get(res, ()):
            if cache.synced.is_set() and cache.covers(namespace, labels):
                return cache
        return None

    async def get(self, res: Res, namespace: str, name: str) -> Dict[str, Any]:
        """A hit in any cache of the kind is the object; a miss (maybe unlabelled, maybe new) asks the API server."""
        for cache in self.caches.get(res, ()):
            if cache.synced.is_set() and (not cache.namespace or cache.namespace == namespace):
                obj = cache.get(namespace, name)
                if obj is not None:
                    self.hits += 1
                    return obj
        return await self.kube.get(res, namespace, name)

    async def list(self, res: Res, namespace: Optional[str] = None, labels: Any = None, fields: Optional[str] = None) -> List[Dict[str, Any]]:
        wanted = _parse_labels(labels)
        cache = self._cache(res, namespace or None, wanted)
        if cache is not None:
            found = cache.select(namespace or None, wanted, _parse_labels(fields))
            if found:
                self.hits += 1
                return found
        return await self.kube.list(res, namespace, labels, fields)
