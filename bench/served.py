"""The engine as a user meets it: a real copy-offload-server (local driver, TLS, token) on
loopback, driven by the project's client library in this process (copy, then wait).

Shared by bench_copy.py and bench_scale.py, so both time the same path: the request over
HTTPS, the driver's bookkeeping, the engine and its worker processes, and the status long-poll
that reports completion. The interpreter start-up of a CLI is not counted.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from copy_offload.client import Client  # noqa: E402
from copy_offload.client.discovery import ServerConfig  # noqa: E402
from support import HOST, Material, ServerProcess, server_args  # noqa: E402


class ServedEngine:
    """One server allowed over ``roots``; ``copy()`` returns the seconds a copy took, end to end."""

    def __init__(self, roots: Sequence[str], workers: int = 0, env: Optional[Dict[str, str]] = None) -> None:
        self.workdir = tempfile.mkdtemp(prefix="bench-served-")
        material_dir = os.path.join(self.workdir, "material")
        os.mkdir(material_dir)
        self.material = Material(material_dir)
        extra = ["--driver", "local", "--state-dir", os.path.join(self.workdir, "state")]
        for root in roots:
            extra += ["--allow-root", root]
        if workers:
            extra += ["--workers", str(workers)]
        args = server_args(self.material, extra=extra)
        self.server = ServerProcess(args=args, env=dict(env or os.environ), tls=True, material=self.material).start()
        config = ServerConfig(host=HOST, port=self.server.port, token=self.material.token,
                              ca_file=self.material.cert, tls=True, compute_name="bench")
        self.client = Client(config, timeout=3600.0)
        self.client.hello()  # the TLS connection is up before the first timed copy

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def copy(self, source: str, destination: str, **options: object) -> float:
        start = time.perf_counter()
        name = self.client.copy(source, destination, **options)
        status = self.client.wait(name)
        elapsed = time.perf_counter() - start
        if not status.ok:
            raise SystemExit("server copy %s -> %s: %s %s: %s" % (source, destination, status.state,
                                                                  status.status, status.message))
        return elapsed

    def processes(self) -> List[int]:
        """The server and its descendants (the engine's worker processes) now."""
        family = [self.pid]
        for pid in family:
            try:
                with open("/proc/%d/task/%d/children" % (pid, pid)) as handle:
                    family.extend(int(child) for child in handle.read().split())
            except OSError:
                continue
        return family

    def stop(self) -> None:
        self.client.close()
        self.server.stop()
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)
