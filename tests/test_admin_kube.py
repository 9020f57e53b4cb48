"""copy-offload-admin against the Kubernetes API test double, through the real ``kubernetes`` client.

The double (tests/kube_double.py) is a real HTTP server on loopback; the admin tool reaches it
through a kubeconfig file, as an administrator's would. Secrets are read back from the
double's store and certificates are parsed with ``cryptography``.
"""

from __future__ import annotations

import base64
import os
import socket
import stat
import subprocess
import sys

import pytest
from copy_offload.server import admin
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kube_double import DWS, KubeDouble

SERVER = "nnf-dm-usercontainer-server-tls"
CLIENT = "nnf-dm-usercontainer-client-tls"

SYSCONF = {
    "apiVersion": DWS + "/v1alpha7",
    "kind": "SystemConfiguration",
    "metadata": {"name": "default", "namespace": "default"},
    "spec": {
        "storageNodes": [
            {"type": "Rabbit", "name": "rabbit-01", "computesAccess": [{"name": "compute-01", "index": 0}, {"name": "compute-02", "index": 1}]},
            {"type": "Rabbit", "name": "rabbit-02", "computesAccess": [{"name": "compute-03", "index": 0}]},
        ],
        "externalComputeNodes": [{"name": "login-01"}],
        "ports": ["5000-5999"],
        "portsCooldownInSeconds": 60,
    },
    "status": {"ready": True},
}


@pytest.fixture
def cluster(kube, tmp_path):
    """The double with SystemConfiguration default, and a kubeconfig for it."""
    kube.put(SYSCONF)
    return kube, kube.write_kubeconfig(str(tmp_path / "kubeconfig"))


def secret_data(kube, name, namespace="default"):
    obj = kube.get("", "secrets", namespace, name)
    if obj is None:
        return None, None
    return obj, {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}


def sans_of(cert_pem: bytes) -> list:
    cert = x509.load_pem_x509_certificate(cert_pem)
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + [
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    ]


def key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def run_cli(*args, env=None):
    """A real process: for the exit status and stderr as a shell sees them."""
    cmd = [sys.executable, "-c", "import sys; from copy_offload.server.admin import main; sys.exit(main())", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture
def run(capsys):
    """main() in this process, its output captured like run_cli's (faster than a process)."""

    def call(*args):
        capsys.readouterr()
        code = admin.main(list(args))
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)

    return call


def created(kube, plural="secrets"):
    return sum(1 for e in kube.log(verb="create", plural=plural) if 200 <= e.status < 300)


def assert_one_line_error(proc, needle):
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("copy-offload-admin: "), proc.stderr
    assert needle in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- k8s-secrets


def test_k8s_secrets_created_once_with_rabbit_sans(cluster, capsys):
    kube, kubeconfig = cluster
    assert admin.main(["k8s-secrets", "--kubeconfig", kubeconfig, "--host", "localhost"]) == 0
    out = capsys.readouterr().out
    assert "created Secret default/%s" % SERVER in out and "created Secret default/%s" % CLIENT in out
    server, sdata = secret_data(kube, SERVER)
    client, cdata = secret_data(kube, CLIENT)
    assert server["type"] == "kubernetes.io/tls"
    assert set(sdata) == {"tls.crt", "tls.key"}
    assert client.get("type", "Opaque") == "Opaque"
    assert set(cdata) == {"tls.crt"}  # the clients never get the key
    assert cdata["tls.crt"] == sdata["tls.crt"]
    assert sans_of(sdata["tls.crt"]) == ["rabbit-01", "rabbit-02", "localhost"]
    assert key_matches(sdata["tls.crt"], sdata["tls.key"])
    assert b"PRIVATE KEY" not in out.encode()
    assert created(kube) == 2


