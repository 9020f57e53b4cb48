"""The layout's promises, read from fresh processes: what each entry point imports."""

from __future__ import annotations

import os
import re
import subprocess
import sys

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
