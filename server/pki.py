"""Keys, tokens and certificates, made the way nnf-sos and mk-usercontainer-secrets.sh make them.

The token signing key is an ECDSA P-521 private key in PKCS#8, PEM-labelled ``EC PRIVATE KEY``
(nnf-sos writes it so). It is never used as an EC key: the HMAC secret of the HS256 token is the
DER bytes inside its first PEM block. Everything that writes a secret writes it mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import ipaddress
import os
import re
import tempfile
import time
from typing import Iterable, Optional, Tuple

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TOKEN_SUBJECT = "user-container"
TOKEN_ALGORITHM = "HS256"

_PEM_BLOCK = re.compile(rb"-----BEGIN ([^-\r\n]*)-----\r?\n(.*?)-----END \1-----", re.S)


class KeyError_(ValueError):
    """A key file that holds no usable PEM block (the text never includes key material)."""


def pem_der(pem: bytes) -> bytes:
    """The DER bytes of the first PEM block, as Go's ``pem.Decode`` yields them."""
    match = _PEM_BLOCK.search(pem)
    if not match:
        raise KeyError_("no PEM block found")
    body = b"".join(line.strip() for line in match.group(2).splitlines() if b":" not in line)
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error:
        raise KeyError_("the PEM block is not valid base64") from None


def read_token_key(path: str) -> bytes:
    """The HMAC secret for tokens, from a ``-tokenkey`` file.

    Only a private-key PEM block is accepted: a certificate or public key given by mistake
    (``tls.crt``) would otherwise become a secret that every client can read.
    """
    with open(path, "rb") as handle:
        pem = handle.read()
    match = _PEM_BLOCK.search(pem)
    if match and not match.group(1).endswith(b"PRIVATE KEY"):
        raise KeyError_("it holds a %s, not a private key (make a token key with: copy-offload-admin token-key)"
                        % match.group(1).decode("ascii", "replace"))
    return pem_der(pem)


def generate_token_key_pem() -> bytes:
    """A new P-521 signing key, PKCS#8 DER labelled ``EC PRIVATE KEY`` as nnf-sos writes it."""
    key = ec.generate_private_key(ec.SECP521R1())
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return _pem("EC PRIVATE KEY", der)


def mint_token(secret: bytes, issued_at: Optional[int] = None) -> str:
    """An HS256 token with nnf-sos's claims: ``sub: user-container`` and ``iat``."""
    claims = {"sub": TOKEN_SUBJECT, "iat": int(time.time() if issued_at is None else issued_at)}
    try:
        return jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM)
    except jwt.InvalidKeyError:
        raise KeyError_("its key material cannot be an HMAC secret (it looks like a public key or certificate)") from None


def generate_tls(hosts: Iterable[str], days: int = 365) -> Tuple[bytes, bytes]:
    """A P-521 key and a self-signed certificate whose SANs are ``hosts``: (cert PEM, key PEM)."""
    names = [h for h in hosts if h]
    if not names:
        raise ValueError("at least one host name is needed for the certificate")
    key = ec.generate_private_key(ec.SECP521R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COUNTRY_NAME, "US"), x509.NameAttribute(NameOID.COMMON_NAME, names[0])]
    )
    now = dt.datetime.now(dt.timezone.utc)
    sans = [_san(name) for name in names]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_secret(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (never briefly world-readable)."""
    _write_atomic(path, data, 0o600)


def write_public(path: str, data: bytes, mode: int = 0o644) -> None:
    _write_atomic(path, data, mode)


def _write_atomic(path: str, data: bytes, mode: int) -> None:
    """Write a new file beside ``path`` and rename it over ``path``.

    The new file has a random name and is created exclusively, mode 0600 (``mkstemp``), so a
    file or symlink planted in a shared directory can never receive the data.
    """
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".%s." % os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode != 0o600:
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN %s-----\n%s\n-----END %s-----\n" % (label.encode(), b"\n".join(lines), label.encode())
