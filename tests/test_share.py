"""The site files in share/: they parse, they say what the deployment needs, they match the tools.

The container profile is checked against what NNF does to it (Kubernetes ``$(VAR)`` expansion
with the pod's variables) and then fed to the server's own settings parser, so a flag renamed
in the server breaks this test, not a site's first job.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from copy_offload.server import admin
from copy_offload.server.settings import parse_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9 and 3.10 have no tomllib
    tomllib = None

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARE = os.path.join(REPO, "share")
PROFILE = os.path.join(SHARE, "nnf", "copy-offload-profile.yaml")
CONTAINERFILE = os.path.join(SHARE, "container", "Containerfile")

# What nnf-sos sets in the copy-offload launcher.
POD_ENV = {
    "TLS_CERT_PATH": "/etc/usercontainer-tls/tls.crt",
    "TLS_KEY_PATH": "/etc/usercontainer-tls/tls.key",
    "TOKEN_KEY_PATH": "/etc/usercontainer-token/token.key",
    "NNF_CONTAINER_PORTS": "5000",
    "DW_WORKFLOW_NAME": "fluxjob-1234",
    "DW_WORKFLOW_NAMESPACE": "default",
    "NNF_NODE_NAME": "rabbit-01",
    "ENVIRONMENT": "production",
}


def share_files(*suffixes: str) -> list:
    found = []
    for root, _dirs, files in os.walk(SHARE):
        for name in files:
            if name.endswith(suffixes):
                found.append(os.path.join(root, name))
    return sorted(found)


def expand(text: str, env: dict) -> str:
    """Kubernetes' $(VAR) expansion in container command/args ($$ escapes, unknown stays)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


# --------------------------------------------------------------------------- every file parses


def test_every_yaml_in_share_parses():
    files = share_files(".yaml", ".yml")
    assert PROFILE in files
    for path in files:
        with open(path, encoding="utf-8") as handle:
            docs = [doc for doc in yaml.safe_load_all(handle) if doc is not None]
        assert docs, path
        for doc in docs:
            assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), path


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python 3.11")
def test_every_toml_in_share_parses():
    for path in share_files(".toml"):
        with open(path, "rb") as handle:
            assert isinstance(tomllib.load(handle), dict), path


def test_share_readme_indexes_every_folder_and_my_files():
    with open(os.path.join(SHARE, "README.md"), encoding="utf-8") as handle:
        index = handle.read()
    for entry in sorted(os.listdir(SHARE)):
        if os.path.isdir(os.path.join(SHARE, entry)):
            assert "`%s/" % entry in index, entry
    for folder in ("container", "nnf", "man", "man/man1"):
        for name in os.listdir(os.path.join(SHARE, folder)):
            assert "%s/%s" % (folder, name) in index, name


def test_man_pages_live_in_man1():
    """Package data and data-files install share/man/man1/*.1; a page elsewhere would be left out."""
    misplaced = [page for page in MAN_PAGES if os.path.dirname(page) != os.path.join(SHARE, "man", "man1")]
    assert MAN_PAGES and not misplaced, "move these manual pages to share/man/man1/: %s" % misplaced


# --------------------------------------------------------------------------- the container profile


@pytest.fixture(scope="module")
def profile():
    with open(PROFILE, encoding="utf-8") as handle:
        docs = [doc for doc in yaml.safe_load_all(handle) if doc]
    assert len(docs) == 1
    return docs[0]


def test_profile_shape_matches_copy_offload_default(profile):
    assert profile["apiVersion"] == "nnf.cray.hpe.com/v1alpha11"
    assert profile["kind"] == "NnfContainerProfile"
    assert profile["metadata"] == {"name": "copy-offload-default", "namespace": "nnf-system"}
    data = profile["data"]
    assert data["numPorts"] == 1
    assert "spec" not in data  # exactly one of spec / mpiSpec
    mpi = data["mpiSpec"]
    assert mpi["copyOffload"] is True
    assert len(mpi["launcher"]["containers"]) == 1 and len(mpi["worker"]["containers"]) >= 1
    launcher = mpi["launcher"]["containers"][0]
    # nnf-sos's webhook: a launcher container named like copy-offload needs copyOffload: true.
    assert re.search(r"(?i)\bcopy[- ]?offload\b", launcher["name"])
    for container in mpi["launcher"]["containers"] + mpi["worker"]["containers"]:
        assert container["name"] and container["image"]
    for storage in data["storages"]:
        assert re.fullmatch(r"DW_(JOB|PERSISTENT|GLOBAL)_\w+", storage["name"])
    assert isinstance(data["retryLimit"], int) and data["retryLimit"] >= 0


