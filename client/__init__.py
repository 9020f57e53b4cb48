"""The copy-offload client: the Python libcopyoffload.

Finds its server as libcopyoffload does (``NNF_CONTAINER_LAUNCHER`` or ``/etc/local-rabbit.conf``,
``NNF_CONTAINER_PORTS``, ``DW_WORKFLOW_TOKEN``, ``/etc/nnf-dm-usercontainer/cert.pem``), every
part overridable in code. See :class:`Client` and :class:`AsyncClient`.
"""

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

__all__ = [
    "AsyncClient",
    "BadRequest",
    "Client",
    "ConfigurationError",
    "Conflict",
    "ConnectError",
    "CopyOffloadError",
    "NotAcceptable",
    "NotFound",
    "ServerConfig",
    "ServerError",
    "Status",
    "TLSError",
    "Timeout",
    "TransportError",
    "Unauthorized",
    "WaitTimeout",
    "discover",
]
