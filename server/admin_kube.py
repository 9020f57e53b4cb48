"""The admin tool's Kubernetes boundary: one small function per call, errors mapped here.

Every ``kubernetes`` and ``urllib3`` exception is translated at this one boundary into a
``ClusterError`` whose text is one line an administrator can act on (which server could not be
reached, which object is missing, which permission is lacking). Secret contents never appear
in a message. The API client is built per invocation from ``--kubeconfig``, ``KUBECONFIG``,
``~/.kube/config`` or the in-cluster service account, in that order; no global configuration.
"""

from __future__ import annotations

import base64
import json
import os
import re
from typing import Any, Dict, Optional

import urllib3
from copy_offload.server import admin_sysconf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

DWS_GROUP = "dataworkflowservices.github.io"
DWS_VERSIONS = ("v1alpha7", "v1alpha6")  # newest first, as flux-coral2 probes them
SYSCONF_PLURAL = "systemconfigurations"
TIMEOUT = (5, 30)  # (connect, read) seconds for every call


class ClusterError(RuntimeError):
    """A Kubernetes call that failed; ``str()`` is the one-line message for the administrator."""


def connect(kubeconfig: Optional[str] = None, context: Optional[str] = None) -> client.ApiClient:
    """An API client for ``--kubeconfig``, else ``KUBECONFIG``/``~/.kube/config``, else in-cluster."""
    cfg = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    default = os.path.expanduser("~/.kube/config")
    try:
        if path or os.path.exists(default):
            config.load_kube_config(
                config_file=path or default, context=context, client_configuration=cfg, persist_config=False
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
        else:
            raise ClusterError(
                "no Kubernetes configuration: pass --kubeconfig FILE, set KUBECONFIG, "
                "or run inside a pod with a service account"
            )
    except ConfigException as exc:
        raise ClusterError(f"cannot load the Kubernetes configuration{_from(path)}: {_line(exc)}") from None
    except OSError as exc:
        raise ClusterError(
            f"cannot read the Kubernetes configuration{_from(path or default)}: {exc.strerror or exc}"
        ) from None
    except (ValueError, TypeError, KeyError) as exc:  # a kubeconfig that is YAML but not a kubeconfig
        raise ClusterError(f"invalid Kubernetes configuration{_from(path)}: {_line(exc)}") from None
    cfg.retries = 1  # one retry for a dropped connection; a dead API server fails in seconds
    return client.ApiClient(cfg)


def get_system_configuration(api: client.ApiClient) -> Dict[str, Any]:
    """SystemConfiguration ``default/default``, from the newest DWS version the cluster serves."""
    objects = client.CustomObjectsApi(api)
    for version in DWS_VERSIONS:
        try:
            obj = _call(
                api,
                "read SystemConfiguration default/default",
                objects.get_namespaced_custom_object,
                DWS_GROUP,
                version,
                admin_sysconf.NAMESPACE,
                SYSCONF_PLURAL,
                admin_sysconf.NAME,
            )
        except _NotFound:
            continue
        found = admin_sysconf.pick([obj])
        if found is None:
            raise ClusterError("the API server returned something other than a SystemConfiguration")
        return found
    raise ClusterError(
        f"SystemConfiguration {admin_sysconf.NAMESPACE}/{admin_sysconf.NAME} not found in the cluster (check: kubectl get systemconfiguration {admin_sysconf.NAME})"
    )


def read_secret(api: client.ApiClient, namespace: str, name: str) -> Optional[Dict[str, bytes]]:
    """The decoded ``data`` of a Secret, or None when it does not exist."""
    core = client.CoreV1Api(api)
    try:
        secret = _call(api, f"read Secret {namespace}/{name}", core.read_namespaced_secret, name, namespace)
    except _NotFound:
        return None
    data = getattr(secret, "data", None) or {}
    try:
        return {key: base64.b64decode(value or "") for key, value in data.items()}
    except (ValueError, TypeError):
        raise ClusterError(f"Secret {namespace}/{name} holds data that is not base64") from None


def write_secret(
    api: client.ApiClient,
    namespace: str,
    name: str,
    data: Dict[str, bytes],
    secret_type: str,
    replace: bool,
) -> None:
    """Create the Secret, or (``replace``) put it in place of the existing one."""
    core = client.CoreV1Api(api)
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": secret_type,
        "data": {key: base64.b64encode(value).decode("ascii") for key, value in data.items()},
    }
    what = f"Secret {namespace}/{name}"
    if not replace:
        _call(api, "create " + what, core.create_namespaced_secret, namespace, body)
        return
    try:
        _call(api, "replace " + what, core.replace_namespaced_secret, name, namespace, body)
    except _NotFound:
        _call(api, "create " + what, core.create_namespaced_secret, namespace, body)
    except _Invalid:  # a Secret's type is immutable: replace it whole
        _call(api, "delete " + what, core.delete_namespaced_secret, name, namespace)
        _call(api, "create " + what, core.create_namespaced_secret, namespace, body)


class _NotFound(ClusterError):
    pass


class _Invalid(ClusterError):
    pass


def _call(api: client.ApiClient, what: str, func: Any, *args: Any) -> Any:
    """Run one API call and map every failure to a ClusterError naming ``what``."""
    host = api.configuration.host
    try:
        return func(*args, _request_timeout=TIMEOUT)
    except ApiException as exc:
        status = exc.status or 0
        if status == 404:
            raise _NotFound(f"cannot {what}: not found") from None
        if status == 422:
            raise _Invalid(f"cannot {what}: {_api_reason(exc)}") from None
        if status == 409:
            raise ClusterError(f"cannot {what}: it already exists (rerun with --force to replace it)") from None
        if status in (401, 403):
            raise ClusterError(
                f"cannot {what}: the API server at {host} refused it ({status} {exc.reason or ''}); "
                "check the credentials and RBAC"
            ) from None
        if status == 0:
            raise ClusterError(f"cannot {what}: {_line(exc.reason or exc)}") from None
        raise ClusterError(f"cannot {what}: {status} {_api_reason(exc)}") from None
    except urllib3.exceptions.HTTPError as exc:
        raise ClusterError(
            f"cannot reach the Kubernetes API server at {host} ({what}): {_network_reason(exc)}"
        ) from None
    except OSError as exc:
        raise ClusterError(f"cannot reach the Kubernetes API server at {host}: {exc.strerror or exc}") from None


def _network_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    match = re.search(r"\[Errno -?\d+\] ([^'\"\)]+)", text)
    if match:
        return match.group(1).strip()
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "TLS certificate verification failed"
    if "timed out" in text.lower():
        return "timed out"
    return type(reason).__name__


def _api_reason(exc: ApiException) -> str:
    """The ``message`` of a Kubernetes Status body, else the HTTP reason; one line, short."""
    try:
        message = json.loads(exc.body or "").get("message")
    except (ValueError, AttributeError):
        message = None
    return _line(message or exc.reason or "error")


def _line(value: Any) -> str:
    text = str(value).strip().splitlines()
    return text[0][:300] if text else type(value).__name__


def _from(path: Optional[str]) -> str:
    return f" from {path}" if path else ""
