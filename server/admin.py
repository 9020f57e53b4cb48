"""``copy-offload-admin``: keys, tokens, certificates and site files for copy offload.

It replaces the guide's shell recipes (mk-usercontainer-secrets.sh, openssl, kubectl | jq |
base64) with one tool whose commands are safe to repeat. Exit status: 0 done, 1 the command
failed (one line on stderr saying why, never a traceback and never key material), 2 the
command line was wrong.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Callable, Dict, List, Optional, Sequence

from copy_offload.server import admin_kube, admin_paths, admin_secrets, admin_sysconf, pki

PROG = "copy-offload-admin"
CLIENT_CERT_PATH = "/etc/nnf-dm-usercontainer/cert.pem"
LOCAL_RABBIT_PATH = "/etc/local-rabbit.conf"

DESCRIPTION = """\
Keys, tokens, certificates and site files for NNF copy offload.

Token signing keys and tokens (as nnf-sos makes them):
  token-key     write a new P-521 token signing key (PKCS#8 PEM labelled EC PRIVATE KEY, 0600)
  token         print an HS256 token (sub: user-container, iat) signed with a token key

TLS for the copy-offload servers (as mk-usercontainer-secrets.sh makes it):
  tls           write tls.crt and tls.key: a P-521 key and a self-signed certificate whose
                SANs are the Rabbit nodes (from the cluster or a SystemConfiguration file)
                and/or --host names
  k8s-secrets   create the Secrets nnf-dm-usercontainer-server-tls and
                nnf-dm-usercontainer-client-tls in namespace default (kept if present)
  client-cert   fetch the certificate for /etc/nnf-dm-usercontainer/cert.pem on computes

Compute nodes:
  local-rabbit  print or write (/etc/local-rabbit.conf) the Rabbit that serves a compute node

This installation:
  paths         print where the man pages, the site kit (share/) and the jobtap sources are
"""

EPILOG = """\
Kubernetes access: --kubeconfig FILE, else $KUBECONFIG, else the in-cluster service
account, else ~/.kube/config.

Exit status: 0 success, 1 the command failed (one line on stderr), 2 bad command line.

A first setup on a cluster:
  copy-offload-admin k8s-secrets
  copy-offload-admin client-cert --out /etc/nnf-dm-usercontainer/cert.pem   # on every compute
  copy-offload-admin local-rabbit --from-cluster --write /etc/local-rabbit.conf   # ditto

Run "copy-offload-admin COMMAND --help" for a command's options.
"""


class AdminError(Exception):
    """A failure to report as one line on stderr, exit status 1."""


# --------------------------------------------------------------------------- commands


def cmd_token_key(args: argparse.Namespace) -> int:
    _refuse_overwrite([args.out], args.force)
    _write(args.out, pki.generate_token_key_pem(), secret=True)
    print(f"wrote token signing key {args.out} (mode 0600)")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    try:
        secret = pki.read_token_key(args.key)
    except OSError as exc:
        raise AdminError(f"cannot read the token key {args.key}: {exc.strerror or exc}") from None
    except pki.KeyError_ as exc:
        raise AdminError(f"the token key {args.key} is unusable: {exc}") from None
    token = pki.mint_token(secret, issued_at=args.iat)
    if args.out:
        _refuse_overwrite([args.out], args.force)
        _write(args.out, (token + "\n").encode(), secret=True)
        print(f"wrote token {args.out} (mode 0600)", file=sys.stderr)
    else:
        print(token)
    return 0


def cmd_tls(args: argparse.Namespace) -> int:
    names = _san_names(args, rabbits_from_cluster=args.from_cluster)
    cert_path = os.path.join(args.out, "tls.crt")
    key_path = os.path.join(args.out, "tls.key")
    _refuse_overwrite([cert_path, key_path], args.force)
    cert, key = _generate(names, args.days)
    _make_dir(args.out, 0o700)
    _write(key_path, key, secret=True)
    _write(cert_path, cert, secret=False)
    print(f"wrote {cert_path} (mode 0644) and {key_path} (mode 0600)")
    print("SANs: " + ", ".join(names))
    return 0


def cmd_k8s_secrets(args: argparse.Namespace) -> int:
    api = _connect(args)

    def make() -> admin_secrets.Material:
        if args.tls_dir:
            return admin_secrets.load_material(
                os.path.join(args.tls_dir, "tls.crt"), os.path.join(args.tls_dir, "tls.key")
            )
        rabbits_from_cluster = not args.systemconfiguration and not args.no_rabbits
        names = _san_names(args, rabbits_from_cluster=rabbits_from_cluster, api=api)
        return _generate(names, args.days)

    outcome = admin_secrets.ensure(api, args.namespace, make, args.force)
    for line in outcome.lines:
        print(line)
    names = admin_secrets.certificate_names(outcome.certificate)
    if names:
        print("certificate SANs: " + ", ".join(names))
    if outcome.created:
        print("next: copy the certificate to every compute node, for example with")
        print(f"  {PROG} client-cert --out {CLIENT_CERT_PATH}")
    return 0


def cmd_client_cert(args: argparse.Namespace) -> int:
    api = _connect(args)
    data = admin_kube.read_secret(api, args.namespace, admin_secrets.CLIENT_SECRET)
    where = f"{args.namespace}/{admin_secrets.CLIENT_SECRET}"
    if data is None:
        raise AdminError(f"Secret {where} not found; create it with: {PROG} k8s-secrets")
    cert = data.get(admin_secrets.CERT_KEY, b"")
    if not admin_secrets.certificate_names(cert) and b"BEGIN CERTIFICATE" not in cert:
        raise AdminError(f"Secret {where} holds no PEM certificate under {admin_secrets.CERT_KEY}")
    if args.out == "-":
        sys.stdout.write(cert.decode("ascii", "replace"))
        return 0
    _make_dir(os.path.dirname(args.out), 0o755)
    _write(args.out, cert, secret=False)
    print(f"wrote {args.out} (mode 0644) from Secret {where}")
    return 0


def cmd_local_rabbit(args: argparse.Namespace) -> int:
    sysconf = _system_configuration(args)
    if args.all:
        mapping = admin_sysconf.compute_map(sysconf)
        if not mapping:
            raise AdminError("SystemConfiguration default lists no computesAccess entries")
        for compute in sorted(mapping):
            print(f"{compute} {mapping[compute]}")
        return 0
    compute = args.compute or socket.gethostname()
    try:
        rabbit = admin_sysconf.rabbit_for_compute(sysconf, compute)
    except admin_sysconf.SystemConfigurationError as exc:
        raise AdminError(str(exc)) from None
    if args.write:
        _make_dir(os.path.dirname(args.write), 0o755)
        _write(args.write, (rabbit + "\n").encode(), secret=False)
        print(f"wrote {args.write}: {rabbit} serves {compute}")
    else:
        print(rabbit)
    return 0


# --------------------------------------------------------------------------- helpers


def _connect(args: argparse.Namespace) -> object:
    return admin_kube.connect(args.kubeconfig, args.context)


def _system_configuration(args: argparse.Namespace, api: Optional[object] = None) -> Dict:
    if getattr(args, "systemconfiguration", None):
        return admin_sysconf.load_file(args.systemconfiguration)
    return admin_kube.get_system_configuration(api or _connect(args))  # type: ignore[arg-type]


def _san_names(args: argparse.Namespace, rabbits_from_cluster: bool, api: Optional[object] = None) -> List[str]:
    """Rabbit names (file or cluster) first, then ``--host`` names, without duplicates."""
    names: List[str] = []
    if args.systemconfiguration or rabbits_from_cluster:
        names = admin_sysconf.rabbit_names(_system_configuration(args, api))
        if not names and not args.host:
            raise AdminError(
                "SystemConfiguration default lists no storage nodes of type Rabbit; name the servers with --host"
            )
    for host in args.host or []:
        if host not in names:
            names.append(host)
    if not names:
        raise AdminError("no names for the certificate: give --host, --systemconfiguration FILE or --from-cluster")
    return names


def _generate(names: List[str], days: int) -> admin_secrets.Material:
    try:
        return pki.generate_tls(names, days=days)
    except ValueError as exc:
        raise AdminError(f"cannot make a certificate for {', '.join(names)}: {exc}") from None


def _refuse_overwrite(paths: Sequence[str], force: bool) -> None:
    if force:
        return
    for path in paths:
        if os.path.lexists(path):
            raise AdminError(f"{path} already exists; use --force to overwrite it")


def _make_dir(path: str, mode: int) -> None:
    if not path or os.path.isdir(path):
        return
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
    except OSError as exc:
        raise AdminError(f"cannot create directory {path}: {exc.strerror or exc}") from None


def _write(path: str, data: bytes, secret: bool) -> None:
    try:
        if secret:
            pki.write_secret(path, data)
        else:
            pki.write_public(path, data, 0o644)
    except OSError as exc:
        raise AdminError(f"cannot write {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=100)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter)
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND")
    sub.required = True

    cluster = argparse.ArgumentParser(add_help=False)
    group = cluster.add_argument_group("Kubernetes access")
    group.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
    group.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str, text: str, parents: list) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=text, parents=parents, formatter_class=_Formatter)
        p.set_defaults(func=func)
        return p

    p = add(
        "token-key",
        cmd_token_key,
        "write a new token signing key",
        "Write a new token signing key: an ECDSA P-521 key in PKCS#8, PEM-labelled EC PRIVATE KEY\n"
        "(as nnf-sos writes <workflow>-token-server), mode 0600. The server's -tokenkey reads it;\n"
        "the HS256 secret is the DER bytes inside its PEM block.",
        [],
    )
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the key")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")

    p = add(
        "token",
        cmd_token,
        "print a token signed with a token key",
        "Print an HS256 JWT with the claims nnf-sos puts in a Workflow's token\n"
        "(sub: user-container, iat: now), signed with the DER bytes of the key's PEM block.\n"
        "Give it to a client as DW_WORKFLOW_TOKEN, or with --out as a token file (mode 0600).",
        [],
    )
    p.add_argument("--key", required=True, metavar="FILE", help="token signing key (from token-key, or a Secret's token.key)")
    p.add_argument("--out", metavar="FILE", help="write the token to FILE (mode 0600) instead of stdout")
    p.add_argument("--iat", type=int, metavar="SECONDS", help="issued-at time, Unix seconds (default: now)")
    p.add_argument("--force", action="store_true", help="overwrite the --out FILE if it exists")

    p = add(
        "tls",
        cmd_tls,
        "write a TLS key and self-signed certificate",
        "Write DIR/tls.key (P-521, mode 0600) and DIR/tls.crt (self-signed, mode 0644).\n"
        "SANs: the storage nodes of type Rabbit in SystemConfiguration default (from --from-cluster\n"
        "or --systemconfiguration FILE), then every --host. Clients connect to the Rabbit by its\n"
        "node name, so the certificate must name every Rabbit.",
        [cluster],
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory for tls.crt and tls.key (created 0700 if missing)")
    p.add_argument("--host", action="append", metavar="NAME", help="a DNS name or IP address for the SANs (repeatable)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--systemconfiguration", metavar="FILE", help="take Rabbit names from this SystemConfiguration (YAML or JSON)")
    source.add_argument("--from-cluster", action="store_true", help="take Rabbit names from the cluster's SystemConfiguration default")
    p.add_argument("--days", type=_positive, default=365, metavar="N", help="validity in days (default 365)")
    p.add_argument("--force", action="store_true", help="overwrite existing tls.crt/tls.key")

    p = add(
        "k8s-secrets",
        cmd_k8s_secrets,
        "create the server and client TLS Secrets",
        "Create Secret nnf-dm-usercontainer-server-tls (type kubernetes.io/tls: tls.crt, tls.key)\n"
        "and Secret nnf-dm-usercontainer-client-tls (tls.crt only) in namespace default, where\n"
        "nnf-sos expects them. Existing Secrets are kept (safe to rerun); --force makes a new\n"
        "certificate and replaces both. The certificate is made as by the tls command, with the\n"
        "Rabbit names of the cluster's SystemConfiguration, or taken from --tls-dir.",
        [cluster],
    )
    p.add_argument("--namespace", default=admin_secrets.NAMESPACE, metavar="NS", help="namespace of the Secrets (default: default)")
    p.add_argument("--host", action="append", metavar="NAME", help="add a name to the SANs (repeatable)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--systemconfiguration", metavar="FILE", help="take Rabbit names from this file, not the cluster")
    source.add_argument("--no-rabbits", action="store_true", help="SANs are the --host names only (mk-usercontainer-secrets.sh -A)")
    source.add_argument("--tls-dir", metavar="DIR", help="use DIR/tls.crt and DIR/tls.key (from the tls command) instead of making new ones")
    p.add_argument("--days", type=_positive, default=365, metavar="N", help="validity in days of a new certificate (default 365)")
    p.add_argument("--force", action="store_true", help="replace existing Secrets with new material")

    p = add(
        "client-cert",
        cmd_client_cert,
        "fetch the certificate for compute nodes",
        "Write tls.crt of Secret nnf-dm-usercontainer-client-tls to FILE, mode 0644 (readable by\n"
        "every user's application). On compute nodes the client looks for it at\n"
        f"{CLIENT_CERT_PATH}. Parent directories are created; an existing FILE is replaced.",
        [cluster],
    )
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the certificate ('-' for stdout)")
    p.add_argument("--namespace", default=admin_secrets.NAMESPACE, metavar="NS", help="namespace of the Secret (default: default)")

    p = add(
        "local-rabbit",
        cmd_local_rabbit,
        "print or write the Rabbit that serves a compute node",
        "Print the storage node whose computesAccess lists the compute node (the copy-offload\n"
        "server's own mapping), or write it to PATH for the clients: libcopyoffload and the\n"
        f"Python client read {LOCAL_RABBIT_PATH} when NNF_CONTAINER_LAUNCHER is unset.",
        [cluster],
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--systemconfiguration", metavar="FILE", help="read SystemConfiguration default from FILE (YAML or JSON)")
    source.add_argument("--from-cluster", action="store_true", help="read SystemConfiguration default from the cluster")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--compute", metavar="NAME", help="the compute node (default: this host's name)")
    which.add_argument("--all", action="store_true", help="print 'COMPUTE RABBIT' for every compute node")
    p.add_argument("--write", metavar="PATH", help=f"write the name to PATH (mode 0644), e.g. {LOCAL_RABBIT_PATH}")

    p = add(
        "paths",
        lambda args: admin_paths.run(args.what),
        "print where this installation keeps its man pages, site kit and jobtap sources",
        "Print the directories an installation (a wheel, an sdist or this repository) holds:\n"
        "the manual pages, the site kit (container image, NnfContainerProfile, RBAC, Flux files),\n"
        "the Flux plugins' C sources with their Makefile, and the copy_offload.flux package.\n"
        'Build the plugins from a wheel with: make -C "$(copy-offload-admin paths jobtap)" BUILD=DIR',
        [],
    )
    admin_paths.build_parser(p)
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "all", False) and getattr(args, "write", None):
        parser.error("local-rabbit: --write needs one compute node, not --all")
    try:
        return int(args.func(args))
    except (
        AdminError,
        admin_kube.KubeError,
        admin_sysconf.SystemConfigurationError,
        admin_secrets.MaterialError,
    ) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
