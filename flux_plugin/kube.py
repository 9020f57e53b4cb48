"""The Kubernetes calls the service makes, and nothing else: list, watch, read one Secret.

Why a layer of its own beside the server's (``copy_offload.server.kube``): this one runs under
the site's ``flux python`` (3.9, no tornado, no server extra) and must never import the server,
and its calls block in helper threads rather than run on an event loop. It keeps the server's
precedence (an explicit file, else ``$KUBECONFIG``, else in-cluster, else ``~/.kube/config``) and
error shape (``KubeError(message, status)``).

Every call blocks, so only helper threads use this module (never the Flux reactor). Errors
from the ``kubernetes`` package and urllib3 are mapped here to one KubeError carrying the HTTP
code (0 for transport failures) and a short text that never includes a Secret's content.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from copy_offload.flux.config import ServiceConfig

PLURAL = "workflows"
TOKEN_KEY = "token"


class KubeError(Exception):
    """A failed Kubernetes call: ``status`` is the HTTP code, or 0 when none came back."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    @property
    def gone(self) -> bool:
        return self.status == 410

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.status else self.message


def _api_error(exc: Any) -> KubeError:
    """Map a kubernetes ApiException: keep the Status message, cut to a log-safe size."""
    status = int(getattr(exc, "status", 0) or 0)
    text = str(getattr(exc, "reason", "") or "")
    body = getattr(exc, "body", None)
    if body:
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and doc.get("kind") == "Status" and doc.get("message"):
                text = str(doc["message"])
        except (ValueError, TypeError):
            pass
    return KubeError(text[:256] or "no reason given", status)


def _watch_event(line: bytes) -> Optional[Tuple[str, Dict[str, Any]]]:
    """Decode one watch line; an ERROR event raises KubeError with the Status code (410...)."""
    line = line.strip()
    if not line:
        return None
    try:
        doc = json.loads(line)
    except ValueError as exc:
        raise KubeError(f"watch sent a line that is not JSON: {line[:80]!r}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("object"), dict):
        raise KubeError("watch sent an event without an object")
    kind, obj = str(doc.get("type", "")), doc["object"]
    if kind == "ERROR":
        raise KubeError(str(obj.get("message") or obj.get("reason") or "watch error")[:256],
                        int(obj.get("code") or 0))
    return kind, obj


def load_configuration(kubeconfig: str = "", environ: Optional[Mapping[str, str]] = None) -> Any:
    """A ``kubernetes.client.Configuration`` in the server's precedence: ``kubeconfig``, else
    ``$KUBECONFIG``, else in-cluster, else ``~/.kube/config``; KubeError when none loads."""
    import kubernetes

    env = os.environ if environ is None else environ
    cfg = kubernetes.client.Configuration()
    default = os.path.expanduser("~/.kube/config")
    path = kubeconfig or env.get("KUBECONFIG") or ""
    try:
        if path:
            kubernetes.config.load_kube_config(config_file=path, client_configuration=cfg, persist_config=False)
        elif env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT"):
            kubernetes.config.load_incluster_config(client_configuration=cfg)
        elif os.path.exists(default):
            kubernetes.config.load_kube_config(config_file=default, client_configuration=cfg, persist_config=False)
        else:
            raise KubeError("no Kubernetes configuration: set kubeconfig, KUBECONFIG, or run in a pod")
    except (kubernetes.config.ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        raise KubeError(f"cannot load Kubernetes configuration: {exc}") from exc
    return cfg


class KubeApi:
    """CustomObjectsApi for Workflows and CoreV1Api for Secrets, from one kubeconfig."""

    def __init__(self, cfg: ServiceConfig) -> None:
        import kubernetes  # lazily: the server and the client never need it

        self._k = kubernetes
        self._cfg = cfg
        client = kubernetes.client.ApiClient(load_configuration(cfg.kubeconfig))
        self._client = client
        self._custom = kubernetes.client.CustomObjectsApi(client)
        self._core = kubernetes.client.CoreV1Api(client)
        self._resp: Optional[Any] = None
        self._stopping = False

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import urllib3

        try:
            return fn(*args, **kwargs)
        except self._k.client.exceptions.ApiException as exc:
            raise _api_error(exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise KubeError(f"Kubernetes API unreachable: {type(reason).__name__}: "
                            f"{str(reason)[:200]}") from exc

    def list_workflows(self, version: str) -> Tuple[List[Dict[str, Any]], str]:
        """All Workflows in the namespace and the list's resourceVersion."""
        cfg = self._cfg
        doc = self._call(self._custom.list_namespaced_custom_object, cfg.api_group, version,
                         cfg.namespace, PLURAL, _request_timeout=cfg.request_timeout)
        if not isinstance(doc, dict):
            raise KubeError("Workflow list is not a JSON object")
        items = doc.get("items") or []
        rv = str((doc.get("metadata") or {}).get("resourceVersion") or "")
        return [i for i in items if isinstance(i, dict)], rv

    def watch_workflows(self, version: str, resource_version: str
                        ) -> Iterator[Tuple[str, Dict[str, Any]]]:
        """Yield (type, raw object) until the server ends the watch; 410 raises KubeError.

        The stream is read here rather than through ``kubernetes.watch.Watch`` so that
        ``stop_watch`` can cut the very response this thread is blocked on.
        """
        import urllib3

        cfg = self._cfg
        resp = self._call(self._custom.list_namespaced_custom_object, cfg.api_group, version,
                          cfg.namespace, PLURAL, watch=True, resource_version=resource_version,
                          timeout_seconds=cfg.watch_timeout, allow_watch_bookmarks=True,
                          _preload_content=False,
                          _request_timeout=(cfg.request_timeout,
                                            cfg.watch_timeout + cfg.request_timeout))
        self._resp = resp
        try:
            if self._stopping:  # stop_watch ran while the request was on its way
                return
            buf = b""
            for chunk in resp.stream(amt=None, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    event = _watch_event(line)
                    if event is not None:
                        yield event
            event = _watch_event(buf)
            if event is not None:
                yield event
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if self._stopping:
                return
            raise KubeError(f"watch broke: {type(exc).__name__}: {str(exc)[:200]}") from exc
        finally:
            self._resp = None
            resp.release_conn()

    def stop_watch(self) -> None:
        """Interrupt a watch running on another thread (it then ends quietly)."""
        self._stopping = True
        resp = self._resp
        if resp is not None:
            try:
                resp.shutdown()
            except (AttributeError, OSError):
                pass

    def read_token(self, name: str, namespace: str) -> str:
        """The decoded ``data.token`` of a Secret (the Workflow token)."""
        secret = self._call(self._core.read_namespaced_secret, name, namespace,
                            _request_timeout=self._cfg.request_timeout)
        data = getattr(secret, "data", None) or {}
        raw = data.get(TOKEN_KEY)
        if not raw:
            raise KubeError(f"Secret {namespace}/{name} has no data.{TOKEN_KEY}")
        try:
            return base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise KubeError(f"Secret {namespace}/{name} data.{TOKEN_KEY} is not "
                            "base64 UTF-8 text") from exc

    def close(self) -> None:
        self.stop_watch()
        try:
            self._client.close()
        except Exception:  # closing must never raise
            pass
