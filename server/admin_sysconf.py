"""The DWS SystemConfiguration as the admin tool reads it: Rabbit names and compute -> Rabbit.

Pure functions over the object's dict, plus a file loader that accepts what an administrator
is likely to have saved: ``kubectl get systemconfiguration default -o yaml`` (or ``-o json``),
a ``kind: List`` of them, or a multi-document YAML file. The SANs of the server certificate are
the ``Rabbit`` storage nodes (as mk-usercontainer-secrets.sh selects them); the Rabbit that
serves a compute is found by scanning ``computesAccess[].name`` with no type check, exactly as
the copy-offload server does, so ``/etc/local-rabbit.conf`` and the server agree.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional

import yaml

KIND = "SystemConfiguration"
NAME = "default"
NAMESPACE = "default"
RABBIT = "Rabbit"


class SystemConfigurationError(ValueError):
    """The SystemConfiguration is missing, malformed, or does not say what was asked."""


def rabbit_names(sysconf: Dict[str, Any]) -> List[str]:
    """Names of the ``type: Rabbit`` storage nodes, in document order, without duplicates."""
    names: List[str] = []
    for node in _storage_nodes(sysconf):
        name = node.get("name")
        if node.get("type") == RABBIT and isinstance(name, str) and name and name not in names:
            names.append(name)
    return names


def rabbit_for_compute(sysconf: Dict[str, Any], compute: str) -> str:
    """The storage node whose ``computesAccess`` lists ``compute``; raises if none does."""
    for node in _storage_nodes(sysconf):
        for access in node.get("computesAccess") or []:
            if isinstance(access, dict) and access.get("name") == compute:
                name = node.get("name")
                if isinstance(name, str) and name:
                    return name
    raise SystemConfigurationError(
        f"compute node {compute!r} is not served by any Rabbit: no storageNodes[].computesAccess[].name "
        f"in SystemConfiguration {NAMESPACE}/{NAME} names it"
    )


def compute_map(sysconf: Dict[str, Any]) -> Dict[str, str]:
    """Every compute named in ``computesAccess``, mapped to its storage node (first one wins)."""
    mapping: Dict[str, str] = {}
    for node in _storage_nodes(sysconf):
        for access in node.get("computesAccess") or []:
            if isinstance(access, dict) and isinstance(access.get("name"), str):
                mapping.setdefault(access["name"], node.get("name", ""))
    return mapping


def load_file(path: str) -> Dict[str, Any]:
    """The SystemConfiguration ``default`` from a YAML or JSON file (JSON is YAML)."""
    try:
        with open(path, encoding="utf-8") as handle:
            docs = list(yaml.safe_load_all(handle))
    except OSError as exc:
        raise SystemConfigurationError(
            f"cannot read SystemConfiguration file {path}: {exc.strerror or exc}"
        ) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise SystemConfigurationError(
            f"SystemConfiguration file {path} is not valid YAML or JSON{at}"
        ) from None
    found = pick(_flatten(docs))
    if found is None:
        raise SystemConfigurationError(
            f"no SystemConfiguration named {NAME!r} in {path} (save it with: kubectl get systemconfiguration "
            f"{NAME} -o yaml > {path})"
        )
    return found


def pick(objects: Iterable[Any]) -> Optional[Dict[str, Any]]:
    """The SystemConfiguration named ``default`` among ``objects``, if there is one."""
    for obj in objects:
        if not isinstance(obj, dict) or obj.get("kind") != KIND:
            continue
        meta = obj.get("metadata") or {}
        if isinstance(meta, dict) and meta.get("name", NAME) == NAME:
            _check_shape(obj)
            return obj
    return None


def _flatten(docs: Iterable[Any]) -> List[Any]:
    out: List[Any] = []
    for doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("items"), list):
            out.extend(doc["items"])  # kind: List, or SystemConfigurationList
        elif doc is not None:
            out.append(doc)
    return out


def _check_shape(obj: Dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("storageNodes", []), list):
        raise SystemConfigurationError(f"SystemConfiguration {NAME} has no spec.storageNodes list")


def _storage_nodes(sysconf: Dict[str, Any]) -> List[Dict[str, Any]]:
    spec = sysconf.get("spec")
    nodes = (spec.get("storageNodes") or []) if isinstance(spec, dict) else []
    return [node for node in nodes if isinstance(node, dict)]
