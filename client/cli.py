"""``copy-offload``: the friendly command line for job scripts and people.

A live bar on a terminal, a plain line every few seconds in a pipe or a batch log, ``--json``
for scripts, ``--quiet`` for neither. Results go to stdout, everything else (progress, the
names of started copies, failures) to stderr. Exit codes are in ``EPILOG``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from copy_offload.client import progress, protocol, units
from copy_offload.client.client import DEFAULT_TIMEOUT, Client
from copy_offload.client.errors import (
    ConfigurationError,
    CopyOffloadError,
    NotFound,
    ServerError,
    TransportError,
    WaitTimeout,
)
from copy_offload.client.models import Status

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXIT_TIMEOUT, EXIT_INTERRUPTED, EXIT_PIPE = 124, 130, 141

EPILOG = """\
exit status:
  0    success
  1    the copy failed or was cancelled, or the server refused the request
  2    a bad command line
  3    the server could not be reached (configuration, connection, TLS, no answer)
  124  --timeout ran out while waiting; the copy goes on on the server
  130  interrupted (Ctrl-C) while waiting; the copy goes on on the server
  141  the output was closed early (as by '| head')

Global options may come before or after the command: copy-offload list --json."""

#: Options whose values often start with "-" (``--dcp-options "--sparse"``).
DASH_VALUE_OPTIONS = ("--dcp-options", "--mpirun-options")


class _Version(argparse.Action):
    """``--version``, reading the installed version only when asked (no import cost otherwise)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from importlib import metadata

        try:
            version = metadata.version("flux-copy-offload")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        print("copy-offload %s" % version)
        parser.exit()


def _global_options(top: bool) -> argparse.ArgumentParser:
    """The options every command takes; below the command they leave unset ones alone."""
    p = argparse.ArgumentParser(add_help=False)

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    g = p.add_argument_group("global options")
    g.add_argument("--host", default=default(None),
                   help="server host (default $NNF_CONTAINER_LAUNCHER or /etc/local-rabbit.conf)")
    g.add_argument("--port", type=int, default=default(None), help="server port (default: first of $NNF_CONTAINER_PORTS)")
    g.add_argument("--token-file", default=default(None), help="file holding the token (default $DW_WORKFLOW_TOKEN)")
    g.add_argument("--ca", default=default(None), help="CA certificate (default /etc/nnf-dm-usercontainer/cert.pem)")
    g.add_argument("--no-tls", action="store_true", default=default(False), help="plain HTTP (a server run with -skip-tls)")
    g.add_argument("--timeout", type=float, default=default(None), metavar="SECONDS",
                   help="give up after this long: bounds a whole --wait, and every answer (default: wait as "
                        "long as the copy takes; %g s for each answer)" % DEFAULT_TIMEOUT)
    g.add_argument("--json", action="store_true", default=default(False), help="one JSON object per request on stdout")
    g.add_argument("-q", "--quiet", action="store_true", default=default(False),
                   help="no progress and no notes on stderr; only results and errors")
    g.add_argument("--progress-interval", type=float, default=default(progress.PLAIN_INTERVAL), metavar="SECONDS",
                   help="seconds between progress lines when stderr is not a terminal (default %g)"
                        % progress.PLAIN_INTERVAL)
    return p


def _parser() -> argparse.ArgumentParser:
    common = [_global_options(top=False)]
    p = argparse.ArgumentParser(prog="copy-offload", parents=[_global_options(top=True)], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Ask the copy-offload server on your Rabbit to copy data, and list, "
                                            "watch or cancel those copies.")
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, parents=common, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    command("hello", "check that the server answers")
    copy = command("copy", "start copies: SRC DST, or SRC... DIR into an existing directory (as cp)")
    copy.add_argument("paths", nargs="+", metavar="PATH",
                      help="SRC DST, or SRC... DIR: paths as this node sees them; relative ones are made absolute")
    copy.add_argument("--wait", action="store_true", help="wait for the copies to finish, showing progress")
    copy.add_argument("--profile", help="data-movement profile (default: the server's default)")
    copy.add_argument("--verify", action="store_true",
                      help="checksum what was written against the source (the server's '%s' profile)"
                           % protocol.VERIFY_PROFILE)
    copy.add_argument("--slots", type=int, default=-1, help="MPI slots (-1 = profile, 0 = none)")
    copy.add_argument("--max-slots", type=int, default=-1, help="MPI max slots (-1 = profile, 0 = none)")
    copy.add_argument("--dryrun", action="store_true", help="walk and count, write nothing")
    copy.add_argument("--dcp-options", default="", metavar="OPTIONS", help="extra dcp options (nnf driver); the local engine understands -p/--preserve (keep times) and --direct")
    copy.add_argument("--mpirun-options", default="", metavar="OPTIONS", help="extra mpirun options (nnf driver)")
    copy.add_argument("--store-stdout", action="store_true", help="keep the copy's output in its status")
    status = command("status", "show a request's status")
    status.add_argument("name")
    status.add_argument("--wait", action="store_true", help="wait for the request to finish, showing progress")
    command("list", "list active requests")
    cancel = command("cancel", "cancel a request (says so if it had already finished)")
    cancel.add_argument("name")
    command("shutdown", "stop the server (refused while requests run)")
    return p


