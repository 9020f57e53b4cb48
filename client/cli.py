"""``copy-offload``: the friendly command line for job scripts and people.

A live progress bar when stderr is a terminal, ``--json`` for scripts. Exit status: 0 on
success, 1 when the server or the copy says no, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Dict, List, Optional

from copy_offload.client.client import Client
from copy_offload.client.errors import CopyOffloadError, ServerError
from copy_offload.client.models import Status


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="copy-offload", description="Ask the copy-offload server on your "
                                "Rabbit to copy data, and list, watch or cancel those copies.")
    p.add_argument("--host", help="server host (default $NNF_CONTAINER_LAUNCHER or /etc/local-rabbit.conf)")
    p.add_argument("--port", type=int, help="server port (default: first of $NNF_CONTAINER_PORTS)")
    p.add_argument("--token-file", help="file holding the token (default $DW_WORKFLOW_TOKEN)")
    p.add_argument("--ca", help="CA certificate (default /etc/nnf-dm-usercontainer/cert.pem)")
    p.add_argument("--no-tls", action="store_true", help="plain HTTP (a server run with -skip-tls)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer (default 30)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("hello", help="check that the server answers")
    copy = sub.add_parser("copy", help="start a copy: SRC and DST as the server sees them")
    copy.add_argument("source")
    copy.add_argument("destination")
    copy.add_argument("--wait", action="store_true", help="wait for the copy to finish, showing progress")
    copy.add_argument("--profile", help="data-movement profile (default: the server's default)")
    copy.add_argument("--slots", type=int, default=-1, help="MPI slots (-1 = profile, 0 = none)")
    copy.add_argument("--max-slots", type=int, default=-1, help="MPI max slots (-1 = profile, 0 = none)")
    copy.add_argument("--dryrun", action="store_true", help="walk and count, write nothing")
    copy.add_argument("--dcp-options", default="", help="extra dcp options (nnf driver)")
    copy.add_argument("--mpirun-options", default="", help="extra mpirun options (nnf driver)")
    copy.add_argument("--store-stdout", action="store_true", help="keep the copy's output in its status")
    status = sub.add_parser("status", help="show a request's status")
    status.add_argument("name")
    status.add_argument("--wait", action="store_true", help="wait for the request to finish")
    sub.add_parser("list", help="list active requests")
    cancel = sub.add_parser("cancel", help="cancel a request")
    cancel.add_argument("name")
    sub.add_parser("shutdown", help="stop the server (refused while requests run)")
    return p


def status_dict(status: Status) -> Dict[str, Any]:
    return {k: v for k, v in status.__dict__.items() if k != "raw" and v not in (None, "")}


def _human_status(status: Status) -> str:
    lines = ["%s: %s" % (key.replace("_", " "), str(value).rstrip("\n"))
             for key, value in status_dict(status).items()]
    return "\n".join(lines)


class Progress:
    """A tqdm bar fed from status answers; plain lines when stderr is not a terminal."""

    def __init__(self, name: str, enabled: bool) -> None:
        self.name = name
        self.bar: Any = None
        self.enabled = enabled

    def __call__(self, status: Status) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            total = status.bytes_total if status.bytes_total else 100
            unit = "B" if status.bytes_total else "%"
            self.bar = tqdm(total=total, unit=unit, unit_scale=bool(status.bytes_total),
                            unit_divisor=1024, desc=self.name, file=sys.stderr, leave=True)
        done = status.bytes_copied if status.bytes_total else status.progress
        if done is not None:
            self.bar.n = min(done, self.bar.total)
            self.bar.refresh()

    def close(self, final: Optional[Status]) -> None:
        if self.bar is not None:
            if final is not None and final.ok:
                self.bar.n = self.bar.total
                self.bar.refresh()
            self.bar.close()


def _emit(args: argparse.Namespace, value: Any, text: str) -> None:
    if args.json:
        print(json.dumps(value, sort_keys=True))
    elif text:
        print(text)


def _wait(client: Client, args: argparse.Namespace, name: str) -> int:
    progress = Progress(name, enabled=not args.json and sys.stderr.isatty())
    final: Optional[Status] = None
    try:
        final = client.wait(name, on_progress=progress)
    finally:
        progress.close(final)
    _emit(args, {"name": name, **status_dict(final)}, _human_status(final))
    return 0 if final.ok else 1


def run(args: argparse.Namespace) -> int:
    kw = dict(host=args.host, port=args.port, token_file=args.token_file, ca_file=args.ca,
              tls=not args.no_tls)
    with Client(timeout=args.timeout, **kw) as client:
        if args.command == "hello":
            text = client.hello()
            _emit(args, {"hello": text}, text)
        elif args.command == "copy":
            name = client.copy(args.source, args.destination, profile=args.profile, slots=args.slots,
                               max_slots=args.max_slots, dryrun=args.dryrun, dcp_options=args.dcp_options,
                               mpirun_options=args.mpirun_options, store_stdout=args.store_stdout)
            if args.wait:
                return _wait(client, args, name)
            _emit(args, {"name": name}, name)
        elif args.command == "status":
            if args.wait:
                return _wait(client, args, args.name)
            status = client.status(args.name)
            _emit(args, {"name": args.name, **status_dict(status)}, _human_status(status))
        elif args.command == "list":
            names: List[str] = client.list()
            _emit(args, {"active": names}, "\n".join(names))
        elif args.command == "cancel":
            client.cancel(args.name)
            _emit(args, {"cancelled": args.name}, "cancelled %s" % args.name)
        elif args.command == "shutdown":
            text = client.shutdown()
            _emit(args, {"shutdown": text}, text)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except ServerError as exc:
        if args.json:
            print(json.dumps({"error": exc.message, "http_status": exc.status}))
        print("copy-offload: %s (HTTP %d)" % (exc.message, exc.status), file=sys.stderr)
        return 1
    except CopyOffloadError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print("copy-offload: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
