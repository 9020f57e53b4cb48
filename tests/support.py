"""Real parts for tests: TLS material and tokens made by our pki, server processes on loopback."""

from __future__ import annotations

import os
import queue
import re
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from copy_offload.server import pki

HOST = "127.0.0.1"
READY = re.compile(r"Ready addr=([^ ]+):(\d+)")


@dataclass
class Material:
    """Certificate, key, token key and token in a directory, as a site would have them."""

    directory: str

    def __post_init__(self) -> None:
        cert, key = pki.generate_tls(["localhost", HOST])
        self.cert = os.path.join(self.directory, "tls.crt")
        self.key = os.path.join(self.directory, "tls.key")
        self.token_key = os.path.join(self.directory, "token.key")
        self.token_file = os.path.join(self.directory, "token")
        pki.write_public(self.cert, cert)
        pki.write_secret(self.key, key)
        key_pem = pki.generate_token_key_pem()
        pki.write_secret(self.token_key, key_pem)
        self.token = pki.mint_token(pki.pem_der(key_pem))
        pki.write_secret(self.token_file, self.token.encode())

    def context(self) -> ssl.SSLContext:
        """A client TLS context trusting this material's certificate."""
        return ssl.create_default_context(cafile=self.cert)


@dataclass
class ServerProcess:
    """A ``copy-offload-server`` subprocess; its stderr is kept in ``log``."""

    args: List[str]
    env: Dict[str, str]
    tls: bool
    material: Material
    process: Optional[subprocess.Popen] = None
    port: int = 0
    log_lines: List[str] = field(default_factory=list)
    command: Optional[List[str]] = None  # what runs the server (default: this Python's copy_offload.server)

    def start(self, timeout: float = 20.0) -> ServerProcess:
        command = self.command or [sys.executable, "-m", "copy_offload.server"]
        self.process = subprocess.Popen(
            [*command, "-addr", "%s:0" % HOST, *self.args],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert self.process is not None and self.process.stderr is not None
            for line in self.process.stderr:
                self.log_lines.append(line)
                lines.put(line)
            lines.put("")

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            match = READY.search(line)
            if match:
                self.port = int(match.group(2))
                return self
            if line == "":
                break
        self.stop()
        raise RuntimeError("server did not start:\n" + self.log)

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    @property
    def url(self) -> str:
        return "%s://%s:%d" % ("https" if self.tls else "http", HOST, self.port)

    def client_env(self, token: bool = True) -> Dict[str, str]:
        """The environment a compute node's job would have to reach this server."""
        env = {k: v for k, v in os.environ.items() if k not in ("DW_WORKFLOW_TOKEN",)}
        env.update(NNF_CONTAINER_LAUNCHER=HOST, NNF_CONTAINER_PORTS=str(self.port))
        if token:
            env["DW_WORKFLOW_TOKEN"] = self.material.token
        return env

    def client_kwargs(self, token: bool = True) -> Dict[str, object]:
        return dict(host=HOST, port=self.port, tls=self.tls, ca_file=self.material.cert if self.tls else None,
                    token=self.material.token if token else None, env={})

    def wait(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> Optional[int]:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._pump.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return self.process.returncode


def command_lines() -> Iterator[Tuple[int, List[bytes]]]:
    """(pid, argv) of every live process whose command line can be read (Linux /proc)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                yield int(entry), handle.read().split(b"\0")
        except OSError:
            continue


def server_args(material: Material, *, tls: bool = True, token: bool = True, extra: Sequence[str] = ()) -> List[str]:
    args: List[str] = []
    if tls:
        args += ["-cert", material.cert, "-cakey", material.key]
    else:
        args.append("-skip-tls")
    if token:
        args += ["-tokenkey", material.token_key]
    else:
        args.append("-skip-token")
    return args + list(extra)


def run_tool(module: str, args: Sequence[str], env: Dict[str, str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def client_failure_cases(server: ServerProcess, tmp_path) -> tuple:
    """Failures on the client's side and the reference C tester's stderr for each: CA file
    missing, a directory, the wrong CA; a token file missing or a directory; a server that
    resets the connection (TLS and plain). Returns (the resetting listener, [(args, env, stderr)])."""
    import socket
    import struct

    os.makedirs(os.path.join(str(tmp_path), "other"), exist_ok=True)
    other = Material(os.path.join(str(tmp_path), "other"))
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(8)

    def reset_all() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(16)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    threading.Thread(target=reset_all, daemon=True).start()
    env = server.client_env()
    reset_env = dict(env, NNF_CONTAINER_PORTS=str(listener.getsockname()[1]))
    cert, missing, directory = server.material.cert, os.path.join(str(tmp_path), "missing"), str(tmp_path)
    reset = "libcurl: (%d) Recv failure: Connection reset by peer\n\n"
    return listener, [
        (["-x", missing, "-H"], env, "libcurl: (77) error setting certificate file: %s\n\n" % missing),
        (["-x", directory, "-H"], env, "libcurl: (77) error setting certificate file: %s\n\n" % directory),
        (["-x", other.cert, "-H"], env, "libcurl: (60) SSL certificate problem: self-signed certificate\n\n"),
        (["-x", cert, "-t", missing, "-H"], env, "Unable to stat %s: errno 2\n\n" % missing),
        (["-x", cert, "-t", directory, "-H"], env,
         "Incomplete read of %s. Wanted %d, got 0\n\n" % (directory, os.stat(directory).st_size)),
        (["-x", cert, "-H"], reset_env, reset % 35),
        (["-s", "-H"], reset_env, reset % 56),
    ]


async def status_doc(driver, name: str, max_wait_secs: int) -> Dict[str, object]:
    """A driver's status for ``name`` as the server answers it: the wire's status JSON."""
    from copy_offload.client import wire

    return wire.status_document(await driver.status(name, max_wait_secs))
