"""Blocking and asyncio clients over kept-alive connections, sharing ``protocol`` and ``wire``.

    from copy_offload.client import Client, WaitTimeout

    with Client() as client:                 # finds the server as libcopyoffload does
        name = client.copy("/mnt/nnf/out", "/lus/project/out")
        final = client.wait(name)            # long-polls with maxWaitSecs, never busy-polls
        print(final.status, final.message)

The HTTP is our own small stdlib transport (``transport``), so importing the client and saying
hello costs a few tens of milliseconds, not the hundred that httpx's import alone takes.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any, Awaitable, Callable, List, Optional, Set

from copy_offload.client import protocol, wire
from copy_offload.client.discovery import ServerConfig, discover
from copy_offload.client.errors import (
    ConfigurationError,
    ConnectError,
    CopyOffloadError,
    NotFound,
    ServerError,
    Timeout,
    TLSError,
    TransportError,
    Unauthorized,
    WaitTimeout,
)
from copy_offload.client.models import Status
from copy_offload.client.transport import AnswerError, HandshakeTimeout, Pool

DEFAULT_TIMEOUT = 30.0
#: With a progress callback, each wait() round asks the server to hold the answer at most this
#: long (it answers at once on completion), so a progress bar moves about once a second.
WAIT_SLICE = 1
#: What Go's net/http (and our server) answers to plain HTTP on its TLS port.
PLAIN_HTTP_ON_TLS = "Client sent an HTTP request to an HTTPS server."

#: The shortest time between two status requests of one wait(): a server that answers before
#: ``maxWaitSecs`` (the reference mock always does) is polled at most about once a second.
POLL_FLOOR = 1.0
#: What wait() returns for a dry run the server forgot on completion (both mocks do at once).
DRY_RUN_DONE = Status(state=wire.STATE_COMPLETED, status=wire.STATUS_SUCCESS,
                      message="dry run finished (the server no longer lists it)")
NO_TOKEN_HINT = "no token was set: export DW_WORKFLOW_TOKEN, or give --token-file (token= in Python)"


def _ssl_context(config: ServerConfig) -> Optional[ssl.SSLContext]:
    if not config.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError("Unable to load the CA certificate %s: %s (give the server's CA certificate with "
                                 "--ca, ca_file= in Python)" % (config.ca_file, exc)) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def _map_transport(exc: BaseException, config: ServerConfig) -> TransportError:
    """Our exception for a failed exchange, with a text that says what to try next."""
    where = "%s:%d" % (config.host, config.port)
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TLSError("TLS failure with %s: %s; the CA file used was %s (give the server's CA certificate "
                        "with --ca, ca_file= in Python)" % (where, exc.verify_message or text, config.ca_file))
    if isinstance(exc, ssl.SSLError):
        if "WRONG_VERSION_NUMBER" in text or "RECORD_LAYER" in text or "PACKET_LENGTH" in text:
            return TLSError("%s did not answer in TLS: it may be a plain-HTTP server (-skip-tls); then use "
                            "--no-tls (tls=False in Python)" % where)
        return TLSError("TLS failure with %s: %s" % (where, text))
    if isinstance(exc, HandshakeTimeout):
        return Timeout("%s did not answer the TLS handshake: it may be a plain-HTTP server (-skip-tls); then "
                       "use --no-tls (tls=False in Python)" % where)
    if isinstance(exc, socket.timeout):
        return Timeout("Timeout talking to %s: no answer in time" % where)
    if isinstance(exc, AnswerError) or isinstance(exc, ConnectionResetError) and not config.tls:
        hung_up = isinstance(exc, ConnectionResetError) or exc.empty
        hint = "; if the server uses TLS, leave out --no-tls (tls=False in Python)" if hung_up and not config.tls else ""
        return TransportError("No answer from %s: %s%s" % (where, text, hint))
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError("Failed to connect to %s: connection refused (is the server running there?)" % where)
    if isinstance(exc, UnicodeError):
        return ConnectError("Failed to connect to %s: %r is not a valid host name" % (where, config.host))
    if isinstance(exc, socket.gaierror):
        return ConnectError("Failed to connect to %s: the host name does not resolve" % where)
    return ConnectError("Failed to connect to %s: %s" % (where, text))


def _request_copy(config: ServerConfig, source: str, destination: str, **options: Any) -> wire.CopyRequest:
    profile = options.pop("profile", None) or ""
    if options.pop("verify", False):
        if profile and profile != protocol.VERIFY_PROFILE:
            raise ValueError("verify=True picks the %r profile; it cannot be combined with profile %r"
                             % (protocol.VERIFY_PROFILE, profile))
        profile = protocol.VERIFY_PROFILE
    request = wire.CopyRequest(
        computeName=options.pop("compute_name", None) or config.compute_name,
        sourcePath=source,
        destinationPath=destination,
        dmProfile=profile,
        dryrun=bool(options.pop("dryrun", False)),
        dcpOptions=options.pop("dcp_options", ""),
        mpirunOptions=options.pop("mpirun_options", ""),
        logStdout=bool(options.pop("log_stdout", True)),
        storeStdout=bool(options.pop("store_stdout", False)),
        slots=int(options.pop("slots", -1)),
        maxSlots=int(options.pop("max_slots", -1)),
    )
    if options:
        raise TypeError("copy() got unknown options: %s" % ", ".join(sorted(options)))
    return request


class _WaitPlan:
    """When wait() asks next and for how long, on an injectable clock (tests run in no time)."""

    def __init__(self, timeout: Optional[float], with_progress: bool, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.timeout = timeout
        self.deadline = None if timeout is None else clock() + timeout
        self.with_progress = with_progress
        self.started = clock()

    def next_slice(self) -> int:
        """``maxWaitSecs`` for the next request: until completion, the deadline, or a second
        when someone is watching progress."""
        self.started = self.clock()
        slice_ = WAIT_SLICE if self.with_progress else -1
        if self.deadline is not None:
            left = int(max(0.0, self.deadline - self.started))
            slice_ = left if slice_ < 0 else min(slice_, left)
        return slice_

    def expired(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def pause(self) -> float:
        """Seconds to sleep before the next request, so requests are ``POLL_FLOOR`` apart."""
        pause = POLL_FLOOR - (self.clock() - self.started)
        if self.deadline is not None:
            pause = min(pause, self.deadline - self.clock())
        return max(0.0, pause)


class _Base:
    def __init__(self, config: Optional[ServerConfig], timeout: float, clock: Callable[[], float],
                 discover_kw: Any) -> None:
        self.config = config if config is not None else discover(**discover_kw)
        self.timeout = timeout
        self._clock = clock
        token = self.config.token or ""
        if not (token.isascii() and token.isprintable()) or " " in token:
            raise ConfigurationError("The token (DW_WORKFLOW_TOKEN or the token file) holds characters no token "
                                     "has: spaces, line breaks, control or non-ASCII characters")
        self._headers = protocol.headers(self.config.token)
        self._context = _ssl_context(self.config)
        self._dry_runs: Set[str] = set()

    def _read_timeout(self, call: protocol.Call) -> Optional[float]:
        read = self.timeout if call.read_timeout is None else call.read_timeout
        return None if read < 0 else read

    def _interpret(self, call: protocol.Call, status: int, text: str) -> Any:
        if status == 400 and not self.config.tls and text.startswith(PLAIN_HTTP_ON_TLS):
            raise TLSError("%s:%d speaks TLS, not plain HTTP: leave out --no-tls (tls=True in Python)"
                           % (self.config.host, self.config.port))
        try:
            return protocol.interpret(call, status, text)
        except Unauthorized as exc:
            if not self.config.token:
                exc.hint = NO_TOKEN_HINT
            raise

    def _copy_call(self, source: str, destination: str, options: Any) -> protocol.Call:
        return protocol.copy(_request_copy(self.config, source, destination, **options))

    def _note_copy(self, name: str, options: Any) -> str:
        if options.get("dryrun"):
            self._dry_runs.add(name)
        return name

    def _after_status(self, plan: _WaitPlan, name: str, current: Optional[Status],
                      error: Optional[CopyOffloadError], on_progress: Optional[Callable[[Status], None]]) -> Status:
        """One wait() round's outcome: the status to go on with, or the exception to raise."""
        if error is not None:
            if not (isinstance(error, NotFound) and name in self._dry_runs):
                raise error
            current = DRY_RUN_DONE
        assert current is not None
        if on_progress:
            on_progress(current)
        if not current.done and plan.expired():
            raise WaitTimeout(name, current, plan.timeout or 0.0)
        return current


