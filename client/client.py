"""Blocking and asyncio clients over one connection each, sharing ``protocol`` and ``wire``.

    from copy_offload.client import Client

    with Client() as client:                 # finds the server as libcopyoffload does
        name = client.copy("/mnt/nnf/out", "/lus/project/out")
        final = client.wait(name)            # long-polls with maxWaitSecs, no busy polling
        print(final.status, final.message)
"""

from __future__ import annotations

import ssl
import time
from typing import Any, Callable, List, Optional

import httpx
from copy_offload.client import protocol, wire
from copy_offload.client.discovery import ServerConfig, discover
from copy_offload.client.errors import (
    ConfigurationError,
    ConnectError,
    Timeout,
    TLSError,
    TransportError,
)
from copy_offload.client.models import Status

DEFAULT_TIMEOUT = 30.0
#: With a progress callback, each wait() round asks the server to hold the answer at most this
#: long (it answers at once on completion), so a progress bar moves about once a second.
WAIT_SLICE = 1


def _ssl_context(config: ServerConfig) -> Any:
    if not config.tls:
        return False
    try:
        context = ssl.create_default_context(cafile=config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError("Unable to load the CA certificate %s: %s" % (config.ca_file, exc)) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def _map_transport(exc: Exception, config: ServerConfig) -> TransportError:
    where = "%s:%d" % (config.host, config.port)
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return Timeout("Timeout talking to %s: %s" % (where, text))
    if isinstance(exc, ssl.SSLError) or "SSL" in text or "CERTIFICATE" in text.upper():
        return TLSError("TLS failure with %s: %s" % (where, text))
    if isinstance(exc, (httpx.ConnectError, OSError)):
        return ConnectError("Failed to connect to %s: %s" % (where, text))
    return TransportError("No answer from %s: %s" % (where, text))


def _request_copy(config: ServerConfig, source: str, destination: str, **options: Any) -> wire.CopyRequest:
    return wire.CopyRequest(
        computeName=options.pop("compute_name", None) or config.compute_name,
        sourcePath=source,
        destinationPath=destination,
        dmProfile=options.pop("profile", None) or "",
        dryrun=bool(options.pop("dryrun", False)),
        dcpOptions=options.pop("dcp_options", ""),
        mpirunOptions=options.pop("mpirun_options", ""),
        logStdout=bool(options.pop("log_stdout", True)),
        storeStdout=bool(options.pop("store_stdout", False)),
        slots=int(options.pop("slots", -1)),
        maxSlots=int(options.pop("max_slots", -1)),
    )


def _wait_slice(deadline: Optional[float], with_progress: bool) -> int:
    """``maxWaitSecs`` for the next round of wait(): until completion, the deadline, or a second
    when someone is watching progress."""
    slice_ = WAIT_SLICE if with_progress else -1
    if deadline is not None:
        left = int(max(0, deadline - time.monotonic()))
        slice_ = left if slice_ < 0 else min(slice_, left)
    return slice_


def _wait_over(current: Status, deadline: Optional[float]) -> bool:
    return current.done or (deadline is not None and time.monotonic() >= deadline)


class _Base:
    def __init__(self, config: Optional[ServerConfig] = None, *, timeout: float = DEFAULT_TIMEOUT, **discover_kw: Any):
        self.config = config if config is not None else discover(**discover_kw)
        self.timeout = timeout
        self._headers = protocol.headers(self.config.token)

    def _timeout(self, call: protocol.Call) -> httpx.Timeout:
        read = call.read_timeout
        if read is None:
            read = self.timeout
        return httpx.Timeout(self.timeout, read=None if read < 0 else read)


class Client(_Base):
    """A blocking client. Keyword arguments other than ``config``/``timeout`` go to :func:`discover`."""

    def __init__(self, config: Optional[ServerConfig] = None, *, timeout: float = DEFAULT_TIMEOUT,
                 transport: Optional[httpx.BaseTransport] = None, **discover_kw: Any) -> None:
        super().__init__(config, timeout=timeout, **discover_kw)
        self._http = httpx.Client(base_url=self.config.base_url, headers=self._headers,
                                  verify=_ssl_context(self.config), transport=transport, trust_env=False)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _do(self, call: protocol.Call) -> Any:
        try:
            response = self._http.request(call.method, call.path, content=call.body, timeout=self._timeout(call))
        except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
            raise _map_transport(exc, self.config) from exc
        return protocol.interpret(call, response.status_code, response.text)

    def hello(self) -> str:
        return self._do(protocol.hello())

    def copy(self, source: str, destination: str, **options: Any) -> str:
        """Start a copy and return its request name. Options: profile, slots, max_slots, dryrun,
        dcp_options, mpirun_options, log_stdout, store_stdout, compute_name."""
        return self._do(protocol.copy(_request_copy(self.config, source, destination, **options)))

    def list(self) -> List[str]:
        return self._do(protocol.list_requests())

    def status(self, name: str, max_wait_secs: int = 0) -> Status:
        return self._do(protocol.status(name, max_wait_secs, self.timeout))

    def wait(self, name: str, timeout: Optional[float] = None,
             on_progress: Optional[Callable[[Status], None]] = None) -> Status:
        """Wait until ``name`` completes (or ``timeout`` seconds pass) and return its last status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = self.status(name, _wait_slice(deadline, on_progress is not None))
            if on_progress:
                on_progress(current)
            if _wait_over(current, deadline):
                return current

    def cancel(self, name: str) -> None:
        self._do(protocol.cancel(name))

    def shutdown(self) -> str:
        return self._do(protocol.shutdown())


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client`, with the same methods as coroutines."""

    def __init__(self, config: Optional[ServerConfig] = None, *, timeout: float = DEFAULT_TIMEOUT,
                 transport: Optional[httpx.AsyncBaseTransport] = None, **discover_kw: Any) -> None:
        super().__init__(config, timeout=timeout, **discover_kw)
        self._http = httpx.AsyncClient(base_url=self.config.base_url, headers=self._headers,
                                       verify=_ssl_context(self.config), transport=transport, trust_env=False)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _do(self, call: protocol.Call) -> Any:
        try:
            response = await self._http.request(call.method, call.path, content=call.body,
                                                timeout=self._timeout(call))
        except (httpx.HTTPError, OSError, ssl.SSLError) as exc:
            raise _map_transport(exc, self.config) from exc
        return protocol.interpret(call, response.status_code, response.text)

    async def hello(self) -> str:
        return await self._do(protocol.hello())

    async def copy(self, source: str, destination: str, **options: Any) -> str:
        return await self._do(protocol.copy(_request_copy(self.config, source, destination, **options)))

    async def list(self) -> List[str]:
        return await self._do(protocol.list_requests())

    async def status(self, name: str, max_wait_secs: int = 0) -> Status:
        return await self._do(protocol.status(name, max_wait_secs, self.timeout))

    async def wait(self, name: str, timeout: Optional[float] = None,
                   on_progress: Optional[Callable[[Status], None]] = None) -> Status:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = await self.status(name, _wait_slice(deadline, on_progress is not None))
            if on_progress:
                on_progress(current)
            if _wait_over(current, deadline):
                return current

    async def cancel(self, name: str) -> None:
        await self._do(protocol.cancel(name))

    async def shutdown(self) -> str:
        return await self._do(protocol.shutdown())