def test_profile_runs_the_server_with_the_pod_variables(profile):
    launcher = profile["data"]["mpiSpec"]["launcher"]["containers"][0]
    command = launcher["command"]
    assert command == [
        "copy-offload-server", "--driver", "nnf",
        "--cert", "$(TLS_CERT_PATH)", "--cakey", "$(TLS_KEY_PATH)", "--tokenkey", "$(TOKEN_KEY_PATH)",
        "-addr", ":$(NNF_CONTAINER_PORTS)",
    ]
    used = set(re.findall(r"\$\((\w+)\)", " ".join(command)))
    assert used == {"TLS_CERT_PATH", "TLS_KEY_PATH", "TOKEN_KEY_PATH", "NNF_CONTAINER_PORTS"}
    argv = [expand(arg, POD_ENV) for arg in command]
    assert "$(" not in " ".join(argv)
    settings = parse_settings(argv[1:], env=POD_ENV)  # the server's own parser
    assert settings.driver == "nnf"
    assert (settings.cert, settings.key, settings.token_key) == (
        POD_ENV["TLS_CERT_PATH"], POD_ENV["TLS_KEY_PATH"], POD_ENV["TOKEN_KEY_PATH"],
    )
    assert (settings.host, settings.port) == ("", 5000)
    assert not settings.skip_tls and not settings.skip_token
    assert (settings.workflow_name, settings.workflow_namespace) == ("fluxjob-1234", "default")


def test_profile_env_values_are_strings(profile):
    for container in profile["data"]["mpiSpec"]["launcher"]["containers"]:
        for item in container.get("env", []):
            assert isinstance(item["value"], str), item  # Kubernetes rejects numbers here


# --------------------------------------------------------------------------- the container image


def test_containerfile_builds_the_server_image():
    with open(CONTAINERFILE, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
    text = "\n".join(lines)
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert froms and all(f == "${PYTHON_IMAGE}" for f in froms)
    assert re.search(r"^ARG PYTHON_IMAGE=\S*python:3\.(9|1[0-9])\S*-slim$", text, re.M)
    assert '"flux-copy-offload[server]"' in text or ".[server]" in text
    # Only `python3` and its venv module are asked of the base (a Debian base has no `python`).
    assert not re.search(r"(^|[\s&;])python\s", text, re.M)
    assert "ENV PATH=/opt/copy-offload/bin:$PATH" in text
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert lines[-2:] == ['ENTRYPOINT ["copy-offload-server"]', 'CMD ["--help"]']
    for line in lines:  # every COPY from the build context names something in the repository
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert os.path.exists(os.path.join(REPO, source)), source


def test_dockerignore_keeps_the_package_sources():
    with open(CONTAINERFILE + ".dockerignore", encoding="utf-8") as handle:
        rules = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"
    with open(CONTAINERFILE, encoding="utf-8") as handle:
        copied = {source.rstrip("/") + ("/" if os.path.isdir(os.path.join(REPO, source)) else "")
                  for line in handle if line.startswith("COPY ") and "--from=" not in line
                  for source in line.split()[1:-1]}
    assert {"pyproject.toml", "client/", "server/", "share/", "jobtap/", "LICENSE"} <= copied
    for needed in copied:  # everything the Containerfile copies passes the filter
        assert "!" + needed in rules, needed


# --------------------------------------------------------------------------- manual pages


MAN_PAGES = sorted(share_files(".1"))


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
@pytest.mark.parametrize("page", MAN_PAGES, ids=os.path.basename)
def test_man_page_renders_without_warnings(page):
    proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", page], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def _long_options(parser) -> set:
    options = set()
    for action in parser._actions:
        options.update(o for o in action.option_strings if o.startswith("-") and o not in ("-h", "--help"))
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict):  # subparsers
            for sub in choices.values():
                options.update(_long_options(sub))
    return options


def _man_text(name: str) -> str:
    with open(os.path.join(SHARE, "man", "man1", name), encoding="utf-8") as handle:
        return handle.read().replace("\\-", "-")


def test_admin_man_page_covers_every_command_and_option():
    text = _man_text("copy-offload-admin.1")
    parser = admin.build_parser()
    commands = next(a for a in parser._actions if isinstance(getattr(a, "choices", None), dict)).choices
    for command in commands:
        assert re.search(r"^\.B(?:R)? copy-offload-admin %s\b|^\.B %s$" % (command, command), text, re.M), command
    for option in _long_options(parser):
        assert option in text, option


def test_server_man_page_covers_every_option():
    from copy_offload.server.settings import _parser

    text = _man_text("copy-offload-server.1")
    for action in _parser()._actions:
        if "--help" in action.option_strings:
            continue
        assert any(option in text for option in action.option_strings), action.option_strings
