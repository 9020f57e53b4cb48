"""A Kubernetes API server test double that the real ``kubernetes`` Python client talks to.

Why: the project's rule is real parts, not mocks. This is a small, threaded HTTP server on
127.0.0.1 (ephemeral port) that speaks enough of the Kubernetes REST API for the copy-offload
server (``--driver nnf``) and the Flux-side service: generic over resources, with the error
bodies, resource versions, watches and conflicts a real API server gives.

What it serves
  * Core ``v1`` (``/api/v1``): namespaces (cluster-scoped), secrets, pods, configmaps,
    serviceaccounts, events; custom resources (``/apis/<group>/<version>``) for DWS, NNF and
    Lustre kinds (``DEFAULT_RESOURCES``); ``register()`` adds more. Every registered version
    serves the same stored objects; ``apiVersion`` follows the URL.
  * Discovery: ``/api``, ``/api/v1``, ``/apis``, ``/apis/<g>``, ``/apis/<g>/<v>`` (404 for a
    version that is not served, which is how clients probe versions).
  * GET, LIST (``labelSelector``: ``=``, ``==``, ``!=``, ``in``, ``notin``, ``k``, ``!k``;
    ``fieldSelector`` on any dotted path, e.g. ``metadata.name``, ``spec.nodeName``), cluster-wide
    lists of namespaced kinds, CREATE (``generateName``, ``uid``, ``resourceVersion``,
    ``creationTimestamp``, ``generation``; status dropped when the kind has a status
    subresource; Secret ``stringData`` folded into ``data``), PUT (409 ``Conflict`` on a stale
    ``metadata.resourceVersion``), PATCH (``merge-patch+json``; ``json-patch+json``;
    ``strategic-merge-patch+json`` treated as merge for core kinds, 415 for custom kinds), the
    ``/status`` subresource (main writes keep status, status writes keep the rest), DELETE
    (finalizers honoured through ``deletionTimestamp``), and WATCH
    (``?watch=1&resourceVersion=N[&timeoutSeconds=S]``: chunked JSON lines ADDED/MODIFIED/DELETED;
    no/0 resourceVersion first replays current objects as ADDED; a resourceVersion older than
    the last ``compact()`` gives an ``ERROR`` event with a 410 ``Expired`` Status, or an HTTP 410
    when ``watch_gone_as_http`` is set).
  * Error bodies are ``kind: Status`` with the API server's wording
    (``<plural>.<group> "<name>" not found``, ``Operation cannot be fulfilled on ...``).

Fault injection (each takes ``count``, and optional ``method`` and ``path`` regex filters)
  ``fail(code=500)`` answers with an error Status; ``conflict()`` = ``fail(409)``;
  ``delay(seconds, then="process"|"drop")`` stalls (so the client times out) and then handles
  the request anyway or drops the connection; ``reset()`` closes with a TCP RST;
  ``lose_response()`` does the request and then resets instead of answering;
  ``refuse_connections()`` / ``accept_connections()`` stop and restart listening on the same
  port (and cut open connections); ``close_watches()`` ends every open watch stream.

Request log
  ``requests`` is a list of ``LoggedRequest`` (method, path, query, verb, group, version,
  plural, namespace, name, subresource, status, body). ``count(...)`` and ``writes(...)``
  filter it; ``clear_log()`` empties it.

Direct store access for tests (no HTTP, emits watch events like the server would):
``put(obj)`` (seed/replace), ``get(group, plural, namespace, name)``, ``objects(group, plural)``,
``modify(group, plural, namespace, name, fn)``, ``remove(...)``, ``compact()``.

Use::

    with KubeDouble() as kube:
        seed_nnf(kube, root=str(tmp_path))
        api = kube.api_client()            # kubernetes.client.ApiClient, host=http://127.0.0.1:PORT
        kube.write_kubeconfig(path)        # for a subprocess (KUBECONFIG=path)

or the ``kube_double`` pytest fixture at the bottom (``from kube_double import kube_double``).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as _dt
import http.server
import json
import os
import random
import re
import socket
import socketserver
import string
import struct
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

__all__ = [
    "DEFAULT_RESOURCES",
    "KubeDouble",
    "LoggedRequest",
    "ResourceType",
    "kube_double",
    "load_seed",
    "seed_nnf",
]

SEED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kube_seed")


# --------------------------------------------------------------------------- resource types


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for core
    versions: Tuple[str, ...]
    plural: str
    kind: str
    namespaced: bool = True
    status_subresource: bool = True

    @property
    def qualified(self) -> str:
        return "%s.%s" % (self.plural, self.group) if self.group else self.plural


DWS = "dataworkflowservices.github.io"
NNF = "nnf.cray.hpe.com"
LUS = "lus.cray.hpe.com"
_DWS_V = ("v1alpha6", "v1alpha7")
_NNF_V = ("v1alpha10", "v1alpha11")

DEFAULT_RESOURCES: Tuple[ResourceType, ...] = (
    ResourceType("", ("v1",), "namespaces", "Namespace", namespaced=False),
    ResourceType("", ("v1",), "secrets", "Secret", status_subresource=False),
    ResourceType("", ("v1",), "configmaps", "ConfigMap", status_subresource=False),
    ResourceType("", ("v1",), "serviceaccounts", "ServiceAccount", status_subresource=False),
    ResourceType("", ("v1",), "pods", "Pod"),
    ResourceType("", ("v1",), "events", "Event", status_subresource=False),
    ResourceType(DWS, _DWS_V, "workflows", "Workflow", status_subresource=False),
    ResourceType(DWS, _DWS_V, "clientmounts", "ClientMount"),
    ResourceType(DWS, _DWS_V, "systemconfigurations", "SystemConfiguration"),
    ResourceType(DWS, _DWS_V, "computes", "Computes", status_subresource=False),
    ResourceType(DWS, _DWS_V, "directivebreakdowns", "DirectiveBreakdown"),
    ResourceType(DWS, _DWS_V, "servers", "Servers"),
    ResourceType(DWS, _DWS_V, "storages", "Storage"),
    ResourceType(DWS, _DWS_V, "persistentstorageinstances", "PersistentStorageInstance"),
    ResourceType(NNF, _NNF_V, "nnfdatamovements", "NnfDataMovement"),
    ResourceType(NNF, _NNF_V, "nnfdatamovementprofiles", "NnfDataMovementProfile", status_subresource=False),
    ResourceType(NNF, _NNF_V, "nnfcontainerprofiles", "NnfContainerProfile", status_subresource=False),
    ResourceType(NNF, _NNF_V, "nnfstorageprofiles", "NnfStorageProfile", status_subresource=False),
    ResourceType(NNF, _NNF_V, "nnfnodes", "NnfNode"),
    ResourceType(NNF, _NNF_V, "nnfnodestorages", "NnfNodeStorage"),
    ResourceType(NNF, _NNF_V, "nnfstorages", "NnfStorage"),
    ResourceType(NNF, _NNF_V, "nnfaccesses", "NnfAccess"),
    ResourceType(LUS, ("v1alpha1", "v1beta1"), "lustrefilesystems", "LustreFileSystem"),
)

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def _now_text() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_body(code: int, message: str, reason: Optional[str] = None, details: Optional[dict] = None) -> dict:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason if reason is not None else _REASONS.get(code, ""),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    """An error answer of the double: an HTTP code and a Status body."""

    def __init__(self, code: int, message: str, reason: Optional[str] = None, details: Optional[dict] = None):
        super().__init__(message)
        self.code = code
        self.body = _status_body(code, message, reason, details)


# --------------------------------------------------------------------------- selectors and patches


def _split_selector(text: str) -> List[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def label_matcher(selector: str) -> Callable[[Dict[str, str]], bool]:
    """A predicate over a labels dict for a Kubernetes label selector string."""
    tests: List[Callable[[Dict[str, str]], bool]] = []
    for term in _split_selector(selector or ""):
        m = re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\((.*)\)", term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                tests.append(lambda lb, k=key, vs=values: lb.get(k) in vs)
            else:
                tests.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)
            continue
        m = re.fullmatch(r"([^\s!=]+)\s*(==|=|!=)\s*(.*)", term)
        if m:
            key, op, value = m.group(1), m.group(2), m.group(3).strip()
            if op == "!=":
                tests.append(lambda lb, k=key, v=value: lb.get(k) != v)
            else:
                tests.append(lambda lb, k=key, v=value: lb.get(k) == v)
            continue
        if term.startswith("!"):
            tests.append(lambda lb, k=term[1:].strip(): k not in lb)
        else:
            tests.append(lambda lb, k=term: k in lb)
    return lambda labels: all(t(labels) for t in tests)


def _dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def field_matcher(selector: str) -> Callable[[dict], bool]:
    tests: List[Callable[[dict], bool]] = []
    for term in _split_selector(selector or ""):
        m = re.fullmatch(r"([^\s!=]+)\s*(==|=|!=)\s*(.*)", term)
        if not m:
            raise ApiError(400, "invalid field selector: %s" % term)
        path, op, value = m.group(1), m.group(2), m.group(3).strip()

        def test(obj: dict, p: str = path, o: str = op, v: str = value) -> bool:
            got = _dig(obj, p)
            got_text = "" if got is None else (str(got).lower() if isinstance(got, bool) else str(got))
            return (got_text != v) if o == "!=" else (got_text == v)

        tests.append(test)
    return lambda obj: all(t(obj) for t in tests)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> List[str]:
    if path == "":
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def json_patch(target: Any, ops: List[dict]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, test, copy, move)."""
    doc = copy.deepcopy(target)

    def parent(path: str) -> Tuple[Any, str]:
        parts = _pointer(path)
        if not parts:
            raise ApiError(422, "json patch: empty path")
        node = doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, parts[-1]

    def get(path: str) -> Any:
        node = doc
        for part in _pointer(path):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    try:
        for op in ops:
            kind, path = op["op"], op["path"]
            if kind == "test":
                if get(path) != op.get("value"):
                    raise ApiError(422, "json patch test failed at %s" % path)
                continue
            if kind in ("copy", "move"):
                value = copy.deepcopy(get(op["from"]))
                if kind == "move":
                    node, key = parent(op["from"])
                    del node[int(key) if isinstance(node, list) else key]
                kind = "add"
            else:
                value = op.get("value")
            node, key = parent(path)
            if isinstance(node, list):
                index = len(node) if key == "-" else int(key)
                if kind == "add":
                    node.insert(index, value)
                elif kind == "remove":
                    del node[index]
                elif kind == "replace":
                    node[index] = value
            else:
                if kind in ("remove", "replace") and key not in node:
                    raise ApiError(422, "json patch: path %s does not exist" % path)
                if kind == "remove":
                    del node[key]
                else:
                    node[key] = value
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ApiError(422, "json patch failed: %s" % exc) from None
    return doc


