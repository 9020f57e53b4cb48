"""The server image, built and run for real (tier ``image``).

buildah builds share/container/Containerfile on a local base image (nothing is pulled: the base
is named by COPY_OFFLOAD_IMAGE_BASE, any image with python3 and its venv module), then runs
copy-offload-server in it with ``--isolation chroot`` on the host's network, with TLS and a token,
as the image's own user; the test copies through the Python client from outside.

    COPY_OFFLOAD_IMAGE_BASE=localhost/debian-bookworm-python:12 pytest -m image tests/test_image.py

COPY_OFFLOAD_IMAGE_BUILD_ARGS adds arguments to ``buildah build`` (for example pip's index or a
site CA: ``--build-arg PIP_CERT=/run/ca.pem -v /etc/ssl/certs/ca-certificates.crt:/run/ca.pem:ro``).
COPY_OFFLOAD_IMAGE_MPI_BASE names a base that also has Open MPI (mpirun) and mpiFileUtils (dcp)
on its PATH, the launcher image of the nnf driver: the image built on it runs ``mpirun ... dcp``.
CI sets none of these variables, so it never builds images.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import uuid

import pytest
from copy_offload.client import Client
from support import Material, ServerProcess, server_args

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.environ.get("COPY_OFFLOAD_IMAGE_BASE", "")
MPI_BASE = os.environ.get("COPY_OFFLOAD_IMAGE_MPI_BASE", "")
IMAGE_UID = 10001  # the Containerfile's USER

pytestmark = [
    pytest.mark.image,
    pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah is not installed (apt-get install buildah)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah's chroot isolation and handing files to uid 10001 need root"),
]


def buildah(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-4000:])
    return proc


def built_image(base: str, variable: str):
    """Build share/container/Containerfile on ``base``; yield its tag, remove it afterwards."""
    if not base:
        pytest.skip("%s does not name a local base image" % variable)
    tag = "localhost/flux-copy-offload-server:pytest-%s" % uuid.uuid4().hex[:8]
    extra = shlex.split(os.environ.get("COPY_OFFLOAD_IMAGE_BUILD_ARGS", ""))
    buildah("build", "--isolation", "chroot", "--layers", "-f", os.path.join(REPO, "share", "container", "Containerfile"),
            "--build-arg", "PYTHON_IMAGE=" + base, *extra, "-t", tag, REPO, timeout=1800)
    yield tag
    subprocess.run(["buildah", "rmi", tag], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def image():
    yield from built_image(BASE, "COPY_OFFLOAD_IMAGE_BASE (python3 + venv)")


@pytest.fixture(scope="module")
def mpi_image():
    yield from built_image(MPI_BASE, "COPY_OFFLOAD_IMAGE_MPI_BASE (python3 + venv + Open MPI + mpiFileUtils)")


def working_container(image: str):
    name = buildah("from", image).stdout.strip().splitlines()[-1]
    yield name
    subprocess.run(["buildah", "rm", name], capture_output=True, timeout=120)


@pytest.fixture
def container(image):
    yield from working_container(image)


@pytest.fixture
def mpi_container(mpi_image):
    yield from working_container(mpi_image)


def run_in(container: str, shared, *command: str) -> subprocess.CompletedProcess:
    """A command in the container as the image's user, on the host's network, ``shared`` bind-mounted."""
    return subprocess.run(["buildah", "run", "--isolation", "chroot", "--network", "host",
                           "-v", "%s:%s" % (shared, shared), container, "--", *command],
                          capture_output=True, text=True, timeout=300)


def made_material(tmp_path) -> Material:
    directory = tmp_path / "material"
    directory.mkdir()
    return Material(str(directory))


def handed_to_image_user(*paths: str) -> None:
    """The server runs as the image's uid: give it the material and the data, as a site would."""
    for path in paths:
        for root, dirs, files in os.walk(path):
            for entry in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.chown(entry, IMAGE_UID, IMAGE_UID)