class Client(_Base):
    """A blocking client. Keyword arguments other than these go to :func:`discover`.

    ``clock`` and ``sleep`` are what wait() measures and pauses with (``time.monotonic`` and
    ``time.sleep``); a test can pass a fake pair and wait through minutes in no time.
    """

    def __init__(self, config: Optional[ServerConfig] = None, *, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 **discover_kw: Any) -> None:
        super().__init__(config, timeout, clock, discover_kw)
        self._sleep = sleep
        self._pool = Pool(self.config.host, self.config.port, self._context, timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._pool.close()

    def _do(self, call: protocol.Call) -> Any:
        try:
            answer = self._pool.request(call.method, call.path, self._headers, call.body, self._read_timeout(call))
        except (AnswerError, OSError, UnicodeError) as exc:
            raise _map_transport(exc, self.config) from exc
        return self._interpret(call, answer.status, answer.text)

    def hello(self) -> str:
        return self._do(protocol.hello())

    def copy(self, source: str, destination: str, **options: Any) -> str:
        """Start a copy and return its request name. Options: profile, verify (the server's
        checksumming ``verify`` profile), slots, max_slots, dryrun, dcp_options, mpirun_options,
        log_stdout, store_stdout, compute_name."""
        return self._note_copy(self._do(self._copy_call(source, destination, options)), options)

    def list(self) -> List[str]:
        return self._do(protocol.list_requests())

    def status(self, name: str, max_wait_secs: int = 0) -> Status:
        return self._do(protocol.status(name, max_wait_secs, self.timeout))

    def wait(self, name: str, timeout: Optional[float] = None,
             on_progress: Optional[Callable[[Status], None]] = None) -> Status:
        """Wait until ``name`` completes and return its final status; raise :class:`WaitTimeout`
        (carrying the last status) if ``timeout`` seconds pass first. At most about one request
        a second, whatever the server does."""
        plan = _WaitPlan(timeout, on_progress is not None, self._clock)
        while True:
            current = error = None
            try:
                current = self.status(name, plan.next_slice())
            except ServerError as exc:
                error = exc
            current = self._after_status(plan, name, current, error, on_progress)
            if current.done:
                return current
            self._sleep(plan.pause())

    def cancel(self, name: str) -> None:
        self._do(protocol.cancel(name))

    def shutdown(self) -> str:
        return self._do(protocol.shutdown())


class AsyncClient(_Base):
    """The asyncio twin of :class:`Client`, with the same methods as coroutines
    (``sleep`` defaults to ``asyncio.sleep``)."""

    def __init__(self, config: Optional[ServerConfig] = None, *, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Optional[Callable[[float], Awaitable[Any]]] = None, **discover_kw: Any) -> None:
        import asyncio

        from copy_offload.client.transport_async import AsyncPool

        super().__init__(config, timeout, clock, discover_kw)
        self._sleep = sleep or asyncio.sleep
        self._pool = AsyncPool(self.config.host, self.config.port, self._context, timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def _do(self, call: protocol.Call) -> Any:
        try:
            answer = await self._pool.request(call.method, call.path, self._headers, call.body,
                                              self._read_timeout(call))
        except (AnswerError, OSError, UnicodeError) as exc:
            raise _map_transport(exc, self.config) from exc
        return self._interpret(call, answer.status, answer.text)

    async def hello(self) -> str:
        return await self._do(protocol.hello())

    async def copy(self, source: str, destination: str, **options: Any) -> str:
        return self._note_copy(await self._do(self._copy_call(source, destination, options)), options)

    async def list(self) -> List[str]:
        return await self._do(protocol.list_requests())

    async def status(self, name: str, max_wait_secs: int = 0) -> Status:
        return await self._do(protocol.status(name, max_wait_secs, self.timeout))

    async def wait(self, name: str, timeout: Optional[float] = None,
                   on_progress: Optional[Callable[[Status], None]] = None) -> Status:
        plan = _WaitPlan(timeout, on_progress is not None, self._clock)
        while True:
            current = error = None
            try:
                current = await self.status(name, plan.next_slice())
            except ServerError as exc:
                error = exc
            current = self._after_status(plan, name, current, error, on_progress)
            if current.done:
                return current
            await self._sleep(plan.pause())

    async def cancel(self, name: str) -> None:
        await self._do(protocol.cancel(name))

    async def shutdown(self) -> str:
        return await self._do(protocol.shutdown())

