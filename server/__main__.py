"""``copy-offload-server``: parse settings, build the driver, serve until /shutdown or a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from typing import List, Optional

import tornado.netutil
from copy_offload.server import pki, redact
from copy_offload.server.app import make_app
from copy_offload.server.auth import TokenVerifier
from copy_offload.server.connection import GoHTTPServer
from copy_offload.server.drivers.base import Driver
from copy_offload.server.settings import ServerSettings, SettingsError, parse_settings

log = logging.getLogger("copy_offload.server")

SHUTDOWN_DELAY = 1.0  # the reference answers /shutdown, then stops a second later


class StartupError(Exception):
    """The server cannot start; the text says what to fix."""


def tls_context(settings: ServerSettings) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(settings.cert, settings.key)
    except (OSError, ssl.SSLError) as exc:
        raise StartupError("Error loading certificate and key file (%s, %s): %s"
                           % (settings.cert, settings.key, getattr(exc, "strerror", None) or exc)) from None
    return context


def token_verifier(settings: ServerSettings) -> Optional[TokenVerifier]:
    if settings.skip_token:
        return None
    try:
        return TokenVerifier(pki.read_token_key(settings.token_key))
    except OSError as exc:
        raise StartupError("unable to read back the key file %s: %s" % (settings.token_key, exc.strerror)) from None
    except pki.KeyError_ as exc:
        raise StartupError("unable to decode PEM key for token in %s: %s" % (settings.token_key, exc)) from None


async def build_driver(settings: ServerSettings) -> Driver:
    if settings.driver == "mock":
        from copy_offload.server.drivers.mock import MockDriver

        return MockDriver()
    if settings.driver == "local":
        if not settings.allow_roots:
            raise StartupError("the local driver needs at least one --allow-root DIR: "
                               "copies are confined to those directory trees")
        import sqlite3

        from copy_offload.server.local.driver import LocalDriver

        try:
            return LocalDriver(allow_roots=settings.allow_roots, state_dir=settings.state_dir,
                               workers=settings.workers, profiles_file=settings.profiles,
                               node_name=settings.node_name,
                               address="%s:%d" % (settings.host, settings.port))
        except ValueError as exc:  # a bad --profiles file: the text names it and what is wrong
            raise StartupError(str(exc)) from None
        except (OSError, sqlite3.Error) as exc:
            raise StartupError("cannot use the state directory %s: %s"
                               % (settings.state_dir, getattr(exc, "strerror", None) or exc)) from None
    try:
        from copy_offload.server.nnf import driver as nnf
    except ImportError as exc:
        raise StartupError("the nnf driver is not available in this installation: %s" % exc) from None
    missing = nnf.missing_environment()
    if missing:
        raise StartupError(missing)
    try:
        return await nnf.create_nnf_driver(
            workflow_name=settings.workflow_name, workflow_namespace=settings.workflow_namespace,
            node_name=settings.node_name, kubeconfig=settings.kubeconfig,
            nnf_api_version=settings.nnf_api_version, dws_api_version=settings.dws_api_version,
        )
    except nnf.NnfStartupError as exc:
        raise StartupError(str(exc)) from None


async def serve(settings: ServerSettings) -> None:
    context = None if settings.skip_tls else tls_context(settings)
    verifier = token_verifier(settings)
    driver = await build_driver(settings)
    await driver.start()
    stop = asyncio.Event()

    def request_stop() -> None:
        asyncio.get_running_loop().call_later(SHUTDOWN_DELAY, stop.set)

    app = make_app(driver, verifier, request_stop)
    server = GoHTTPServer(app, ssl_options=context, xheaders=False, request_timeout=settings.request_timeout,
                          max_body_size=8 << 20)
    try:
        sockets = tornado.netutil.bind_sockets(settings.port, settings.host or None)
    except OSError as exc:
        raise StartupError("cannot listen on %s:%d: %s" % (settings.host, settings.port, exc.strerror)) from None
    server.add_sockets(sockets)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    bound = sockets[0].getsockname()
    if hasattr(driver, "listening"):  # the local driver names its address in its state-dir lock
        driver.listening("%s:%d" % (bound[0], bound[1]))
    log.info("Ready addr=%s:%d driver=%s tls=%s token=%s", bound[0], bound[1], driver.name,
             "off" if context is None else "on", "off" if verifier is None else "on")
    await stop.wait()
    server.stop()
    await server.close_all_connections()
    await driver.close()
    log.info("the server is closed")


def main(argv: Optional[List[str]] = None) -> int:
    try:
        settings = parse_settings(argv)
    except SettingsError as exc:
        print("copy-offload-server: %s" % exc, file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact.install(logging.getLogger())
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    try:
        asyncio.run(serve(settings))
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
