"""copy-offload-admin's file commands: keys, tokens, certificates, local-rabbit from a file.

Tokens are verified with pyjwt directly over DER bytes this test decodes itself, and
certificates are read back with ``cryptography``, so the checks do not trust the code under
test. A few runs go through the installed console script to pin exit codes and the
one-line, traceback-free error contract.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import subprocess
import sys
import time

import jwt
import pytest
import yaml
from copy_offload.server import admin
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SYSCONF = {
    "apiVersion": "dataworkflowservices.github.io/v1alpha7",
    "kind": "SystemConfiguration",
    "metadata": {"name": "default", "namespace": "default"},
    "spec": {
        "storageNodes": [
            {"type": "Rabbit", "name": "rabbit-01", "computesAccess": [{"name": "compute-01", "index": 0}, {"name": "compute-02", "index": 1}]},
            {"type": "Rabbit", "name": "rabbit-02", "computesAccess": [{"name": "compute-03", "index": 0}]},
            {"type": "Other", "name": "not-a-rabbit", "computesAccess": []},
        ],
        "externalComputeNodes": [{"name": "login-01"}],
        "ports": ["5000-5999"],
        "portsCooldownInSeconds": 60,
    },
}


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script's module, as a real process."""
    cmd = [sys.executable, "-c", "import sys; from copy_offload.server.admin import main; sys.exit(main())", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


def der_of_first_pem_block(pem: bytes) -> bytes:
    """Decoded independently of pki.pem_der: the base64 between the first BEGIN/END lines."""
    lines = pem.decode().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("-----BEGIN "))
    end = next(i for i, line in enumerate(lines) if line.startswith("-----END ") and i > start)
    return base64.b64decode("".join(lines[start + 1 : end]))


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def sans_of(cert_pem: bytes) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + [
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    ]


@pytest.fixture
def sysconf_file(tmp_path):
    path = tmp_path / "sysconf.yaml"
    path.write_text(yaml.safe_dump(SYSCONF))
    return path


# --------------------------------------------------------------------------- token-key / token


def test_token_key_is_p521_pkcs8_labelled_ec_private_key(tmp_path, capsys):
    out = tmp_path / "token.key"
    assert admin.main(["token-key", "--out", str(out)]) == 0
    pem = out.read_bytes()
    assert pem.startswith(b"-----BEGIN EC PRIVATE KEY-----\n")
    assert pem.rstrip().endswith(b"-----END EC PRIVATE KEY-----")
    key = serialization.load_der_private_key(der_of_first_pem_block(pem), password=None)  # PKCS#8 DER
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp521r1"
    assert mode_of(out) == 0o600
    assert "0600" in capsys.readouterr().out


def test_token_key_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "token.key"
    out.write_bytes(b"precious\n")
    assert admin.main(["token-key", "--out", str(out)]) == 1
    assert out.read_bytes() == b"precious\n"
    assert "already exists; use --force" in capsys.readouterr().err
    assert admin.main(["token-key", "--out", str(out), "--force"]) == 0
    assert out.read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert mode_of(out) == 0o600


def test_token_verifies_as_hs256_over_the_der_bytes(tmp_path, capsys):
    key = tmp_path / "token.key"
    assert admin.main(["token-key", "--out", str(key)]) == 0
    capsys.readouterr()
    before = int(time.time())
    assert admin.main(["token", "--key", str(key)]) == 0
    token = capsys.readouterr().out.strip()
    secret = der_of_first_pem_block(key.read_bytes())
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims["sub"] == "user-container"
    assert before - 1 <= claims["iat"] <= int(time.time()) + 1
    assert set(claims) == {"sub", "iat"}
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, secret + b"x", algorithms=["HS256"])


def test_token_out_file_is_0600_and_not_printed(tmp_path, capsys):
    key = tmp_path / "token.key"
    admin.main(["token-key", "--out", str(key)])
    capsys.readouterr()
    out = tmp_path / "token"
    assert admin.main(["token", "--key", str(key), "--out", str(out), "--iat", "1700000000"]) == 0
    captured = capsys.readouterr()
    token = out.read_text().strip()
    assert token not in captured.out and token not in captured.err
    assert mode_of(out) == 0o600
    assert jwt.decode(token, der_of_first_pem_block(key.read_bytes()), algorithms=["HS256"])["iat"] == 1700000000
    assert admin.main(["token", "--key", str(key), "--out", str(out)]) == 1  # no silent overwrite