def test_k8s_secrets_second_run_keeps_both(cluster, capsys):
    kube, kubeconfig = cluster
    assert admin.main(["k8s-secrets", "--kubeconfig", kubeconfig]) == 0
    before = (kube.get("", "secrets", "default", SERVER), kube.get("", "secrets", "default", CLIENT))
    kube.clear_log()
    capsys.readouterr()
    assert admin.main(["k8s-secrets", "--kubeconfig", kubeconfig]) == 0
    out = capsys.readouterr().out
    assert out.count("kept Secret") == 2
    assert "rabbit-01, rabbit-02" in out  # the SANs of the certificate in force
    assert kube.writes() == 0
    after = (kube.get("", "secrets", "default", SERVER), kube.get("", "secrets", "default", CLIENT))
    assert after == before  # same data, same resourceVersion
    assert kube.count(plural="systemconfigurations") == 0  # nothing to make, nothing read


def test_k8s_secrets_force_replaces_both(cluster, capsys):
    kube, kubeconfig = cluster
    assert admin.main(["k8s-secrets", "--kubeconfig", kubeconfig]) == 0
    _, first = secret_data(kube, SERVER)
    kube.clear_log()
    assert admin.main(["k8s-secrets", "--kubeconfig", kubeconfig, "--force", "--host", "extra.example"]) == 0
    assert "replaced Secret" in capsys.readouterr().out
    _, sdata = secret_data(kube, SERVER)
    _, cdata = secret_data(kube, CLIENT)
    assert sdata["tls.key"] != first["tls.key"] and sdata["tls.crt"] != first["tls.crt"]
    assert cdata["tls.crt"] == sdata["tls.crt"]
    assert sans_of(sdata["tls.crt"]) == ["rabbit-01", "rabbit-02", "extra.example"]
    assert key_matches(sdata["tls.crt"], sdata["tls.key"])
    assert created(kube) == 0  # replaced in place


def test_k8s_secrets_repairs_a_missing_client_secret(cluster, capsys):
    kube, kubeconfig = cluster
    assert admin.main(["k8s-secrets", "--kubeconfig", kubeconfig]) == 0
    kube.remove("", "secrets", "default", CLIENT)
    server_before = kube.get("", "secrets", "default", SERVER)
    assert admin.main(["k8s-secrets", "--kubeconfig", kubeconfig]) == 0
    assert "from the server certificate" in capsys.readouterr().out
    assert kube.get("", "secrets", "default", SERVER) == server_before
    _, cdata = secret_data(kube, CLIENT)
    assert cdata["tls.crt"] == base64.b64decode(server_before["data"]["tls.crt"])


def test_k8s_secrets_refuses_a_lone_client_secret(cluster, tmp_path, run):
    kube, kubeconfig = cluster
    assert admin.main(["k8s-secrets", "--kubeconfig", kubeconfig]) == 0
    kube.remove("", "secrets", "default", SERVER)
    kube.clear_log()
    proc = run("k8s-secrets", "--kubeconfig", kubeconfig)
    assert_one_line_error(proc, "exists but default/%s does not; rerun with --force" % SERVER)
    assert kube.writes() == 0
    assert admin.main(["k8s-secrets", "--kubeconfig", kubeconfig, "--force"]) == 0
    _, sdata = secret_data(kube, SERVER)
    _, cdata = secret_data(kube, CLIENT)
    assert cdata["tls.crt"] == sdata["tls.crt"] and key_matches(sdata["tls.crt"], sdata["tls.key"])


def test_k8s_secrets_from_tls_dir_and_other_namespace(cluster, tmp_path):
    kube, kubeconfig = cluster
    certs = tmp_path / "certs"
    assert admin.main(["tls", "--host", "only-me", "--out", str(certs)]) == 0
    args = ["k8s-secrets", "--kubeconfig", kubeconfig, "--tls-dir", str(certs), "--namespace", "nnf-test"]
    assert admin.main(args) == 0
    _, sdata = secret_data(kube, SERVER, "nnf-test")
    assert sdata["tls.crt"] == (certs / "tls.crt").read_bytes()
    assert sdata["tls.key"] == (certs / "tls.key").read_bytes()
    assert kube.get("", "secrets", "default", SERVER) is None


def test_k8s_secrets_tls_dir_with_a_foreign_key(cluster, tmp_path, run):
    _, kubeconfig = cluster
    a, b = tmp_path / "a", tmp_path / "b"
    admin.main(["tls", "--host", "a", "--out", str(a)])
    admin.main(["tls", "--host", "b", "--out", str(b)])
    os.replace(b / "tls.key", a / "tls.key")
    proc = run("k8s-secrets", "--kubeconfig", kubeconfig, "--tls-dir", str(a))
    assert_one_line_error(proc, "is not the key of the certificate")