def _join_dash_values(argv: Sequence[str]) -> List[str]:
    """``--dcp-options --sparse`` as ``--dcp-options=--sparse``: argparse takes a value that
    starts with ``-`` for an option otherwise."""
    out: List[str] = []
    items = iter(argv)
    for arg in items:
        if arg in DASH_VALUE_OPTIONS:
            value = next(items, None)
            out.append(arg if value is None else "%s=%s" % (arg, value))
        else:
            out.append(arg)
    return out


def status_dict(status: Status) -> Dict[str, Any]:
    return {k: v for k, v in status.__dict__.items() if k != "raw" and v not in (None, "")}


def human_status(name: str, status: Status, with_message: bool = True) -> str:
    """``key: value`` lines with sizes, counts and rates for people."""
    lines = ["name: %s" % name, "state: %s" % status.state, "status: %s" % status.status]
    if status.message and with_message:
        lines.append("message: %s" % status.message.rstrip("\n"))
    for label, value in (("command", status.command), ("elapsed time", status.elapsed_time),
                         ("last message", status.last_message), ("last message time", status.last_message_time),
                         ("start time", status.start_time), ("end time", status.end_time)):
        if value:
            lines.append("%s: %s" % (label, value.rstrip("\n")))
    if status.progress:
        lines.append("progress: %d%%" % status.progress)
    if status.bytes_total is not None or status.bytes_copied is not None:
        lines.append("copied: %s of %s" % (units.size(status.bytes_copied or 0), units.size(status.bytes_total)))
    if status.files_total is not None or status.files_copied is not None:
        lines.append("files: %s of %s" % (status.files_copied or 0, "?" if status.files_total is None else
                                          status.files_total))
    if status.bytes_per_second is not None:
        lines.append("rate: %s" % units.rate(status.bytes_per_second))
    if status.bytes_verified is not None:
        lines.append("verified: %s, %d mismatch(es)" % (units.size(status.bytes_verified),
                                                        status.verify_mismatches or 0))
    return "\n".join(lines)


