"""The two site-wide TLS Secrets that nnf-sos and the computes expect, made idempotently.

``nnf-dm-usercontainer-server-tls`` (``kubernetes.io/tls``: ``tls.crt`` + ``tls.key``) is
mounted into every copy-offload server pod; without it nnf-sos fails a ``requires=copy-offload``
job at Proposal. ``nnf-dm-usercontainer-client-tls`` (Opaque, ``tls.crt`` only: the clients
never get the key) is what administrators copy to ``/etc/nnf-dm-usercontainer/cert.pem``.

Rules, as mk-usercontainer-secrets.sh has them and a little safer: both present -> keep both;
neither -> make a certificate and create both; ``force`` -> make a new one and replace both.
The half-made states are repaired without surprises: a server Secret alone gets its client
twin from its own ``tls.crt``; a client Secret alone is refused without ``force``, because a
new key would silently invalidate the certificate already on the computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Tuple

from copy_offload.server import admin_kube
from cryptography import x509
from cryptography.hazmat.primitives import serialization

SERVER_SECRET = "nnf-dm-usercontainer-server-tls"
CLIENT_SECRET = "nnf-dm-usercontainer-client-tls"
NAMESPACE = "default"  # nnf-sos looks for the server Secret here
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"
TLS_TYPE = "kubernetes.io/tls"
OPAQUE = "Opaque"

Material = Tuple[bytes, bytes]  # (certificate PEM, private key PEM)


class MaterialError(ValueError):
    """A certificate or key that cannot be used (the text names the file, never its content)."""


@dataclass
class Outcome:
    """What ``ensure`` did, one line per Secret, and the certificate now in force (if known)."""

    lines: List[str] = field(default_factory=list)
    certificate: bytes = b""
    created: bool = False


def ensure(api: object, namespace: str, make: Callable[[], Material], force: bool) -> Outcome:
    """Bring both Secrets into existence in ``namespace``; ``make`` is called only when needed."""
    server = admin_kube.read_secret(api, namespace, SERVER_SECRET)  # type: ignore[arg-type]
    client = admin_kube.read_secret(api, namespace, CLIENT_SECRET)  # type: ignore[arg-type]
    out = Outcome()
    server_name = f"{namespace}/{SERVER_SECRET}"
    client_name = f"{namespace}/{CLIENT_SECRET}"

    if server is not None and client is not None and not force:
        out.lines.append(f"kept Secret {server_name} (exists; --force replaces it)")
        out.lines.append(f"kept Secret {client_name} (exists; --force replaces it)")
        out.certificate = client.get(CERT_KEY, b"")
        return out
    if server is not None and client is None and not force:
        cert = server.get(CERT_KEY, b"")
        if not cert or not server.get(KEY_KEY):
            raise admin_kube.KubeError(
                f"Secret {server_name} lacks {CERT_KEY} or {KEY_KEY}; rerun with --force to make new TLS material"
            )
        admin_kube.write_secret(api, namespace, CLIENT_SECRET, {CERT_KEY: cert}, OPAQUE, replace=False)  # type: ignore[arg-type]
        out.lines.append(f"kept Secret {server_name} (exists; --force replaces it)")
        out.lines.append(f"created Secret {client_name} from the server certificate")
        out.certificate = cert
        return out
    if client is not None and server is None and not force:
        raise admin_kube.KubeError(
            f"Secret {client_name} exists but {server_name} does not; rerun with --force to make a new certificate "
            "(then copy it to every compute node again)"
        )
    cert, key = make()
    verb = "replaced" if server is not None else "created"
    admin_kube.write_secret(
        api, namespace, SERVER_SECRET, {CERT_KEY: cert, KEY_KEY: key}, TLS_TYPE, replace=server is not None  # type: ignore[arg-type]
    )
    out.lines.append(f"{verb} Secret {server_name} (type {TLS_TYPE})")
    verb = "replaced" if client is not None else "created"
    admin_kube.write_secret(api, namespace, CLIENT_SECRET, {CERT_KEY: cert}, OPAQUE, replace=client is not None)  # type: ignore[arg-type]
    out.lines.append(f"{verb} Secret {client_name} ({CERT_KEY} only)")
    out.certificate = cert
    out.created = True
    return out


def load_material(cert_path: str, key_path: str) -> Material:
    """A certificate and its key from files, checked to belong together."""
    cert_pem = _read(cert_path, "certificate")
    key_pem = _read(key_path, "private key")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise MaterialError(f"{cert_path} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise MaterialError(f"{key_path} is not an unencrypted PEM private key") from None
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        raise MaterialError(f"{key_path} is not the key of the certificate {cert_path}")
    return cert_pem, key_pem


def certificate_names(cert_pem: bytes) -> List[str]:
    """The DNS and IP SANs of a PEM certificate (empty when it has none or does not parse)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return []
    names = [str(n) for n in sans.get_values_for_type(x509.DNSName)]
    return names + [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise MaterialError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
