"""What a site gets from the package: the wheel and sdist built for real, the wheel installed into a
fresh venv (no system site-packages, no ``server`` extra), its commands run, the Flux plugins'
Makefile driven from the installed location, and the sdist's own tests collected and run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARE = os.path.join(REPO, "share")
MAN_PAGES = sorted(name for name in os.listdir(os.path.join(SHARE, "man", "man1")) if name.endswith(".1"))


def run(*cmd: str, cwd: str | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def repo_files(folder: str) -> list:
    """Files of a repository folder as git tracks them (what a clone and the sdist have)."""
    out = run("git", "-C", REPO, "ls-files", folder).stdout.split()
    if not out:  # an unpacked sdist has no git: walk the folder instead
        out = [os.path.relpath(os.path.join(root, name), REPO)
               for root, _dirs, names in os.walk(os.path.join(REPO, folder)) for name in names
               if "__pycache__" not in root]
    return sorted(out)


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """``python -m build``: the sdist, then the wheel built from it, as a release would be."""
    pytest.importorskip("build", reason="the build frontend (pip install build) is not installed")
    out = tmp_path_factory.mktemp("dist")
    proc = run(sys.executable, "-m", "build", "--outdir", str(out), REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = sorted(os.listdir(out))
    wheel = next(os.path.join(out, n) for n in names if n.endswith(".whl"))
    sdist = next(os.path.join(out, n) for n in names if n.endswith(".tar.gz"))
    return {"wheel": wheel, "sdist": sdist, "log": proc.stdout + proc.stderr}


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory):
    """A fresh venv with the wheel and no extra: what `pip install flux-copy-offload` gives."""
    where = tmp_path_factory.mktemp("venv")
    venv.create(where, with_pip=True, system_site_packages=False)
    bin_dir = os.path.join(where, "bin")
    proc = run(os.path.join(bin_dir, "python"), "-m", "pip", "install", "--quiet", dist["wheel"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = bin_dir + os.pathsep + "/usr/bin:/bin"
    return {"bin": bin_dir, "env": env}


def test_build_has_no_deprecation_warnings(dist):
    assert not re.search(r"(?i)deprecat", dist["log"]), [
        line for line in dist["log"].splitlines() if re.search(r"(?i)deprecat", line)]


def test_wheel_carries_kit_man_pages_jobtap_and_license(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for path in repo_files("share"):
        assert "copy_offload/" + path in names, path
    for page in MAN_PAGES:  # every page, also where man(1) looks: <prefix>/share/man/man1
        assert any(n.endswith(".data/data/share/man/man1/" + page) for n in names), page
    for path in ("Makefile", "copy-offload.c", "copy-offload-env.c"):
        assert "copy_offload/jobtap/" + path in names, path
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: Apache-2.0" in metadata


def test_sdist_carries_tests_and_their_support(dist):
    with tarfile.open(dist["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for path in repo_files("tests") + repo_files("share") + repo_files("jobtap") + ["LICENSE", "dev.sh"]:
        assert path in names, path


def test_server_scripts_without_the_extra_say_how_to_add_it(installed, tmp_path):
    python = os.path.join(installed["bin"], "python")
    assert run(python, "-c", "import tornado", env=installed["env"]).returncode != 0  # really without it
    for script, args in (("copy-offload-server", ["--help"]), ("copy-offload-admin", ["token-key", "--out", "k"])):
        proc = run(os.path.join(installed["bin"], script), *args, env=installed["env"], cwd=str(tmp_path))
        assert proc.returncode == 2 and not os.listdir(tmp_path), proc
        assert proc.stderr == "%s: needs the server extra (%s not installed); add it with: %s -m pip install " \
            "'flux-copy-offload[server]'\n" % (script, "tornado, jwt, cryptography" if script.endswith("server")
                                               else "jwt, cryptography, kubernetes, yaml", python), proc.stderr
    proc = run(os.path.join(installed["bin"], "copy-offload"), "--help", env=installed["env"])
    assert proc.returncode == 0 and "usage" in proc.stdout  # the client needs no extra


def test_admin_paths_names_the_installed_kit(installed):
    admin = os.path.join(installed["bin"], "copy-offload-admin")
    proc = run(admin, "paths", env=installed["env"])
    assert proc.returncode == 0, proc.stderr
    paths = {what: run(admin, "paths", what, env=installed["env"]).stdout.strip()
             for what in ("man", "share", "jobtap", "flux")}
    prefix = os.path.realpath(os.path.dirname(installed["bin"]))
    for what, path in paths.items():
        assert path.startswith(prefix + os.sep) and path in proc.stdout, (what, path)
    assert paths["man"] == os.path.join(prefix, "share", "man")
    assert sorted(os.listdir(os.path.join(paths["man"], "man1"))) == MAN_PAGES
    for path in repo_files("share"):
        assert os.path.isfile(os.path.join(paths["share"], os.path.relpath(path, "share"))), path
    assert os.path.isfile(os.path.join(paths["flux"], "flux-copy-offload.py"))
    if shutil.which("man"):
        proc = run("man", "-M", paths["man"], "-P", "cat", "copy-offload-admin", env=installed["env"])
        assert proc.returncode == 0 and "paths" in proc.stdout, proc.stderr


def test_jobtap_makefile_builds_from_the_installed_sources(installed, tmp_path):
    admin = os.path.join(installed["bin"], "copy-offload-admin")
    jobtap = run(admin, "paths", "jobtap", env=installed["env"]).stdout.strip()
    flux = run(admin, "paths", "flux", env=installed["env"]).stdout.strip()
    # PKG_CONFIG=true stands in for a flux-core's pkg-config: make plans the whole build and install.
    proc = run("make", "-n", "-C", jobtap, "PKG_CONFIG=true", "BUILD=%s" % tmp_path, "DESTDIR=%s/root" % tmp_path,
               "all", "install", env=installed["env"])
    assert proc.returncode == 0, proc.stderr
    planned = {os.path.normpath(word) for word in proc.stdout.split() if word.startswith("/")}
    for source in (os.path.join(jobtap, "copy-offload.c"), os.path.join(jobtap, "copy-offload-env.c"),
                   os.path.join(flux, "copy-offload.py"), os.path.join(flux, "flux-copy-offload.py")):
        assert source in planned and os.path.isfile(source), (source, proc.stdout)
    # And for real without a flux-core: the Makefile's own one-line message, nothing written beside the sources.
    proc = run("make", "-C", jobtap, "PKG_CONFIG=false", "BUILD=%s" % tmp_path, env=installed["env"])
    assert proc.returncode != 0 and "pkg-config cannot find flux-core" in proc.stderr
    assert sorted(os.listdir(jobtap)) == ["Makefile", "copy-offload-env.c", "copy-offload.c"]


def test_jobtap_plugins_build_and_install_from_the_wheel(installed, tmp_path):
    """With a flux-core that pkg-config finds (PKG_CONFIG_PATH=<flux prefix>/lib/pkgconfig), for real."""
    env = installed["env"]
    found = shutil.which("pkg-config") and run("pkg-config", "--exists", "flux-core", "jansson", env=env).returncode == 0
    if not found:
        pytest.skip("pkg-config finds no flux-core (set PKG_CONFIG_PATH=<flux prefix>/lib/pkgconfig)")
    jobtap = run(os.path.join(installed["bin"], "copy-offload-admin"), "paths", "jobtap", env=env).stdout.strip()
    root = tmp_path / "root"
    proc = run("make", "-C", jobtap, "BUILD=%s" % (tmp_path / "build"), "DESTDIR=%s" % root, "all", "install", env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    installed_files = sorted(os.path.basename(os.path.join(d, n)) for d, _s, names in os.walk(root) for n in names)
    assert installed_files == ["copy-offload-env.so", "copy-offload.py", "copy-offload.so", "flux-copy-offload.py"]


def test_sdist_tests_collect_and_run(dist, tmp_path):
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    with tarfile.open(dist["sdist"]) as sdist:
        sdist.extractall(tmp_path, **safe)
    root = os.path.join(tmp_path, os.path.basename(dist["sdist"])[: -len(".tar.gz")])
    pytest_cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    proc = run(*pytest_cmd, "--collect-only", "tests", cwd=root)
    assert proc.returncode == 0 and not re.search(r"\d+ errors?\b", proc.stdout), proc.stdout[-3000:]
    assert int(re.search(r"^(\d+) tests? collected", proc.stdout, re.M).group(1)) > 100, proc.stdout[-500:]
    proc = run(*pytest_cmd, "tests/test_share.py", "tests/test_server_settings.py", cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:]