class Output:
    """Where each kind of text goes: results to stdout, notes and progress to stderr."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.json, self.quiet = args.json, args.quiet
        self.interval = args.progress_interval

    def result(self, value: Dict[str, Any], text: str) -> None:
        if self.json:
            print(json.dumps(value, sort_keys=True))
        elif text:
            print(text)

    def note(self, text: str) -> None:
        """A remark for a person: not in --json or --quiet mode."""
        if not (self.json or self.quiet):
            print("copy-offload: %s" % text, file=sys.stderr, flush=True)

    def error(self, text: str) -> None:
        print("copy-offload: %s" % text, file=sys.stderr, flush=True)

    def progress(self, name: str) -> Any:
        if self.json or self.quiet:
            return None
        if sys.stderr.isatty():
            return progress.Bar(sys.stderr)
        return progress.Lines(name, sys.stderr, self.interval)


def _final(out: Output, name: str, final: Status) -> int:
    out.result({"name": name, **status_dict(final)}, human_status(name, final, with_message=final.ok))
    if final.ok:
        return EXIT_OK
    why = (": " + final.message.rstrip("\n")) if final.message else ""
    out.error("%s %s%s" % (name, "was cancelled" if final.status == "cancelled" else "failed (%s)" % final.status, why))
    return EXIT_FAILED


def _wait_all(client: Client, args: argparse.Namespace, out: Output, names: List[str]) -> int:
    """Wait for each request in turn; on Ctrl-C or --timeout, say how to find them again."""
    worst = EXIT_OK
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    for index, name in enumerate(names):
        show = out.progress(name)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            final = client.wait(name, timeout=left, on_progress=show)
        except WaitTimeout as exc:
            _close(show)
            out.result({"name": name, "timed_out": True, **status_dict(exc.status)}, human_status(name, exc.status))
            out.error("%s is still %s after %g s; %s" % (name, exc.status.state, args.timeout, _how_to_find(names[index:])))
            return EXIT_TIMEOUT
        except KeyboardInterrupt:
            _close(show)
            return _interrupted(out, names[index:])
        except TransportError as exc:  # the server went away mid-wait; the copies may not have
            _close(show)
            raise type(exc)("%s; %s" % (exc, _how_to_find(names[index:], maybe=True, named=True))) from exc
        _close(show)
        worst = max(worst, _final(out, name, final))
    return worst


def _close(show: Any) -> None:
    if show is not None:
        show.close()


def _interrupted(out: Output, names: List[str]) -> int:
    """Ctrl-C with copies started: they go on, so say which and how to get back to them."""
    if out.json:
        for name in names:
            print(json.dumps({"name": name, "interrupted": True}, sort_keys=True))
    out.error("interrupted; %s" % _how_to_find(names, named=True))
    return EXIT_INTERRUPTED


def _how_to_find(names: List[str], maybe: bool = False, named: bool = False) -> str:
    """How to get back to requests that go on without us (``named``: the text names a single one)."""
    if len(names) == 1:
        return ("%sit %s on the server: 'copy-offload status %s --wait' waits again, 'copy-offload cancel %s' "
                "stops it" % (names[0] + ": " if named else "", "may continue" if maybe else "continues",
                              names[0], names[0]))
    return ("%s %s on the server: 'copy-offload status NAME --wait' waits again, 'copy-offload cancel NAME' "
            "stops one" % (", ".join(names), "may continue" if maybe else "continue"))


def _copy(client: Client, args: argparse.Namespace, out: Output) -> int:
    *sources, destination = [os.path.abspath(path) for path in args.paths]
    names: List[str] = []
    try:
        for source in sources:
            name = client.copy(source, destination, profile=args.profile, verify=args.verify, slots=args.slots,
                               max_slots=args.max_slots, dryrun=args.dryrun, dcp_options=args.dcp_options,
                               mpirun_options=args.mpirun_options, store_stdout=args.store_stdout)
            names.append(name)
            if args.wait:
                out.note("started %s: %s -> %s" % (name, source, destination))
            else:
                out.result({"name": name}, name)
        return _wait_all(client, args, out, names) if args.wait else EXIT_OK
    except KeyboardInterrupt:
        if not names:
            raise
        return _interrupted(out, names)  # between two submits, or before the wait began


def _cancel(client: Client, name: str, out: Output) -> int:
    """Cancel, and say so when there was nothing left to cancel."""
    before: Optional[Status] = None
    try:
        before = client.status(name)
    except NotFound:
        pass  # finished and forgotten, or never there: the cancel answer tells which
    client.cancel(name)
    if before is not None and not before.done:
        out.result({"cancelled": name, "already_finished": False}, "cancelled %s" % name)
        return EXIT_OK
    outcome = before.status if before is not None else "the server no longer lists it"
    out.result({"cancelled": name, "already_finished": True, "status": before.status if before else None},
               "%s had already finished (%s); nothing to cancel" % (name, outcome))
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    out = Output(args)
    kw = dict(host=args.host, port=args.port, token_file=args.token_file, ca_file=args.ca, tls=not args.no_tls)
    per_answer = DEFAULT_TIMEOUT if args.timeout is None else min(DEFAULT_TIMEOUT, args.timeout)
    with Client(timeout=per_answer, **kw) as client:
        if args.command == "hello":
            text = client.hello()
            out.result({"hello": text}, text)
        elif args.command == "copy":
            return _copy(client, args, out)
        elif args.command == "status":
            if args.wait:
                return _wait_all(client, args, out, [args.name])
            status = client.status(args.name)
            out.result({"name": args.name, **status_dict(status)}, human_status(args.name, status))
        elif args.command == "list":
            names: List[str] = client.list()
            out.result({"active": names}, "\n".join(names))
        elif args.command == "cancel":
            return _cancel(client, args.name, out)
        elif args.command == "shutdown":
            text = client.shutdown()
            out.result({"shutdown": text}, text)
    return EXIT_OK


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be a positive number of seconds")
    if args.command != "copy":
        return
    if len(args.paths) < 2:
        parser.error("copy needs a source and a destination: copy SRC DST, or copy SRC... DIR")
    if args.verify and args.profile:
        parser.error("--verify picks the server's '%s' profile; leave out --profile %s"
                     % (protocol.VERIFY_PROFILE, args.profile))
    target = args.paths[-1]
    if len(args.paths) > 2 and not os.path.isdir(target):
        parser.error("with several sources the destination must be an existing directory: %s" % target)


def _report(args: argparse.Namespace, exc: CopyOffloadError) -> int:
    if isinstance(exc, ServerError):
        hint = "; " + exc.hint if exc.hint else ""
        text = "%s (HTTP %d)%s" % (exc.message, exc.status, hint)
        value: Dict[str, Any] = {"error": exc.message + hint, "http_status": exc.status}
        code = EXIT_FAILED
    else:
        text, value = str(exc), {"error": str(exc)}
        code = EXIT_UNREACHABLE if isinstance(exc, (ConfigurationError, TransportError)) else EXIT_FAILED
    if args.json:
        print(json.dumps(value, sort_keys=True))
    print("copy-offload: %s" % text, file=sys.stderr)
    return code


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(_join_dash_values(sys.argv[1:] if argv is None else argv))
    _check(parser, args)
    try:
        try:
            code = run(args)
        except CopyOffloadError as exc:
            code = _report(args, exc)
        except KeyboardInterrupt:
            print("copy-offload: interrupted", file=sys.stderr)
            code = EXIT_INTERRUPTED
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (| head): no traceback, and no second error when Python flushes.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