def test_image_config_is_the_non_root_server(image):
    config = json.loads(buildah("inspect", "--type", "image", image).stdout)["OCIv1"]["config"]
    assert config["User"] == "%d:%d" % (IMAGE_UID, IMAGE_UID)
    assert config["Entrypoint"] == ["copy-offload-server"] and config["Cmd"] == ["--help"]
    assert any(item.startswith("PATH=/opt/copy-offload/bin:") for item in config["Env"])


def test_server_in_the_image_copies_for_a_client_outside(container, tmp_path):
    material = made_material(tmp_path)
    data = tmp_path / "data"
    (data / "src" / "nested").mkdir(parents=True)
    payload = os.urandom(3 << 20)
    (data / "src" / "big.bin").write_bytes(payload)
    for i in range(20):
        (data / "src" / "nested" / ("f%d.txt" % i)).write_text("file %d\n" % i)
    handed_to_image_user(material.directory, str(data))
    os.chmod(tmp_path, 0o755)
    # The same paths inside and outside (a bind mount), so the client names files as the server sees them.
    command = ["buildah", "run", "--isolation", "chroot", "--network", "host",
               "-v", "%s:%s" % (tmp_path, tmp_path), container, "--", "copy-offload-server"]
    server = ServerProcess(server_args(material, extra=["--allow-root", str(data), "--state-dir", "/tmp/state"]),
                           env=dict(os.environ), tls=True, material=material, command=command)
    server.start(timeout=120)
    try:
        assert "driver=local tls=on token=on" in server.log
        with Client(**server.client_kwargs()) as client:
            assert client.hello() == "hello back at ya"
            name = client.copy(str(data / "src"), str(data / "dst"))
            final = client.wait(name)
            assert (final.state, final.status) == ("completed", "success"), final
            assert final.bytes_copied == len(payload) + sum(len("file %d\n" % i) for i in range(20))
            client.shutdown()
        assert server.wait(60) == 0
    finally:
        server.stop()
    assert (data / "dst" / "big.bin").read_bytes() == payload
    assert sorted(os.listdir(data / "dst" / "nested")) == sorted("f%d.txt" % i for i in range(20))
    assert os.stat(data / "dst" / "big.bin").st_uid == IMAGE_UID  # written inside, by the image's user
    assert "the server is closed" in server.log


def test_image_refuses_a_certificate_as_token_key(container, tmp_path):
    material = made_material(tmp_path)
    handed_to_image_user(material.directory)
    os.chmod(tmp_path, 0o755)
    proc = run_in(container, tmp_path, "copy-offload-server", "-addr", "127.0.0.1:0", "-skip-tls",
                  "-tokenkey", material.cert, "-mock")
    assert proc.returncode == 1 and "not a private key" in proc.stderr and "Traceback" not in proc.stderr


def test_mpi_image_runs_mpirun_dcp_as_the_image_user(mpi_container, tmp_path):
    """The nnf driver's launcher runs `mpirun ... dcp`: both are on PATH beside the server, and copy."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    payload = os.urandom(2 << 20)
    (src / "big.bin").write_bytes(payload)
    (src / "sub" / "small.txt").write_text("small\n")
    handed_to_image_user(str(src))
    os.chmod(tmp_path, 0o777)
    proc = run_in(mpi_container, tmp_path, "sh", "-c",
                  "for tool in copy-offload-server mpirun dcp; do command -v $tool || exit 1; done; id -u")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == str(IMAGE_UID) and "/opt/copy-offload/bin/copy-offload-server" in proc.stdout
    proc = run_in(mpi_container, tmp_path, "mpirun", "-n", "2", "--oversubscribe", "dcp", str(src), str(tmp_path / "dst"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "dst" / "big.bin").read_bytes() == payload
    assert (tmp_path / "dst" / "sub" / "small.txt").read_text() == "small\n"
    assert os.stat(tmp_path / "dst" / "big.bin").st_uid == IMAGE_UID
