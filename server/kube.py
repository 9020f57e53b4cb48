"""The server side's one Kubernetes layer: its errors, its configuration loader, its precedence.

The nnf driver (``nnf/kube.py``: async verbs over a thread pool) and the admin tool
(``admin_kube.py``: a few blocking calls) both load their configuration here and raise
``KubeError`` (and its kinds) only. The Flux side keeps its own small synchronous layer in
``flux_plugin/kube.py`` because it runs under the site's ``flux python`` (3.9, no tornado, no
server extra) and must not import the server; it follows the same precedence and error shape.

Precedence (client-go's and controller-runtime's, which nnf-dm's Go server uses): an explicit
file, else ``$KUBECONFIG``, else the pod's service account (in-cluster), else
``~/.kube/config``.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
from typing import Any, Mapping, Optional, Tuple

TRANSIENT_CODES = frozenset({429, 500, 502, 503, 504})


class KubeError(Exception):
    """A Kubernetes failure; ``message`` is one line, ``status`` the HTTP code (None: no answer)."""

    transient = False

    def __init__(self, message: str, status: Optional[int] = None, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


class KubeNotFound(KubeError):
    """404: the object (or the API version) does not exist."""


class KubeConflict(KubeError):
    """409 Conflict: a write with a stale resourceVersion."""


class KubeAlreadyExists(KubeError):
    """409 AlreadyExists: a create whose name is taken."""


class KubeInvalid(KubeError):
    """422 Invalid: the API server refused the object (an immutable field, a bad value)."""


class KubeUnavailable(KubeError):
    """No usable answer (connection refused/reset, timeout, 5xx, 429) after the retries."""

    transient = True


def status_message(exc: Any) -> str:
    """The ``message`` of an ApiException's Status body, else ``<code> <reason>``."""
    doc = _status_body(exc)
    if doc.get("message"):
        return str(doc["message"])
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None) or ""
    return ("%s %s" % (status, reason)).strip() if status else str(exc)


def _status_body(exc: Any) -> dict:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            doc = json.loads(body)
        except ValueError:
            return {}
        if isinstance(doc, dict):
            return doc
    return {}


def map_api_exception(exc: Any) -> KubeError:
    """A ``kubernetes`` ApiException as one of ours, by HTTP code (and Status reason)."""
    status = getattr(exc, "status", None) or None
    message = status_message(exc)
    reason = str(_status_body(exc).get("reason") or "")
    if status == 404:
        return KubeNotFound(message, status, reason)
    if status == 409:
        cls = KubeAlreadyExists if reason == "AlreadyExists" else KubeConflict
        return cls(message, status, reason)
    if status == 422:
        return KubeInvalid(message, status, reason)
    if status is None or status in TRANSIENT_CODES:
        return KubeUnavailable(message, status, reason)
    return KubeError(message, status, reason)


def load_configuration(kubeconfig: Optional[str] = None, context: Optional[str] = None,
                       environ: Optional[Mapping[str, str]] = None) -> Tuple[Any, str]:
    """A ``kubernetes.client.Configuration`` and where it came from, in the one precedence.

    Blocking file reads: call it off an event loop. Raises KubeError with one line to print.
    """
    from kubernetes import client, config

    env = os.environ if environ is None else environ
    cfg = client.Configuration()
    default = os.path.expanduser("~/.kube/config")
    path = kubeconfig or env.get("KUBECONFIG") or ""
    try:
        if path:
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg,
                                    persist_config=False)
            return cfg, path
        if env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT"):
            config.load_incluster_config(client_configuration=cfg)
            return cfg, "the pod's service account (in-cluster)"
        if os.path.exists(default):
            config.load_kube_config(config_file=default, context=context, client_configuration=cfg,
                                    persist_config=False)
            return cfg, default
    except config.ConfigException as exc:
        raise KubeError("cannot load the Kubernetes configuration%s: %s" % (_from(path), one_line(exc))) from None
    except OSError as exc:
        raise KubeError("cannot read the Kubernetes configuration%s: %s"
                        % (_from(path or default), exc.strerror or exc)) from None
    except (ValueError, TypeError, KeyError) as exc:  # a kubeconfig that is YAML but not a kubeconfig
        raise KubeError("invalid Kubernetes configuration%s: %s" % (_from(path or default), one_line(exc))) from None
    raise KubeError("no Kubernetes configuration: pass --kubeconfig FILE, set KUBECONFIG, "
                    "or run inside a pod with a service account")


def warm_pool(pool: concurrent.futures.ThreadPoolExecutor, threads: int) -> None:
    """Make ``pool`` start all ``threads`` workers (each new submit starts one while none is idle)."""
    gate = threading.Event()
    futures = [pool.submit(gate.wait, 5) for _ in range(threads)]
    gate.set()
    concurrent.futures.wait(futures)


def one_line(value: Any, limit: int = 300) -> str:
    """The first line of ``value``'s text, cut to ``limit`` (an error text stays one line)."""
    text = str(value).strip().splitlines()
    return text[0][:limit] if text else type(value).__name__


def _from(path: Optional[str]) -> str:
    return " from %s" % path if path else ""
