"""Finding the server from a compute node, exactly as libcopyoffload does, with overrides in code.

Host: ``NNF_CONTAINER_LAUNCHER``, else the contents of ``/etc/local-rabbit.conf`` (one trailing
newline stripped). Port: the first element of ``NNF_CONTAINER_PORTS``. Token: ``DW_WORKFLOW_TOKEN``
(optional). CA certificate: ``COPY_OFFLOAD_CA_FILE``, else
``/etc/nnf-dm-usercontainer/cert.pem``. Compute name: the host name.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Mapping, Optional

from copy_offload.client.errors import ConfigurationError

LAUNCHER_ENV = "NNF_CONTAINER_LAUNCHER"
PORTS_ENV = "NNF_CONTAINER_PORTS"
TOKEN_ENV = "DW_WORKFLOW_TOKEN"
LOCAL_RABBIT_CONF = "/etc/local-rabbit.conf"
CERT_PATH = "/etc/nnf-dm-usercontainer/cert.pem"
# A job's own CA file (a per-job server started by the Flux job shell sets it); else CERT_PATH.
CA_FILE_ENV = "COPY_OFFLOAD_CA_FILE"


@dataclass
class ServerConfig:
    """Where the server is and how to talk to it. ``repr`` never shows the token."""

    host: str
    port: int
    token: Optional[str] = field(default=None, repr=False)
    ca_file: Optional[str] = CERT_PATH
    tls: bool = True
    #: The name the server files requests under; the host name, as libcopyoffload sends it.
    compute_name: str = field(default_factory=socket.gethostname)

    @property
    def base_url(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % ("https" if self.tls else "http", host, self.port)


def _read_one_line(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if text.endswith("\n") or text.endswith("\r"):
        text = text[:-1]
    return text


def read_token_file(path: str) -> str:
    """A token file's contents with one trailing newline stripped (``copy_offload_override_token``)."""
    try:
        return _read_one_line(path)
    except OSError as exc:
        raise ConfigurationError("Unable to open %s: errno %d" % (path, exc.errno or 0)) from None


def discover(
    *,
    host: Optional[str] = None,
    port: Optional[int] = None,
    token: Optional[str] = None,
    token_file: Optional[str] = None,
    ca_file: Optional[str] = None,
    tls: bool = True,
    compute_name: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    local_rabbit_conf: str = LOCAL_RABBIT_CONF,
) -> ServerConfig:
    """Build a :class:`ServerConfig`; every keyword given wins over the environment."""
    env = os.environ if env is None else env
    if host is None:
        host = env.get(LAUNCHER_ENV)
    if host is None:
        try:
            host = _read_one_line(local_rabbit_conf)
        except OSError:
            raise ConfigurationError(
                "Unable to get server host from environment variable %s or local file %s"
                % (LAUNCHER_ENV, local_rabbit_conf)
            ) from None
    if port is None:
        first = env.get(PORTS_ENV)
        if first is None:
            raise ConfigurationError("Unable to get server port from environment variable %s" % PORTS_ENV)
        first = first.split(",")[0].strip()
        try:
            port = int(first)
        except ValueError:
            raise ConfigurationError("%s does not start with a port number: %r" % (PORTS_ENV, first)) from None
    if not 0 < int(port) < 65536:
        raise ConfigurationError("The server port must be 1 to 65535, not %d" % int(port))
    if token_file is not None:
        token = read_token_file(token_file)
    elif token is None:
        token = env.get(TOKEN_ENV)
    return ServerConfig(
        host=host,
        port=int(port),
        token=token or None,
        ca_file=(ca_file or env.get(CA_FILE_ENV) or CERT_PATH) if tls else None,
        tls=tls,
        compute_name=compute_name or socket.gethostname(),
    )
