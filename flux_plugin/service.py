"""The copy-offload service as a standalone process, for systemd or for Flux older than 0.84.

Run as the instance owner (the ``flux`` user on a system instance)::

    flux python -m copy_offload.flux.service [-v]

It registers the ``copy-offload`` service itself, so it must not run while the broker module
is loaded (registration then fails, exit code 2). Config comes from the broker's
``[copy-offload]`` table through a streaming ``config.get``, so ``flux config reload`` reaches
it too; an invalid table is logged and the old settings stay. Exit codes: 0 stopped, 1 failed
while running, 2 cannot register the service, 3 invalid configuration at startup.
"""

from __future__ import annotations

import argparse
import signal
import sys
import syslog
from typing import Any, List, Optional

from copy_offload.flux.config import ConfigError, parse_config
from copy_offload.flux.frontend import SERVICE

EXIT_RUNTIME, EXIT_REGISTER, EXIT_CONFIG = 1, 2, 3


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="flux python -m copy_offload.flux.service",
                                description="Hand Flux jobs their DW_WORKFLOW_TOKEN "
                                "(the copy-offload service, standalone)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    args = _parse_args(argv)
    import flux
    from copy_offload.flux.frontend import Frontend
    from flux.constants import (
        FLUX_MSGTYPE_REQUEST,
        FLUX_ROLE_OWNER,
        FLUX_ROLE_USER,
        FLUX_RPC_STREAMING,
    )

    h = flux.Flux()
    threshold = syslog.LOG_DEBUG if args.verbose else syslog.LOG_INFO

    def log(level: int, text: str) -> None:
        if level <= threshold:
            h.log(level, f"{SERVICE}: {text}")
            print(f"{SERVICE}: {text}", file=sys.stderr, flush=True)

    try:
        cfg = parse_config(h.conf_get(update=True))
    except ConfigError as exc:
        log(syslog.LOG_ERR, str(exc))
        return EXIT_CONFIG
    try:
        h.service_register(SERVICE).get()
    except OSError as exc:
        log(syslog.LOG_ERR, f"cannot register the {SERVICE} service ({exc}); is the "
            "copy-offload broker module loaded, or another copy running?")
        return EXIT_REGISTER

    def on_signal(_h: Any, _w: Any, _signum: int, _args: Any) -> None:
        h.reactor_stop()

    # Before any helper thread exists: the reactor takes these signals (it may block them to
    # read them from a signalfd), and threads started later inherit that signal mask.
    sigs = [h.signal_watcher_create(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)]
    for s in sigs:
        s.start()
    front = Frontend(h, cfg, log)
    watchers: List[Any] = []
    for method, fn in (("prepare", front.prepare), ("forget", front.forget),
                       ("env", front.env), ("stats", front.stats)):
        w = h.msg_watcher_create(lambda _h, _t, msg, _a, fn=fn: fn(msg), FLUX_MSGTYPE_REQUEST,
                                 f"{SERVICE}.{method}",
                                 rolemask=FLUX_ROLE_OWNER | FLUX_ROLE_USER)
        w.start()
        watchers.append(w)

    first = [True]

    def on_config(future: Any) -> None:
        try:
            conf = future.get()
        except OSError as exc:
            log(syslog.LOG_ERR, f"config.get stream ended: {exc}")
            return
        finally:
            future.reset()
        if first[0]:
            first[0] = False  # the first answer is the config we started with
            return
        error = front.reload(conf)
        if error is not None:
            log(syslog.LOG_ERR, f"new configuration ignored: {error}")

    config_stream = h.rpc("config.get", flags=FLUX_RPC_STREAMING)  # keep a reference
    config_stream.then(on_config)

    log(syslog.LOG_INFO, "started (standalone)")
    rc = 0
    try:
        if h.reactor_run() < 0:
            rc = EXIT_RUNTIME
    except KeyboardInterrupt:
        rc = 0
    except Exception as exc:
        log(syslog.LOG_ERR, f"stopped by an error: {type(exc).__name__}: {exc}")
        rc = EXIT_RUNTIME
    finally:
        front.close()
        for w in watchers + sigs:
            w.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
