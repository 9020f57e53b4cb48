"""The layout's promises, read from fresh processes: what each entry point imports."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from support import Material, ServerProcess, server_args

IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| ( *)(\S+)$", re.M)
TRANSPORTS = ("httpx", "httpcore", "tqdm", "tornado", "rich", "ssl", "http.client")


def imported(stderr: str) -> set:
    """The modules ``python -X importtime`` reports in ``stderr``."""
    return {match.group(2) for match in IMPORTED.finditer(stderr)}


def run_fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": ""})


def test_the_wire_module_imports_nothing_of_ours_and_no_transport():
    done = run_fresh("import copy_offload.client.wire")
    assert done.returncode == 0, done.stderr
    modules = imported(done.stderr)
    assert "copy_offload.client.wire" in modules
    ours = {name for name in modules if name.startswith("copy_offload")}
    assert ours == {"copy_offload", "copy_offload.client", "copy_offload.client.wire"}
    assert not {name for name in modules if name.split(".")[0] in TRANSPORTS or name in TRANSPORTS}


def test_the_client_package_still_offers_its_names():
    done = subprocess.run([sys.executable, "-c", "from copy_offload.client import Client, NotFound, Status, discover;"
                           "import copy_offload.client as c; print(sorted(c.__all__) == sorted(dir(c)) or dir(c))"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-c", "import copy_offload.client as c; c.Nope"],
                          capture_output=True, text=True, timeout=60)
    assert "has no attribute 'Nope'" in done.stderr


def test_server_help_imports_no_httpx():
    done = run_fresh("import sys; sys.argv = ['copy-offload-server', '--help']\n"
                     "from copy_offload.server.extra import server_main\nserver_main()")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
    modules = imported(done.stderr)
    assert "copy_offload.server.settings" in modules
    assert not {name for name in modules if name.split(".")[0] in ("httpx", "httpcore", "tqdm", "rich")}


def test_a_started_server_has_imported_no_httpx(tmp_path):
    material = Material(str(tmp_path))
    for driver in ("mock", "local"):
        extra = ["--driver", driver] + (["--allow-root", str(tmp_path), "--state-dir", str(tmp_path / "state")]
                                        if driver == "local" else [])
        server = ServerProcess(server_args(material, extra=extra), dict(os.environ), True, material,
                               command=[sys.executable, "-X", "importtime", "-m", "copy_offload.server"])
        server.start(timeout=60)
        try:
            modules = imported(server.log)
        finally:
            server.stop()
        assert "copy_offload.server.app" in modules, driver
        assert not {name for name in modules if name.split(".")[0] in ("httpx", "httpcore", "tqdm", "rich")}, driver
        assert "copy_offload.client.client" not in modules, driver


def _kubeconfig(path, host: str) -> str:
    path.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\n"
                    "clusters: [{name: k, cluster: {server: '%s'}}]\n"
                    "users: [{name: u, user: {token: t}}]\n"
                    "contexts: [{name: c, context: {cluster: k, user: u}}]\n" % host)
    return str(path)


def test_one_kubernetes_precedence_on_both_sides(tmp_path, monkeypatch):
    """The server's loader and the Flux side's pick the same file in the same order."""
    from copy_offload.flux import kube as flux_kube
    from copy_offload.server import kube as server_kube

    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    _kubeconfig(home / ".kube" / "config", "https://home.example:1")
    env_file = _kubeconfig(tmp_path / "env", "https://env.example:2")
    flag_file = _kubeconfig(tmp_path / "flag", "https://flag.example:3")
    monkeypatch.setenv("HOME", str(home))

    def hosts(flag, environ):
        server_cfg, _ = server_kube.load_configuration(flag, environ=environ)
        flux_cfg = flux_kube.load_configuration(flag or "", environ=environ)
        return server_cfg.host, flux_cfg.host

    in_pod = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert hosts(flag_file, {"KUBECONFIG": env_file, **in_pod}) == ("https://flag.example:3",) * 2
    assert hosts(None, {"KUBECONFIG": env_file, **in_pod}) == ("https://env.example:2",) * 2
    assert hosts(None, {}) == ("https://home.example:1",) * 2
    # In a pod (no service-account files here), in-cluster comes before ~/.kube/config: both fail
    # with the same shape of error instead of quietly reading the home file.
    with pytest.raises(server_kube.KubeError) as server_err:
        server_kube.load_configuration(None, environ=in_pod)
    with pytest.raises(flux_kube.KubeError) as flux_err:
        flux_kube.load_configuration("", environ=in_pod)
    for err in (server_err.value, flux_err.value):
        assert "Kubernetes configuration" in err.message and not err.status


DEFINE = re.compile(r'^#define\s+(\w+)\s+"([^"]*)"', re.M)


def test_the_c_plugins_spell_the_flux_vocabulary_as_the_python_side():
    from copy_offload.flux import vocabulary

    jobtap = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jobtap")
    for source, expected in vocabulary.C_DEFINES.items():
        with open(os.path.join(jobtap, source)) as f:
            defines = dict(DEFINE.findall(f.read()))
        for name, word in expected.items():
            assert defines.get(name) == word, "%s: #define %s is %r, vocabulary.py says %r" % (
                source, name, defines.get(name), word)
    # The C plugins use their names, not the words again (a literal would escape this check).
    with open(os.path.join(jobtap, "copy-offload.c")) as f:
        body = f.read().split("#define DIRECTIVE_WORD", 1)[1]
    for word in (vocabulary.TOPIC_PREPARE, vocabulary.TOPIC_FORGET):
        assert '"%s"' % word not in body
    assert vocabulary.TOPIC_PREPARE.startswith(vocabulary.SERVICE + ".")
