"""The copy-offload client: the Python libcopyoffload.

Finds its server as libcopyoffload does (``NNF_CONTAINER_LAUNCHER`` or ``/etc/local-rabbit.conf``,
``NNF_CONTAINER_PORTS``, ``DW_WORKFLOW_TOKEN``, ``/etc/nnf-dm-usercontainer/cert.pem``), every
part overridable in code. See :class:`Client` and :class:`AsyncClient`.

The names below load on first use (PEP 562), so ``copy_offload.client.wire`` (the wire format the
server shares) is importable without the client library, its transport or ``ssl``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - for type checkers and readers only
    from copy_offload.client.client import AsyncClient, Client
    from copy_offload.client.discovery import ServerConfig, discover
    from copy_offload.client.errors import (
        BadRequest,
        ConfigurationError,
        Conflict,
        ConnectError,
        CopyOffloadError,
        NotAcceptable,
        NotFound,
        ServerError,
        Timeout,
        TLSError,
        TransportError,
        Unauthorized,
        WaitTimeout,
    )
    from copy_offload.client.models import Status

_HOMES = {
    "AsyncClient": "client",
    "Client": "client",
    "ServerConfig": "discovery",
    "discover": "discovery",
    "Status": "models",
    **{name: "errors" for name in (
        "BadRequest", "ConfigurationError", "Conflict", "ConnectError", "CopyOffloadError", "NotAcceptable",
        "NotFound", "ServerError", "Timeout", "TLSError", "TransportError", "Unauthorized", "WaitTimeout")},
}

__all__ = [
    "AsyncClient", "BadRequest", "Client", "ConfigurationError", "Conflict", "ConnectError",
    "CopyOffloadError", "NotAcceptable", "NotFound", "ServerConfig", "ServerError", "Status",
    "TLSError", "Timeout", "TransportError", "Unauthorized", "WaitTimeout", "discover",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    value = getattr(importlib.import_module("copy_offload.client." + home), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_HOMES))
