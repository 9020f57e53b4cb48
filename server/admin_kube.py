"""The admin tool's Kubernetes boundary: one small function per call, errors mapped here.

Every ``kubernetes`` and ``urllib3`` exception is translated at this one boundary into a
``KubeError`` (the server's one Kubernetes error family, ``server/kube.py``) whose text is one
line an administrator can act on (which server could not be reached, which object is missing,
which permission is lacking). Secret contents never appear in a message. The API client is built
per invocation by the server's one loader (``--kubeconfig``, ``KUBECONFIG``, the in-cluster
service account, ``~/.kube/config``, in that order); no global configuration.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Dict, Optional

import urllib3
from copy_offload.server import admin_sysconf
from copy_offload.server.kube import (
    KubeAlreadyExists,
    KubeError,
    KubeInvalid,
    KubeNotFound,
    load_configuration,
    one_line,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException

DWS_GROUP = "dataworkflowservices.github.io"
DWS_VERSIONS = ("v1alpha7", "v1alpha6")  # newest first, as flux-coral2 probes them
SYSCONF_PLURAL = "systemconfigurations"
TIMEOUT = (5, 30)  # (connect, read) seconds for every call


def connect(kubeconfig: Optional[str] = None, context: Optional[str] = None) -> client.ApiClient:
    """An API client in the server's one precedence (``server/kube.py``): ``--kubeconfig``, else
    ``KUBECONFIG``, else in-cluster, else ``~/.kube/config``."""
    cfg, _source = load_configuration(kubeconfig, context)
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
        except KubeNotFound:
            continue
        found = admin_sysconf.pick([obj])
        if found is None:
            raise KubeError("the API server returned something other than a SystemConfiguration")
        return found
    raise KubeError(
        f"SystemConfiguration {admin_sysconf.NAMESPACE}/{admin_sysconf.NAME} not found in the cluster (check: kubectl get systemconfiguration {admin_sysconf.NAME})"
    )


def read_secret(api: client.ApiClient, namespace: str, name: str) -> Optional[Dict[str, bytes]]:
    """The decoded ``data`` of a Secret, or None when it does not exist."""
    core = client.CoreV1Api(api)
    try:
        secret = _call(api, f"read Secret {namespace}/{name}", core.read_namespaced_secret, name, namespace)
    except KubeNotFound:
        return None
    data = getattr(secret, "data", None) or {}
    try:
        return {key: base64.b64decode(value or "") for key, value in data.items()}
    except (ValueError, TypeError):
        raise KubeError(f"Secret {namespace}/{name} holds data that is not base64") from None


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
    except KubeNotFound:
        _call(api, "create " + what, core.create_namespaced_secret, namespace, body)
    except KubeInvalid:  # a Secret's type is immutable: replace it whole
        _call(api, "delete " + what, core.delete_namespaced_secret, name, namespace)
        _call(api, "create " + what, core.create_namespaced_secret, namespace, body)


def _call(api: client.ApiClient, what: str, func: Any, *args: Any) -> Any:
    """Run one API call and map every failure to a KubeError naming ``what``."""
    host = api.configuration.host
    try:
        return func(*args, _request_timeout=TIMEOUT)
    except ApiException as exc:
        status = exc.status or 0
        if status == 404:
            raise KubeNotFound(f"cannot {what}: not found", status) from None
        if status == 422:
            raise KubeInvalid(f"cannot {what}: {_api_reason(exc)}", status) from None
        if status == 409:
            raise KubeAlreadyExists(f"cannot {what}: it already exists (rerun with --force to replace it)", status) from None
        if status in (401, 403):
            raise KubeError(
                f"cannot {what}: the API server at {host} refused it ({status} {exc.reason or ''}); "
                "check the credentials and RBAC", status
            ) from None
        if status == 0:
            raise KubeError(f"cannot {what}: {one_line(exc.reason or exc)}") from None
        raise KubeError(f"cannot {what}: {status} {_api_reason(exc)}", status) from None
    except urllib3.exceptions.HTTPError as exc:
        raise KubeError(
            f"cannot reach the Kubernetes API server at {host} ({what}): {_network_reason(exc)}"
        ) from None
    except OSError as exc:
        raise KubeError(f"cannot reach the Kubernetes API server at {host}: {exc.strerror or exc}") from None


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
    return one_line(message or exc.reason or "error")



