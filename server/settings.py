"""Server settings: parsed once at the edge (flags, then the NNF pod's environment), then passed down.

The reference flags are Go ``flag`` flags, so ``-addr`` and ``--addr`` (and ``-addr=X``) all work.
In the NNF user container the pod's variables fill what the command line leaves out.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence

DEFAULT_ADDR = "localhost:4000"
DRIVERS = ("local", "mock", "nnf")


class SettingsError(ValueError):
    """A setting that makes the server unable to start; the text says which and why."""


@dataclass
class ServerSettings:
    host: str = "localhost"
    port: int = 4000
    cert: str = "cert.pem"
    key: str = "key.pem"
    token_key: str = "token_key.pem"
    skip_tls: bool = False
    skip_token: bool = False
    driver: str = "local"
    state_dir: str = ""
    allow_roots: List[str] = field(default_factory=list)
    workers: Optional[int] = None
    profiles: Optional[str] = None
    workflow_name: str = ""
    workflow_namespace: str = ""
    node_name: str = ""
    kubeconfig: Optional[str] = None
    nnf_api_version: Optional[str] = None
    dws_api_version: Optional[str] = None
    log_level: str = "info"
    request_timeout: float = 60.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="copy-offload-server",
        description="The copy-offload server: a wire-compatible replacement for nnf-dm's copy-offload "
        "server, with an embedded local copy engine (the default driver).",
        epilog="Reference flags take one dash or two (-addr, --addr). With no flag given, the NNF pod's "
        "TLS_CERT_PATH, TLS_KEY_PATH, TOKEN_KEY_PATH, NNF_CONTAINER_PORTS (first port), "
        "DW_WORKFLOW_NAME and DW_WORKFLOW_NAMESPACE are used.",
    )
    p.add_argument("-addr", "--addr", help="listen address HOST:PORT, :PORT for all interfaces (default %s, "
                   "or :<first NNF_CONTAINER_PORTS>); port 0 picks a free port" % DEFAULT_ADDR)
    p.add_argument("-cert", "--cert", help="TLS certificate PEM (default $TLS_CERT_PATH or cert.pem)")
    p.add_argument("-cakey", "--cakey", help="TLS private key PEM (default $TLS_KEY_PATH or key.pem)")
    p.add_argument("-tokenkey", "--tokenkey", help="token signing key PEM (default $TOKEN_KEY_PATH or token_key.pem)")
    p.add_argument("-skip-tls", "--skip-tls", action="store_true", help="serve plain HTTP")
    p.add_argument("-skip-token", "--skip-token", action="store_true", help="do not require a bearer token")
    p.add_argument("-mock", "--mock", action="store_true", help="the reference mock mode (same as --driver mock)")
    p.add_argument("--driver", choices=DRIVERS, default=None, help="copy driver (default local)")
    p.add_argument("--state-dir", help="where the local driver keeps its request records (default "
                   "$XDG_STATE_HOME, else ~/.local/state, then copy-offload/roots-HASH: one directory per "
                   "set of --allow-root directories)")
    p.add_argument("--allow-root", action="append", default=[], metavar="DIR",
                   help="a directory tree the local driver may read and write (repeatable; required for local)")
    p.add_argument("--workers", type=int, help="local driver: copy workers per request (default: the number of CPUs)")
    p.add_argument("--profiles", metavar="FILE", help="local driver: TOML file of named command profiles")
    p.add_argument("--kubeconfig", help="nnf driver: kubeconfig file (default $KUBECONFIG, in-cluster, ~/.kube/config)")
    p.add_argument("--nnf-api-version", help="nnf driver: NNF API version (default: probed, v1alpha11 down)")
    p.add_argument("--dws-api-version", help="nnf driver: DWS API version (default: probed, v1alpha7 down)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--request-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="a request whose headers or body have not all arrived after SECONDS gets 408 "
                   "and its connection is closed (default 60)")
    return p


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep:
        raise SettingsError("invalid -addr %r: want HOST:PORT or :PORT" % addr)
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise SettingsError("invalid -addr %r: the port must be a number" % addr) from None
    if not 0 <= number <= 65535:
        raise SettingsError("invalid -addr %r: the port must be 0..65535" % addr)
    return host, number


def default_state_dir(env: Mapping[str, str], allow_roots: Sequence[str]) -> str:
    """One state directory per set of roots, so a server never lists another's requests by accident.

    ``$XDG_STATE_HOME/copy-offload/roots-<first 12 hex digits of the SHA-256 of the sorted real
    root paths, NUL-separated>``: the same roots (in any order or spelling) find their records again
    after a restart; a server with other roots starts empty.
    """
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    roots = sorted({os.path.realpath(root) for root in allow_roots})
    digest = hashlib.sha256("\0".join(roots).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return os.path.join(base, "copy-offload", "roots-" + digest)


def check_allow_roots(roots: Sequence[str]) -> None:
    """Each --allow-root must be an existing directory: a typo must not become a tree a copy creates."""
    for root in roots:
        if not os.path.isdir(root):
            what = "is not a directory" if os.path.exists(root) else "does not exist"
            raise SettingsError("--allow-root %s %s; give existing directories" % (root, what))


def parse_settings(argv: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None) -> ServerSettings:
    env = os.environ if env is None else env
    args = _parser().parse_args(argv)
    addr = args.addr
    if addr is None:
        ports = env.get("NNF_CONTAINER_PORTS", "").split(",")[0].strip()
        addr = ":" + ports if ports else DEFAULT_ADDR
    host, port = parse_addr(addr)
    driver = args.driver or ("mock" if args.mock else "local")
    if args.mock and args.driver not in (None, "mock"):
        raise SettingsError("-mock conflicts with --driver %s" % args.driver)
    if not args.request_timeout > 0:
        raise SettingsError("--request-timeout must be a positive number of seconds")
    if args.workers is not None and args.workers < 1:
        raise SettingsError("--workers must be a positive number")
    if driver == "local":
        check_allow_roots(args.allow_root)
    return ServerSettings(
        host=host,
        port=port,
        cert=args.cert or env.get("TLS_CERT_PATH") or "cert.pem",
        key=args.cakey or env.get("TLS_KEY_PATH") or "key.pem",
        token_key=args.tokenkey or env.get("TOKEN_KEY_PATH") or "token_key.pem",
        skip_tls=args.skip_tls,
        skip_token=args.skip_token,
        driver=driver,
        state_dir=args.state_dir or default_state_dir(env, args.allow_root),
        allow_roots=list(args.allow_root),
        workers=args.workers,
        profiles=args.profiles,
        workflow_name=env.get("DW_WORKFLOW_NAME", ""),
        workflow_namespace=env.get("DW_WORKFLOW_NAMESPACE", ""),
        node_name=env.get("NNF_NODE_NAME") or socket.gethostname().split(".")[0],
        kubeconfig=args.kubeconfig,
        nnf_api_version=args.nnf_api_version,
        dws_api_version=args.dws_api_version,
        log_level=args.log_level,
        request_timeout=args.request_timeout,
    )