def test_token_from_a_key_made_elsewhere(tmp_path, capsys):
    """A key as nnf-sos stores it in <wf>-token-server: any P-521 PKCS#8 key, labelled EC PRIVATE KEY."""
    der = ec.generate_private_key(ec.SECP521R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    body = base64.encodebytes(der).decode()
    key = tmp_path / "token.key"
    key.write_text(f"-----BEGIN EC PRIVATE KEY-----\n{body}-----END EC PRIVATE KEY-----\n")
    assert admin.main(["token", "--key", str(key)]) == 0
    jwt.decode(capsys.readouterr().out.strip(), der, algorithms=["HS256"])


def test_token_key_errors_are_one_line(tmp_path, material):
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    public = tmp_path / "public.pem"
    public.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    for args, needle in (
        (["token", "--key", str(tmp_path / "missing")], "cannot read the token key"),
        (["token", "--key", str(bad)], "no PEM block"),
        (["token", "--key", material.cert], "holds a CERTIFICATE, not a private key"),
        (["token", "--key", str(public)], "holds a PUBLIC KEY, not a private key"),
        (["token-key", "--out", str(tmp_path / "no" / "such" / "dir" / "k")], "cannot write"),
    ):
        proc = run_cli(*args)
        assert proc.returncode == 1, proc
        assert proc.stdout == ""
        assert proc.stderr.startswith("copy-offload-admin: ") and needle in proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_usage_errors_exit_2():
    for args in ([], ["token-key"], ["tls", "--out", "x", "--days", "0"], ["no-such-command"]):
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc)
        assert "usage:" in proc.stderr


def test_local_rabbit_all_cannot_write(sysconf_file, tmp_path):
    proc = run_cli("local-rabbit", "--systemconfiguration", str(sysconf_file), "--all", "--write", str(tmp_path / "x"))
    assert proc.returncode == 2 and "--write needs one compute node" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_help_names_every_command():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("token-key", "token", "tls", "k8s-secrets", "client-cert", "local-rabbit"):
        assert command in proc.stdout


# --------------------------------------------------------------------------- tls


def test_tls_with_hosts(tmp_path, capsys):
    out = tmp_path / "certs"
    assert admin.main(["tls", "--host", "rabbit-01", "--host", "127.0.0.1", "--out", str(out)]) == 0
    assert mode_of(out / "tls.key") == 0o600
    assert mode_of(out / "tls.crt") == 0o644
    assert mode_of(out) == 0o700
    cert_pem = (out / "tls.crt").read_bytes()
    assert sans_of(cert_pem) == ["rabbit-01", "127.0.0.1"]
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key((out / "tls.key").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp521r1"
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)
    assert cert.issuer == cert.subject  # self-signed
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert 364 <= days <= 366


def test_tls_from_systemconfiguration_file_takes_rabbits_then_hosts(tmp_path, sysconf_file):
    out = tmp_path / "certs"
    args = ["tls", "--systemconfiguration", str(sysconf_file), "--host", "localhost", "--host", "rabbit-01"]
    assert admin.main([*args, "--out", str(out), "--days", "30"]) == 0
    cert_pem = (out / "tls.crt").read_bytes()
    assert sans_of(cert_pem) == ["rabbit-01", "rabbit-02", "localhost"]  # type Other excluded, no duplicate
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days in (29, 30)


def test_tls_reads_json_and_kubectl_lists(tmp_path):
    as_json = tmp_path / "sc.json"
    as_json.write_text(json.dumps(SYSCONF))
    as_list = tmp_path / "list.yaml"
    other = dict(SYSCONF, metadata={"name": "other"}, spec={"storageNodes": [{"type": "Rabbit", "name": "x"}]})
    as_list.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [other, SYSCONF]}))
    multi = tmp_path / "multi.yaml"
    multi.write_text("---\nkind: ConfigMap\n---\n" + yaml.safe_dump(SYSCONF))
    for i, path in enumerate((as_json, as_list, multi)):
        out = tmp_path / f"o{i}"
        assert admin.main(["tls", "--systemconfiguration", str(path), "--out", str(out)]) == 0
        assert sans_of((out / "tls.crt").read_bytes()) == ["rabbit-01", "rabbit-02"]