# --------------------------------------------------------------------------- log and faults


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: Dict[str, str]
    verb: str = ""  # get list watch create update patch delete discovery
    group: Optional[str] = None
    version: Optional[str] = None
    plural: Optional[str] = None
    namespace: Optional[str] = None
    name: Optional[str] = None
    subresource: Optional[str] = None
    status: int = 0
    body: Any = None
    fault: Optional[str] = None
    time: float = field(default_factory=time.monotonic)


@dataclass
class _Fault:
    kind: str  # status delay reset lose
    count: int
    method: Optional[str]
    path: Optional[str]
    code: int = 500
    message: str = ""
    seconds: float = 0.0
    then: str = "process"

    def matches(self, method: str, path: str) -> bool:
        if self.count <= 0:
            return False
        if self.method and self.method.upper() != method:
            return False
        return not (self.path and not re.search(self.path, path))


WRITE_VERBS = ("create", "update", "patch", "delete")


# --------------------------------------------------------------------------- the store


class _Store:
    """Objects by (group, plural, namespace, name), one resource-version counter, event history."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.objects: Dict[Tuple[str, str, str, str], dict] = {}
        self.rv = 1
        self.compacted = 0
        self.history: List[Tuple[int, str, Tuple[str, str], dict]] = []
        self.watch_epoch = 0
        self.stopping = False

    def bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def emit(self, etype: str, rt: ResourceType, obj: dict) -> None:
        self.history.append((int(obj["metadata"]["resourceVersion"]), etype, (rt.group, rt.plural), copy.deepcopy(obj)))
        self.cond.notify_all()


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: Tuple[str, int], handler: type, double: KubeDouble) -> None:
        self.double = double
        super().__init__(addr, handler)


class KubeDouble:
    """The double; see the module docstring."""

    def __init__(self, resources: Tuple[ResourceType, ...] = DEFAULT_RESOURCES, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._types: Dict[Tuple[str, str], ResourceType] = {}
        for rt in resources:
            self.register(rt)
        self.store = _Store()
        self.requests: List[LoggedRequest] = []
        self._faults: List[_Fault] = []
        self._lock = threading.Lock()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._conns: set = set()
        self.watch_gone_as_http = False
        self._stop_event = threading.Event()

    # ----------------------------------------------------------------- lifecycle

    def register(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.plural)] = rt

    def start(self) -> KubeDouble:
        self._listen()
        return self

    def _listen(self) -> None:
        server = _Server((self.host, self.port), _Handler, self)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._cut_connections()

    def _cut_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stop_event.set()
        with self.store.cond:
            self.store.stopping = True
            self.store.cond.notify_all()
        self._unlisten()

    def __enter__(self) -> KubeDouble:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return "http://%s:%d" % (self.host, self.port)

    def configuration(self, **attrs: Any) -> Any:
        """A ``kubernetes.client.Configuration`` pointing at the double."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        for key, value in attrs.items():
            setattr(cfg, key, value)
        return cfg

    def api_client(self, **attrs: Any) -> Any:
        from kubernetes import client

        return client.ApiClient(self.configuration(**attrs))

    def write_kubeconfig(self, path: str, namespace: str = "default") -> str:
        """A kubeconfig file for this double (plain HTTP, no credentials), mode 0600."""
        text = (
            "apiVersion: v1\nkind: Config\ncurrent-context: double\n"
            "clusters:\n- name: double\n  cluster:\n    server: %s\n"
            "contexts:\n- name: double\n  context:\n    cluster: double\n    user: double\n    namespace: %s\n"
            "users:\n- name: double\n  user: {}\n" % (self.url, namespace)
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return path

    # ----------------------------------------------------------------- faults

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def fail(self, code: int = 500, count: int = 1, method: Optional[str] = None, path: Optional[str] = None, message: str = "") -> None:
        """The next ``count`` matching requests get HTTP ``code`` with a Status body."""
        self._add_fault(_Fault("status", count, method, path, code=code, message=message or "injected fault"))

    def conflict(self, count: int = 1, method: Optional[str] = None, path: Optional[str] = None) -> None:
        self._add_fault(
            _Fault("status", count, method, path, code=409,
                   message="Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again")
        )

    def delay(self, seconds: float, count: int = 1, method: Optional[str] = None, path: Optional[str] = None, then: str = "process") -> None:
        """Stall the next ``count`` matching requests; then handle them (``process``) or drop the connection."""
        self._add_fault(_Fault("delay", count, method, path, seconds=seconds, then=then))

    def reset(self, count: int = 1, method: Optional[str] = None, path: Optional[str] = None) -> None:
        """Answer the next ``count`` matching requests with a TCP reset (nothing is done)."""
        self._add_fault(_Fault("reset", count, method, path))

    def lose_response(self, count: int = 1, method: Optional[str] = None, path: Optional[str] = None) -> None:
        """Handle the next ``count`` matching requests, then reset instead of answering (a lost answer)."""
        self._add_fault(_Fault("lose", count, method, path))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def refuse_connections(self) -> None:
        """Stop listening (connection refused) and cut open connections."""
        self._unlisten()

    def accept_connections(self) -> None:
        self._listen()

    def close_watches(self) -> None:
        with self.store.cond:
            self.store.watch_epoch += 1
            self.store.cond.notify_all()

    def _take_fault(self, method: str, path: str) -> Optional[_Fault]:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.count -= 1
                    return fault
        return None

    # ----------------------------------------------------------------- log

    def _log(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(entry)

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def log(self, **match: Any) -> List[LoggedRequest]:
        """Logged requests whose attributes equal every ``match`` item (``verb=("create", "update")`` allowed)."""
        with self._lock:
            entries = list(self.requests)
        out = []
        for entry in entries:
            ok = True
            for key, want in match.items():
                got = getattr(entry, key)
                if isinstance(want, (tuple, list, set)):
                    ok = got in want
                else:
                    ok = got == want
                if not ok:
                    break
            if ok:
                out.append(entry)
        return out

    def count(self, **match: Any) -> int:
        return len(self.log(**match))

    def writes(self, **match: Any) -> int:
        """Writes (create/update/patch/delete) that reached the store (2xx)."""
        verbs = match.pop("verb", WRITE_VERBS)
        verbs = tuple(v for v in ((verbs,) if isinstance(verbs, str) else verbs) if v in WRITE_VERBS)
        return sum(1 for e in self.log(verb=verbs, **match) if 200 <= e.status < 300)

    # ----------------------------------------------------------------- direct store access

    def resource_type(self, group: str, plural: str) -> ResourceType:
        rt = self._types.get((group, plural))
        if rt is None:
            raise KeyError("unknown resource %s.%s" % (plural, group))
        return rt

    def type_for(self, api_version: str, kind: str) -> ResourceType:
        group = api_version.rpartition("/")[0] if "/" in api_version else ""
        for rt in self._types.values():
            if rt.group == group and rt.kind == kind:
                return rt
        raise KeyError("unknown kind %s %s" % (api_version, kind))

    def put(self, obj: dict) -> dict:
        """Store ``obj`` as is (status included), filling metadata; emits ADDED or MODIFIED."""
        rt = self.type_for(obj["apiVersion"], obj["kind"])
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not rt.namespaced:
            meta.pop("namespace", None)
        elif not meta.get("namespace"):
            meta["namespace"] = "default"
        with self.store.cond:
            key = (rt.group, rt.plural, meta.get("namespace", ""), meta["name"])
            old = self.store.objects.get(key)
            meta.setdefault("uid", old["metadata"]["uid"] if old else str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", old["metadata"]["creationTimestamp"] if old else _now_text())
            meta.setdefault("generation", 1)
            meta["resourceVersion"] = self.store.bump()
            self._fold_secret(rt, obj)
            self.store.objects[key] = obj
            self.store.emit("MODIFIED" if old else "ADDED", rt, obj)
            return copy.deepcopy(obj)

    def get(self, group: str, plural: str, namespace: str, name: str) -> Optional[dict]:
        with self.store.cond:
            obj = self.store.objects.get((group, plural, namespace or "", name))
            return copy.deepcopy(obj) if obj else None

    def objects(self, group: str, plural: str, namespace: Optional[str] = None) -> List[dict]:
        with self.store.cond:
            return [
                copy.deepcopy(o)
                for (g, p, ns, _), o in sorted(self.store.objects.items())
                if g == group and p == plural and (namespace is None or ns == namespace)
            ]

    def modify(self, group: str, plural: str, namespace: str, name: str, fn: Callable[[dict], Any]) -> dict:
        """Change a stored object in place with ``fn(obj)``; bumps resourceVersion, emits MODIFIED."""
        rt = self.resource_type(group, plural)
        with self.store.cond:
            obj = self.store.objects[(group, plural, namespace or "", name)]
            fn(obj)
            obj["metadata"]["resourceVersion"] = self.store.bump()
            self.store.emit("MODIFIED", rt, obj)
            return copy.deepcopy(obj)

    def remove(self, group: str, plural: str, namespace: str, name: str) -> None:
        rt = self.resource_type(group, plural)
        with self.store.cond:
            obj = self.store.objects.pop((group, plural, namespace or "", name))
            obj["metadata"]["resourceVersion"] = self.store.bump()
            self.store.emit("DELETED", rt, obj)

    def compact(self) -> int:
        """Forget the event history: watches from an older resourceVersion get 410 Expired."""
        with self.store.cond:
            self.store.compacted = self.store.rv
            self.store.history.clear()
            return self.store.rv

    @property
    def resource_version(self) -> int:
        with self.store.cond:
            return self.store.rv

    @staticmethod
    def _fold_secret(rt: ResourceType, obj: dict) -> None:
        if rt.group == "" and rt.plural == "secrets" and "stringData" in obj:
            data = obj.setdefault("data", {}) or {}
            for key, value in (obj.pop("stringData") or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            obj["data"] = data

    # ----------------------------------------------------------------- request handling (server threads)

    def _route(self, path: str) -> Tuple[str, Dict[str, Any]]:
        """Map a URL path to ('discovery'|'resource', info)."""
        parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/") if p]
        if not parts:
            raise ApiError(404, "the server could not find the requested resource")
        if parts[0] == "api":
            if len(parts) == 1:
                return "discovery", {"what": "core"}
            if parts[1] != "v1":
                raise ApiError(404, "the server could not find the requested resource")
            group, version, rest = "", "v1", parts[2:]
            if not rest:
                return "discovery", {"what": "resources", "group": "", "version": "v1"}
        elif parts[0] == "apis":
            if len(parts) == 1:
                return "discovery", {"what": "groups"}
            group = parts[1]
            if len(parts) == 2:
                return "discovery", {"what": "group", "group": group}
            version, rest = parts[2], parts[3:]
            if not rest:
                return "discovery", {"what": "resources", "group": group, "version": version}
        else:
            raise ApiError(404, "the server could not find the requested resource")
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if len(rest) > 3:
            raise ApiError(404, "the server could not find the requested resource")
        rt = self._types.get((group, plural))
        if rt is None or version not in rt.versions:
            raise ApiError(404, "the server could not find the requested resource")
        if rt.namespaced is False and namespace is not None:
            raise ApiError(404, "the server could not find the requested resource")
        if sub is not None and (sub != "status" or not (rt.status_subresource or (group == "" and plural == "namespaces"))):
            raise ApiError(404, "the server could not find the requested resource")
        return "resource", {"rt": rt, "version": version, "namespace": namespace, "name": name, "sub": sub}

    def _discovery(self, info: Dict[str, Any]) -> dict:
        what = info["what"]
        if what == "core":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        groups: Dict[str, List[str]] = {}
        for rt in self._types.values():
            if rt.group:
                groups.setdefault(rt.group, [])
                for v in rt.versions:
                    if v not in groups[rt.group]:
                        groups[rt.group].append(v)

        def group_doc(name: str) -> dict:
            versions = [{"groupVersion": "%s/%s" % (name, v), "version": v} for v in groups[name]]
            return {"name": name, "versions": versions, "preferredVersion": versions[-1]}

        if what == "groups":
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group_doc(g) for g in sorted(groups)]}
        if what == "group":
            if info["group"] not in groups:
                raise ApiError(404, "the server could not find the requested resource")
            return dict(group_doc(info["group"]), kind="APIGroup", apiVersion="v1")
        group, version = info["group"], info["version"]
        resources = []
        for rt in self._types.values():
            if rt.group == group and version in rt.versions:
                verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
                resources.append({"name": rt.plural, "singularName": rt.kind.lower(), "namespaced": rt.namespaced, "kind": rt.kind, "verbs": verbs})
                if rt.status_subresource:
                    resources.append({"name": rt.plural + "/status", "singularName": "", "namespaced": rt.namespaced, "kind": rt.kind, "verbs": ["get", "patch", "update"]})
        if not resources:
            raise ApiError(404, "the server could not find the requested resource")
        gv = "%s/%s" % (group, version) if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    @staticmethod
    def _api_version(rt: ResourceType, version: str) -> str:
        return "%s/%s" % (rt.group, version) if rt.group else version

    def _present(self, rt: ResourceType, version: str, obj: dict) -> dict:
        out = copy.deepcopy(obj)
        out["apiVersion"] = self._api_version(rt, version)
        out["kind"] = rt.kind
        return out

    def _not_found(self, rt: ResourceType, name: str) -> ApiError:
        return ApiError(404, '%s "%s" not found' % (rt.qualified, name), details={"name": name, "group": rt.group, "kind": rt.plural})

    def _key(self, rt: ResourceType, namespace: Optional[str], name: str) -> Tuple[str, str, str, str]:
        return (rt.group, rt.plural, namespace or "" if rt.namespaced else "", name)

    def handle_get(self, r: Dict[str, Any], query: Dict[str, str]) -> dict:
        rt, version, ns, name = r["rt"], r["version"], r["namespace"], r["name"]
        with self.store.cond:
            obj = self.store.objects.get(self._key(rt, ns, name))
            if obj is None:
                raise self._not_found(rt, name)
            return self._present(rt, version, obj)

    def _selected(self, rt: ResourceType, ns: Optional[str], query: Dict[str, str]) -> Callable[[str, dict], bool]:
        labels = label_matcher(query.get("labelSelector", ""))
        fields = field_matcher(query.get("fieldSelector", ""))

        def ok(obj_ns: str, obj: dict) -> bool:
            if rt.namespaced and ns is not None and obj_ns != ns:
                return False
            return labels(obj.get("metadata", {}).get("labels") or {}) and fields(obj)

        return ok

    def handle_list(self, r: Dict[str, Any], query: Dict[str, str]) -> dict:
        rt, version, ns = r["rt"], r["version"], r["namespace"]
        ok = self._selected(rt, ns, query)
        with self.store.cond:
            items = [
                self._present(rt, version, o)
                for (g, p, ons, _), o in sorted(self.store.objects.items())
                if g == rt.group and p == rt.plural and ok(ons, o)
            ]
            rv = str(self.store.rv)
        return {"apiVersion": self._api_version(rt, version), "kind": rt.kind + "List", "metadata": {"resourceVersion": rv}, "items": items}

    def handle_create(self, r: Dict[str, Any], body: Any) -> Tuple[int, dict]:
        rt, version, ns = r["rt"], r["version"], r["namespace"]
        if r["name"] is not None:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request was in an unknown format")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {}) or {}
        obj["metadata"] = meta
        if rt.namespaced:
            if ns is None:
                raise ApiError(404, "the server could not find the requested resource")
            if meta.get("namespace") and meta["namespace"] != ns:
                raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = ns
        with self.store.cond:
            if not meta.get("name"):
                prefix = meta.get("generateName")
                if not prefix:
                    raise ApiError(422, "%s is invalid: metadata.name: Required value: name or generateName is required" % rt.kind, reason="Invalid")
                for _ in range(100):
                    candidate = prefix + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
                    if self._key(rt, ns, candidate) not in self.store.objects:
                        break
                meta["name"] = candidate
            key = self._key(rt, ns, meta["name"])
            if key in self.store.objects:
                raise ApiError(409, '%s "%s" already exists' % (rt.qualified, meta["name"]), reason="AlreadyExists",
                               details={"name": meta["name"], "group": rt.group, "kind": rt.plural})
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now_text()
            meta["generation"] = 1
            meta.pop("deletionTimestamp", None)
            meta["resourceVersion"] = self.store.bump()
            if rt.status_subresource:
                obj.pop("status", None)
            obj["apiVersion"], obj["kind"] = self._api_version(rt, version), rt.kind
            self._fold_secret(rt, obj)
            self.store.objects[key] = obj
            self.store.emit("ADDED", rt, obj)
            return 201, self._present(rt, version, obj)

    def _write(self, r: Dict[str, Any], new: dict, check_rv: Optional[str]) -> dict:
        """Store ``new`` for the object at ``r`` (lock held), applying subresource and rv rules."""
        rt, version, ns, name, sub = r["rt"], r["version"], r["namespace"], r["name"], r["sub"]
        key = self._key(rt, ns, name)
        old = self.store.objects.get(key)
        if old is None:
            raise self._not_found(rt, name)
        if check_rv and check_rv != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                'Operation cannot be fulfilled on %s "%s": the object has been modified; please apply your changes to the latest version and try again'
                % (rt.qualified, name),
                details={"name": name, "group": rt.group, "kind": rt.plural},
            )
        if sub == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = copy.deepcopy(new["status"])
            else:
                result.pop("status", None)
        else:
            result = copy.deepcopy(new)
            meta = result.setdefault("metadata", {}) or {}
            result["metadata"] = meta
            for keep in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp"):
                if keep in old["metadata"]:
                    meta[keep] = old["metadata"][keep]
                else:
                    meta.pop(keep, None)
            if rt.status_subresource:
                if "status" in old:
                    result["status"] = copy.deepcopy(old["status"])
                else:
                    result.pop("status", None)
            meta["generation"] = old["metadata"].get("generation", 1) + (1 if result.get("spec") != old.get("spec") else 0)
            self._fold_secret(rt, result)
        result["apiVersion"], result["kind"] = self._api_version(rt, version), rt.kind
        result["metadata"]["resourceVersion"] = self.store.bump()
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            del self.store.objects[key]
            self.store.emit("DELETED", rt, result)
        else:
            self.store.objects[key] = result
            self.store.emit("MODIFIED", rt, result)
        return self._present(rt, version, result)

    def handle_update(self, r: Dict[str, Any], body: Any) -> dict:
        if r["name"] is None or not isinstance(body, dict):
            raise ApiError(400, "the body of the request was in an unknown format")
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != r["name"]:
            raise ApiError(400, "the name of the object (%s) does not match the name on the URL (%s)" % (meta["name"], r["name"]))
        with self.store.cond:
            return self._write(r, body, meta.get("resourceVersion") or None)

    def handle_patch(self, r: Dict[str, Any], body: Any, content_type: str) -> dict:
        rt = r["rt"]
        if r["name"] is None:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        ctype = content_type.split(";")[0].strip()
        with self.store.cond:
            old = self.store.objects.get(self._key(rt, r["namespace"], r["name"]))
            if old is None:
                raise self._not_found(rt, r["name"])
            if ctype == "application/json-patch+json":
                if not isinstance(body, list):
                    raise ApiError(400, "json patch body must be a list")
                new = json_patch(old, body)
                check = None
            elif ctype == "application/merge-patch+json" or (ctype == "application/strategic-merge-patch+json" and rt.group == ""):
                if not isinstance(body, dict):
                    raise ApiError(400, "merge patch body must be an object")
                new = merge_patch(old, body)
                check = (body.get("metadata") or {}).get("resourceVersion")
            else:
                raise ApiError(415, "the body of the request was in an unknown format - accepted media types include: "
                               "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
            return self._write(r, new, check)

    def handle_delete(self, r: Dict[str, Any]) -> dict:
        rt, ns, name = r["rt"], r["namespace"], r["name"]
        if name is None:
            raise ApiError(405, "the server does not allow this method on the requested resource")
        with self.store.cond:
            key = self._key(rt, ns, name)
            obj = self.store.objects.get(key)
            if obj is None:
                raise self._not_found(rt, name)
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = self.store.bump()
            if obj["metadata"].get("finalizers"):
                obj["metadata"].setdefault("deletionTimestamp", _now_text())
                self.store.objects[key] = obj
                self.store.emit("MODIFIED", rt, obj)
                return self._present(rt, r["version"], obj)
            del self.store.objects[key]
            self.store.emit("DELETED", rt, obj)
        status = _status_body(200, "", reason="", details={"name": name, "group": rt.group, "kind": rt.plural, "uid": obj["metadata"]["uid"]})
        status["status"] = "Success"
        return status

    def watch_precheck(self, r: Dict[str, Any], query: Dict[str, str]) -> None:
        """Raise the ApiError a watch request gets before any event (bad selector, 400; 410)."""
        self._selected(r["rt"], r["namespace"], query)
        rv_text = query.get("resourceVersion") or ""
        if rv_text in ("", "0"):
            return
        try:
            start_rv = int(rv_text)
        except ValueError:
            raise ApiError(400, "invalid resource version: %s" % rv_text) from None
        with self.store.cond:
            if start_rv < self.store.compacted:
                raise ApiError(410, "too old resource version: %d (%d)" % (start_rv, self.store.compacted), reason="Expired")

    def watch_events(self, r: Dict[str, Any], query: Dict[str, str]) -> Iterator[dict]:
        """Yield watch events (dicts) for a watch request until timeout, close_watches() or stop()."""
        rt, version, ns = r["rt"], r["version"], r["namespace"]
        ok = self._selected(rt, ns, query)
        timeout = float(query.get("timeoutSeconds") or 0) or None
        deadline = time.monotonic() + timeout if timeout else None
        rv_text = query.get("resourceVersion") or ""
        store = self.store
        with store.cond:
            epoch = store.watch_epoch
            if rv_text in ("", "0"):
                start_rv = store.rv
                initial = [
                    {"type": "ADDED", "object": self._present(rt, version, o)}
                    for (g, p, ons, _), o in sorted(store.objects.items())
                    if g == rt.group and p == rt.plural and ok(ons, o)
                ]
            else:
                try:
                    start_rv = int(rv_text)
                except ValueError:
                    raise ApiError(400, "invalid resource version: %s" % rv_text) from None
                if start_rv < store.compacted:
                    raise ApiError(410, "too old resource version: %d (%d)" % (start_rv, store.compacted), reason="Expired")
                initial = []
        yield from initial
        last = start_rv
        while True:
            with store.cond:
                while True:
                    if store.stopping or store.watch_epoch != epoch:
                        return
                    pending = [h for h in store.history if h[0] > last]
                    if pending:
                        break
                    wait = None if deadline is None else deadline - time.monotonic()
                    if wait is not None and wait <= 0:
                        return
                    store.cond.wait(min(wait, 0.5) if wait is not None else 0.5)
            for rv, etype, gp, obj in pending:
                last = rv
                if gp != (rt.group, rt.plural):
                    continue
                if ok(obj.get("metadata", {}).get("namespace", ""), obj):
                    yield {"type": etype, "object": self._present(rt, version, obj)}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.double._lock:
            self.server.double._conns.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.double._lock:
            self.server.double._conns.discard(self.connection)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send_json(self, code: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def _reset(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.close()
        self.close_connection = True

    def _dispatch(self, method: str) -> None:
        double = self.server.double
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        entry = LoggedRequest(method=method, path=url.path, query=query)
        try:
            entry.body = json.loads(raw) if raw else None
        except ValueError:
            entry.body = raw.decode("utf-8", "replace")
        try:
            kind, info = double._route(url.path)
        except ApiError as err:
            kind, info = "error", {"err": err}
        if kind == "resource":
            entry.group, entry.version, entry.plural = info["rt"].group, info["version"], info["rt"].plural
            entry.namespace, entry.name, entry.subresource = info["namespace"], info["name"], info["sub"]
            watching = query.get("watch") in ("1", "true", "True")
            entry.verb = {
                "GET": "watch" if watching else ("get" if info["name"] else "list"),
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete",
            }[method]
        else:
            entry.verb = "discovery"
        double._log(entry)  # logged now; ``status`` is filled in when known (0 while in progress)
        fault = double._take_fault(method, url.path)
        if fault is not None:
            entry.fault = fault.kind
            if fault.kind == "reset":
                entry.status = -1
                self._reset()
                return
            if fault.kind == "status":
                entry.status = fault.code
                self._send_json(fault.code, _status_body(fault.code, fault.message))
                return
            if fault.kind == "delay":
                double._stop_event.wait(fault.seconds)
                if fault.then == "drop":
                    entry.status = -1
                    self._reset()
                    return
        try:
            if kind == "error":
                raise info["err"]
            if kind == "discovery":
                if method != "GET":
                    raise ApiError(405, "the server does not allow this method on the requested resource")
                code, doc = 200, double._discovery(info)
            elif entry.verb == "watch":
                entry.status = 200
                self._stream_watch(info, query, entry)
                return
            elif entry.verb == "get":
                code, doc = 200, double.handle_get(info, query)
            elif entry.verb == "list":
                code, doc = 200, double.handle_list(info, query)
            elif entry.verb == "create":
                code, doc = double.handle_create(info, entry.body)
            elif entry.verb == "update":
                code, doc = 200, double.handle_update(info, entry.body)
            elif entry.verb == "patch":
                code, doc = 200, double.handle_patch(info, entry.body, self.headers.get("Content-Type", ""))
            else:
                code, doc = 200, double.handle_delete(info)
        except ApiError as err:
            code, doc = err.code, err.body
        entry.status = code
        if fault is not None and fault.kind == "lose":
            self._reset()
            return
        self._send_json(code, doc)

    def _stream_watch(self, info: Dict[str, Any], query: Dict[str, str], entry: LoggedRequest) -> None:
        # Like a real API server, answer the headers at once (before any event), so a client
        # blocked on a quiet watch is reading the body and can be interrupted there.
        double = self.server.double
        try:
            double.watch_precheck(info, query)
            events: Iterator[dict] = double.watch_events(info, query)
        except ApiError as err:
            if err.code == 410 and not double.watch_gone_as_http:
                events = iter([{"type": "ERROR", "object": err.body}])
            else:
                entry.status = err.code
                self._send_json(err.code, err.body)
                return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self.wfile.flush()
            try:
                for event in events:
                    self._chunk(json.dumps(event).encode() + b"\n")
            except ApiError as err:  # compacted between the check and the first event
                self._chunk(json.dumps({"type": "ERROR", "object": err.body}).encode() + b"\n")
            self._chunk(b"")
        except OSError:
            self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


# --------------------------------------------------------------------------- seeds


def load_seed(name: str, **subst: str) -> List[dict]:
    """The objects of ``tests/kube_seed/<name>.yaml`` with ``$KEY`` placeholders substituted."""
    import yaml

    with open(os.path.join(SEED_DIR, name + ".yaml"), encoding="utf-8") as fh:
        text = fh.read()
    text = string.Template(text).safe_substitute(subst)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def seed_nnf(double: KubeDouble, root: str = "", **subst: str) -> List[dict]:
    """Load the nnf-resources.md scenario (``tests/kube_seed/nnf-scenario.yaml``) into ``double``.

    ``root`` prefixes the Rabbit-side paths (rabbit ClientMount mount paths and the Lustre
    ``mountRoot``) so a test can make them real directories; compute-side paths stay as in
    the spec. Returns the stored objects.
    """
    values = {"ROOT": root.rstrip("/")}
    values.update(subst)
    return [double.put(obj) for obj in load_seed("nnf-scenario", **values)]


def kube_double_fixture() -> Iterator[KubeDouble]:
    with KubeDouble() as double:
        yield double


try:  # a ready-made fixture: ``from kube_double import kube_double``
    import pytest

    kube_double = pytest.fixture(name="kube_double")(kube_double_fixture)
except ImportError:  # pragma: no cover - pytest is always there in tests
    kube_double = None  # type: ignore[assignment]
