"""The copy-offload service as a standalone process, for systemd or for Flux older than 0.84.

Run as the instance owner (the ``flux`` user on a system instance)::

    flux python -m copy_offload.flux.service [-v]

It registers the ``copy-offload`` service itself, so it must not run while the broker module
is loaded (registration then fails, exit code 2). Config comes from the broker's
``[copy-offload]`` table through a streaming ``config.get``, so ``flux config reload`` reaches
it too; an invalid table is logged and the old settings stay. When the broker restarts, the
service reconnects (for ``--reconnect-for`` seconds, default 600) and serves again. Exit
codes: 0 stopped, 1 failed while running (or the broker did not come back), 2 cannot register
the service, 3 invalid configuration at startup.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import syslog
import time
from typing import Any, Callable, List, Optional, Tuple

from copy_offload.flux.config import ConfigError, parse_config
from copy_offload.flux.frontend import SERVICE

EXIT_RUNTIME, EXIT_REGISTER, EXIT_CONFIG = 1, 2, 3


def _parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="flux python -m copy_offload.flux.service",
                                description="Hand Flux jobs their DW_WORKFLOW_TOKEN "
                                "(the copy-offload service, standalone)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    p.add_argument("--reconnect-for", type=float, default=600.0, metavar="SECONDS",
                   help="after losing the broker, try to reconnect for this long before "
                   "exiting with 1 (default 600; 0: exit at once)")
    return p.parse_args(argv)


class _Stopped(Exception):
    """SIGTERM or SIGINT while no reactor was running."""


def _stop_on_signals() -> None:
    """Between two connections no reactor takes SIGTERM/SIGINT: make them raise _Stopped, so
    ``systemctl stop`` during a reconnect is a clean exit (0), not a kill. The next reactor's
    signal watchers take the signals over again."""
    def stop(_signum: int, _frame: Any) -> None:
        raise _Stopped()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, stop)


def _connect(log_stderr: Callable[[str], None], give_up_after: float,
             first_wait: float = 0.0) -> Any:
    """A new broker handle; after a broker restart, retried (1 s doubling to 10 s) until
    ``give_up_after`` seconds pass. Returns None when it gave up. ``first_wait``: seconds to
    wait before the first try (when the last connection did not last)."""
    import flux

    deadline = time.monotonic() + give_up_after
    delay = 1.0
    time.sleep(first_wait)
    while True:
        try:
            return flux.Flux()
        except OSError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                log_stderr(f"cannot reconnect to the broker: {exc}; giving up")
                return None
            time.sleep(min(delay, left))
            delay = min(delay * 2, 10.0)


def main(argv: Optional[List[str]] = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code.

    When the broker goes away (a restart), the handle, the request handlers and the
    Kubernetes watch are torn down and built again on a new connection: the service comes
    back with the broker without systemd having to restart it.
    """
    args = _parse_args(argv)
    import flux

    def log_stderr(text: str) -> None:
        print(f"{SERVICE}: {text}", file=sys.stderr, flush=True)

    h = flux.Flux()
    first_wait = 0.0
    try:
        while True:
            t_start = time.monotonic()
            rc, lost = _serve(h, args.verbose)
            if not lost:
                return rc
            _stop_on_signals()
            del h
            # A connection that fails at once (a broker on its way down) is not retried in
            # a tight loop: wait 1 s doubling to 10 s while that goes on.
            lasted = time.monotonic() - t_start > 10.0
            first_wait = 0.0 if lasted else min(max(first_wait * 2, 1.0), 10.0)
            log_stderr("lost the connection to the broker (restarted?); reconnecting")
            h = _connect(log_stderr, args.reconnect_for, first_wait)
            if h is None:
                return EXIT_RUNTIME
            log_stderr("reconnected to the broker")
    except _Stopped:
        return 0


def _serve(h: Any, verbose: bool) -> Tuple[int, bool]:
    """Serve on handle ``h`` until a signal or the broker's loss; returns (exit code, lost)."""
    from copy_offload.flux.frontend import Frontend
    from flux.constants import (
        FLUX_MSGTYPE_REQUEST,
        FLUX_ROLE_OWNER,
        FLUX_ROLE_USER,
        FLUX_RPC_STREAMING,
    )

    threshold = syslog.LOG_DEBUG if verbose else syslog.LOG_INFO

    def log(level: int, text: str) -> None:
        if level <= threshold:
            try:
                h.log(level, f"{SERVICE}: {text}")
            except OSError:  # the broker is gone; stderr still reaches the journal
                pass
            print(f"{SERVICE}: {text}", file=sys.stderr, flush=True)

    try:
        cfg = parse_config(h.conf_get(update=True))
    except ConfigError as exc:
        log(syslog.LOG_ERR, str(exc))
        return EXIT_CONFIG, False
    except OSError as exc:  # connected to a broker on its way down: try the next one
        log(syslog.LOG_ERR, f"cannot read the broker's config: {exc}")
        return EXIT_RUNTIME, True
    try:
        h.service_register(SERVICE).get()
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            log(syslog.LOG_ERR, f"cannot register the {SERVICE} service: {exc}")
            return EXIT_RUNTIME, True
        log(syslog.LOG_ERR, f"cannot register the {SERVICE} service ({exc}); is the "
            "copy-offload broker module loaded, or another copy running?")
        return EXIT_REGISTER, False

    stopped = [False]

    def on_signal(_h: Any, _w: Any, _signum: int, _args: Any) -> None:
        stopped[0] = True
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

    rc, lost = 0, False
    config_stream = None  # kept referenced while the reactor runs
    try:
        config_stream = h.rpc("config.get", flags=FLUX_RPC_STREAMING)
        config_stream.then(on_config)
        log(syslog.LOG_INFO, "started (standalone)")
        if h.reactor_run() < 0 and not stopped[0]:
            lost = True  # the connection failed: the broker went away
    except KeyboardInterrupt:
        rc = 0
    except OSError as exc:  # a send failed: the broker went away under us
        log(syslog.LOG_ERR, f"broker connection failed: {exc}")
        lost = not stopped[0]
        rc = 0 if stopped[0] else EXIT_RUNTIME
    except Exception as exc:
        log(syslog.LOG_ERR, f"stopped by an error: {type(exc).__name__}: {exc}")
        rc = EXIT_RUNTIME
    finally:
        front.close()
        for w in watchers + sigs:
            w.stop()
        del config_stream
    return rc, lost


if __name__ == "__main__":
    sys.exit(main())