def test_tls_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "certs"
    assert admin.main(["tls", "--host", "a", "--out", str(out)]) == 0
    first = (out / "tls.key").read_bytes()
    assert admin.main(["tls", "--host", "b", "--out", str(out)]) == 1
    assert "already exists; use --force" in capsys.readouterr().err
    assert (out / "tls.key").read_bytes() == first
    assert admin.main(["tls", "--host", "b", "--out", str(out), "--force"]) == 0
    assert sans_of((out / "tls.crt").read_bytes()) == ["b"]
    assert mode_of(out / "tls.key") == 0o600


def test_tls_errors(tmp_path, sysconf_file):
    no_rabbits = tmp_path / "empty.yaml"
    no_rabbits.write_text(yaml.safe_dump(dict(SYSCONF, spec={"storageNodes": []})))
    not_yaml = tmp_path / "bad.yaml"
    not_yaml.write_text("spec: [unclosed\n")
    no_sysconf = tmp_path / "cm.yaml"
    no_sysconf.write_text("kind: ConfigMap\nmetadata: {name: default}\n")
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    cases = [
        (["--systemconfiguration", str(tmp_path / "missing.yaml")], "cannot read SystemConfiguration file"),
        (["--systemconfiguration", str(no_rabbits)], "no storage nodes of type Rabbit"),
        (["--systemconfiguration", str(not_yaml)], "not valid YAML or JSON"),
        (["--systemconfiguration", str(no_sysconf)], "no SystemConfiguration named 'default'"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((["--host", "a", "--out", str(readonly / "x")], "cannot create directory"))
    for args, needle in cases:
        args = ["tls", *args] if "--out" in args else ["tls", *args, "--out", str(tmp_path / "o")]
        proc = run_cli(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert needle in proc.stderr and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_write_failure_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("tls", "--host", "a", "--out", str(blocker / "sub"))
    assert proc.returncode == 1
    assert "cannot create directory" in proc.stderr and proc.stderr.count("\n") == 1


# --------------------------------------------------------------------------- local-rabbit (file)


def test_local_rabbit_mapped_computes(sysconf_file, capsys):
    for compute, rabbit in (("compute-01", "rabbit-01"), ("compute-02", "rabbit-01"), ("compute-03", "rabbit-02")):
        assert admin.main(["local-rabbit", "--systemconfiguration", str(sysconf_file), "--compute", compute]) == 0
        assert capsys.readouterr().out == rabbit + "\n"


def test_local_rabbit_unmapped_compute(sysconf_file):
    proc = run_cli("local-rabbit", "--systemconfiguration", str(sysconf_file), "--compute", "login-01")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "compute node 'login-01' is not served by any Rabbit" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_local_rabbit_write(tmp_path, sysconf_file, capsys):
    target = tmp_path / "etc" / "local-rabbit.conf"
    args = ["local-rabbit", "--systemconfiguration", str(sysconf_file), "--compute", "compute-03", "--write", str(target)]
    assert admin.main(args) == 0
    assert target.read_text() == "rabbit-02\n"  # libcopyoffload strips the one newline
    assert mode_of(target) == 0o644
    target.write_text("stale\n")
    assert admin.main(args) == 0  # a site file: refreshed on every run
    assert target.read_text() == "rabbit-02\n"


def test_local_rabbit_all(sysconf_file, capsys):
    assert admin.main(["local-rabbit", "--systemconfiguration", str(sysconf_file), "--all"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "compute-01 rabbit-01",
        "compute-02 rabbit-01",
        "compute-03 rabbit-02",
    ]


def test_local_rabbit_defaults_to_this_host(tmp_path, capsys):
    import socket

    here = socket.gethostname()
    sc = dict(SYSCONF, spec={"storageNodes": [{"type": "Rabbit", "name": "r9", "computesAccess": [{"name": here, "index": 0}]}]})
    path = tmp_path / "sc.yaml"
    path.write_text(yaml.safe_dump(sc))
    assert admin.main(["local-rabbit", "--systemconfiguration", str(path)]) == 0
    assert capsys.readouterr().out == "r9\n"


def test_no_key_material_in_any_output(tmp_path):
    key = tmp_path / "token.key"
    proc = run_cli("token-key", "--out", str(key))
    body = re.sub(r"-----[^-]+-----|\s", "", key.read_text())
    assert body[:40] not in proc.stdout + proc.stderr
    proc = run_cli("tls", "--host", "h", "--out", str(tmp_path / "c"))
    key_body = re.sub(r"-----[^-]+-----|\s", "", (tmp_path / "c" / "tls.key").read_text())
    assert key_body[:40] not in proc.stdout + proc.stderr