def test_k8s_secrets_sans_from_a_file_or_hosts_only(cluster, tmp_path):
    kube, kubeconfig = cluster
    import yaml

    other = dict(SYSCONF, spec={"storageNodes": [{"type": "Rabbit", "name": "file-rabbit", "computesAccess": []}]})
    path = tmp_path / "sc.yaml"
    path.write_text(yaml.safe_dump(other))
    assert admin.main(["k8s-secrets", "--kubeconfig", kubeconfig, "--systemconfiguration", str(path)]) == 0
    _, sdata = secret_data(kube, SERVER)
    assert sans_of(sdata["tls.crt"]) == ["file-rabbit"]
    assert admin.main(["k8s-secrets", "--kubeconfig", kubeconfig, "--force", "--no-rabbits", "--host", "127.0.0.1"]) == 0
    _, sdata = secret_data(kube, SERVER)
    assert sans_of(sdata["tls.crt"]) == ["127.0.0.1"]


# --------------------------------------------------------------------------- client-cert


def test_client_cert_writes_the_client_secret_certificate(cluster, tmp_path, capsys):
    kube, kubeconfig = cluster
    admin.main(["k8s-secrets", "--kubeconfig", kubeconfig])
    target = tmp_path / "etc" / "nnf-dm-usercontainer" / "cert.pem"
    assert admin.main(["client-cert", "--kubeconfig", kubeconfig, "--out", str(target)]) == 0
    _, cdata = secret_data(kube, CLIENT)
    assert target.read_bytes() == cdata["tls.crt"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    capsys.readouterr()
    assert admin.main(["client-cert", "--kubeconfig", kubeconfig, "--out", "-"]) == 0
    assert capsys.readouterr().out.encode() == cdata["tls.crt"]


def test_client_cert_without_the_secret(cluster, tmp_path, run):
    _, kubeconfig = cluster
    proc = run("client-cert", "--kubeconfig", kubeconfig, "--out", str(tmp_path / "cert.pem"))
    assert_one_line_error(proc, "Secret default/%s not found; create it with: copy-offload-admin k8s-secrets" % CLIENT)
    assert not (tmp_path / "cert.pem").exists()


# --------------------------------------------------------------------------- SystemConfiguration readers


def test_tls_from_cluster(cluster, tmp_path):
    _, kubeconfig = cluster
    out = tmp_path / "certs"
    assert admin.main(["tls", "--from-cluster", "--kubeconfig", kubeconfig, "--host", "10.0.0.1", "--out", str(out)]) == 0
    assert sans_of((out / "tls.crt").read_bytes()) == ["rabbit-01", "rabbit-02", "10.0.0.1"]


def test_local_rabbit_from_cluster(cluster, tmp_path, capsys):
    _, kubeconfig = cluster
    for compute, rabbit in (("compute-02", "rabbit-01"), ("compute-03", "rabbit-02")):
        assert admin.main(["local-rabbit", "--from-cluster", "--kubeconfig", kubeconfig, "--compute", compute]) == 0
        assert capsys.readouterr().out == rabbit + "\n"
    target = tmp_path / "local-rabbit.conf"
    args = ["local-rabbit", "--from-cluster", "--kubeconfig", kubeconfig, "--compute", "compute-01", "--write", str(target)]
    assert admin.main(args) == 0
    assert target.read_text() == "rabbit-01\n"


def test_local_rabbit_unmapped_compute_from_cluster(cluster, run):
    _, kubeconfig = cluster
    proc = run("local-rabbit", "--from-cluster", "--kubeconfig", kubeconfig, "--compute", "login-01")
    assert_one_line_error(proc, "compute node 'login-01' is not served by any Rabbit")
    assert proc.stdout == ""


def test_kubeconfig_from_the_environment(cluster, tmp_path):
    _, kubeconfig = cluster
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    proc = run_cli("local-rabbit", "--from-cluster", "--compute", "compute-01", env=env)
    assert proc.returncode == 0 and proc.stdout == "rabbit-01\n", proc.stderr


def test_older_dws_version_is_found(kube, tmp_path, capsys):
    """A cluster serving only v1alpha6: the first probe 404s, the second answers."""
    from kube_double import DEFAULT_RESOURCES, ResourceType

    resources = tuple(
        ResourceType(rt.group, ("v1alpha6",), rt.plural, rt.kind, rt.namespaced, rt.status_subresource)
        if rt.plural == "systemconfigurations"
        else rt
        for rt in DEFAULT_RESOURCES
    )
    with KubeDouble(resources) as old:
        old.put(dict(SYSCONF, apiVersion=DWS + "/v1alpha6"))
        kubeconfig = old.write_kubeconfig(str(tmp_path / "kc"))
        assert admin.main(["local-rabbit", "--from-cluster", "--kubeconfig", kubeconfig, "--compute", "compute-03"]) == 0
        assert capsys.readouterr().out == "rabbit-02\n"


# --------------------------------------------------------------------------- cluster failures


def test_missing_systemconfiguration(kube, tmp_path, run):
    kubeconfig = kube.write_kubeconfig(str(tmp_path / "kc"))
    for args in (
        ["local-rabbit", "--from-cluster", "--compute", "compute-01"],
        ["tls", "--from-cluster", "--out", str(tmp_path / "o")],
        ["k8s-secrets"],
    ):
        proc = run(*args, "--kubeconfig", kubeconfig)
        assert_one_line_error(proc, "SystemConfiguration default/default not found in the cluster")
    assert kube.writes() == 0
    assert not (tmp_path / "o").exists()


def test_unreachable_cluster(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with KubeDouble() as double:
        kubeconfig = double.write_kubeconfig(str(tmp_path / "kc"))
    path = tmp_path / "kc"
    path.write_text(path.read_text().replace(f":{double.port}", f":{port}"))
    for args in (
        ["k8s-secrets"],
        ["client-cert", "--out", str(tmp_path / "cert.pem")],
        ["local-rabbit", "--from-cluster", "--compute", "c"],
        ["tls", "--from-cluster", "--out", str(tmp_path / "o")],
    ):
        proc = run_cli(*args, "--kubeconfig", kubeconfig)
        assert_one_line_error(proc, f"cannot reach the Kubernetes API server at http://127.0.0.1:{port}")
        assert "Connection refused" in proc.stderr


def test_cluster_going_away_mid_session(cluster, tmp_path, run):
    kube, kubeconfig = cluster
    kube.refuse_connections()
    try:
        proc = run("k8s-secrets", "--kubeconfig", kubeconfig)
        assert_one_line_error(proc, "cannot reach the Kubernetes API server")
    finally:
        kube.accept_connections()
    assert run("k8s-secrets", "--kubeconfig", kubeconfig).returncode == 0


def test_forbidden_names_rbac(cluster, run):
    kube, kubeconfig = cluster
    kube.fail(403, count=5, message='secrets "x" is forbidden')
    proc = run("k8s-secrets", "--kubeconfig", kubeconfig)
    assert_one_line_error(proc, "refused it (403")
    assert "RBAC" in proc.stderr


def test_server_error_is_one_line(cluster, run):
    kube, kubeconfig = cluster
    kube.fail(500, count=5, method="POST", message="etcd is sad")
    proc = run("k8s-secrets", "--kubeconfig", kubeconfig)
    assert_one_line_error(proc, "cannot create Secret default/%s: 500" % SERVER)


def test_no_kubernetes_configuration(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config
    proc = run_cli("client-cert", "--out", str(tmp_path / "c.pem"), env=env)
    assert_one_line_error(proc, "no Kubernetes configuration")
    bad = tmp_path / "bad-kubeconfig"
    bad.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    proc = run_cli("client-cert", "--out", str(tmp_path / "c.pem"), "--kubeconfig", str(bad), env=env)
    assert_one_line_error(proc, "Kubernetes configuration from %s" % bad)
    proc = run_cli("client-cert", "--out", str(tmp_path / "c.pem"), "--kubeconfig", str(tmp_path / "missing"), env=env)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
