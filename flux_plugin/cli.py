"""``flux copy-offload``: look at the service and at what a job was given.

    flux copy-offload status [--json]      the service's counters (copy-offload.stats)
    flux copy-offload env JOBID [--json]   the job's copy-offload-env variables, token redacted
    flux copy-offload job JOBID [--json]   every copy the job made and its outcome (after drain)
    flux copy-offload module-path          the broker module file, for 'flux module load'

``env`` reads the job's eventlog, so a job's owner can use it too, and it works after the job
ended. Installed as ``flux-copy-offload.py`` in flux-core's command path (see docs/flux.md).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from typing import Any, Dict, List, Optional

from copy_offload.flux.logic import redact
from copy_offload.flux.vocabulary import ENV_EVENT as EVENT
from copy_offload.flux.vocabulary import TOPIC_STATS, VARIABLES


def find_env_event(eventlog: str) -> Optional[Dict[str, str]]:
    """The variables of the last ``copy-offload-env`` event in an eventlog text, or None."""
    found = None
    for line in eventlog.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("name") == EVENT:
            ctx = entry.get("context") or {}
            variables = ctx.get(VARIABLES) if isinstance(ctx, dict) else None
            found = {k: v for k, v in (variables or {}).items() if isinstance(v, str)}
    return found


def job_outcomes(eventlog: str) -> Dict[str, Any]:
    """The copies (last entry per name wins) and drain summaries of a job's outcome eventlog."""
    copies: Dict[str, Dict[str, Any]] = {}
    drains: List[Dict[str, Any]] = []
    for line in eventlog.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        ctx = entry.get("context") if isinstance(entry, dict) else None
        if not isinstance(ctx, dict):
            continue
        if entry.get("name") == "copy" and isinstance(ctx.get("name"), str):
            copies[ctx["name"]] = ctx
        elif entry.get("name") == "drain":
            drains.append(ctx)
    return {"copies": [copies[k] for k in sorted(copies)], "drains": drains}


def format_outcomes(doc: Dict[str, Any]) -> str:
    """One line per copy (name, status, bytes), then one per node's drain."""
    lines = []
    for c in doc["copies"]:
        size = "?" if c.get("bytes") is None else str(c["bytes"])
        status = c.get("status") if c.get("state") == "completed" else c.get("state")
        text = f"{c['name']}  {status}  {size} bytes"
        lines.append(text + (f"  ({c['message']})" if c.get("message") else ""))
    for d in doc["drains"]:
        text = (f"drain on {d.get('host', '?')} (rank {d.get('rank', '?')}): "
                f"{d.get('copies', 0)} copies, waited {d.get('waited', 0)}s "
                f"of {d.get('limit', 0)}s")
        if d.get("left"):
            text += f"; still running at the limit: {', '.join(d['left'])}"
        lines.append(text)
    return "\n".join(lines)


def format_stats(stats: Dict[str, Any]) -> str:
    """A short human summary of the stats document."""
    lat = stats.get("event-to-reply-ms") or {}
    watch = stats.get("watch") or {}
    counts = stats.get("counts") or {}
    lines = [
        f"in sync:            {'yes' if stats.get('synced') else 'no'}"
        + (f" ({stats.get('lost-reason')})" if stats.get("lost-reason") else ""),
        f"API version:        {watch.get('api-version') or '?'}",
        f"Workflows cached:   {stats.get('workflows-cached', 0)}",
        f"jobs waiting:       {stats.get('pending', 0)}",
        f"jobs with variables:{stats.get('jobs-with-variables', 0):>4} "
        f"({stats.get('jobs-with-token', 0)} with a token)",
        f"requests:           {counts.get('requests', 0)} "
        f"(answered {counts.get('answered', 0)}, errors {counts.get('errors', 0)}, "
        f"timeouts {counts.get('timeouts', 0)})",
        f"Kubernetes GETs:    {stats.get('kubernetes-gets', 0)}",
        f"watch:              {watch.get('lists', 0)} lists, "
        f"{watch.get('watch-requests', 0)} watches, {watch.get('events', 0)} events, "
        f"{watch.get('resyncs-410', 0)} resyncs (410), {watch.get('errors', 0)} errors",
    ]
    if watch.get("last-error"):
        lines.append(f"last watch error:   {watch['last-error']}")
    if lat.get("count"):
        lines.append(f"event to reply:     last {lat['last']} ms, mean {lat['mean']} ms, "
                     f"max {lat['max']} ms over {lat['count']}")
    return "\n".join(lines)


def module_path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "copy-offload.py")


def show_job(h: Any, jobid: Any, args: argparse.Namespace) -> None:
    """Print a job's recorded copy outcomes (guest KVS eventlog ``copy-offload``)."""
    try:
        reply = h.rpc("job-info.lookup", {"id": int(jobid), "keys": ["guest.copy-offload"],
                                          "flags": 0}).get()
    except FileNotFoundError:
        sys.exit(f"flux-copy-offload: job {args.jobid} recorded no copy outcomes (no drain "
                 "ran: not a copy-offload job, or it has not ended yet)")
    doc = job_outcomes(reply.get("guest.copy-offload", ""))
    print(json.dumps(doc, indent=2, sort_keys=True) if args.json else format_outcomes(doc))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flux copy-offload",
                                description="The copy-offload service: status and job variables")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("status", help="show the service's counters")
    s.add_argument("--json", action="store_true", help="print the raw stats document")
    e = sub.add_parser("env", help="show what a job was given (token redacted)")
    e.add_argument("jobid", help="job id (any Flux form)")
    e.add_argument("--json", action="store_true", help="print a JSON object")
    j = sub.add_parser("job", help="show every copy a job made and its outcome")
    j.add_argument("jobid", help="job id (any Flux form)")
    j.add_argument("--json", action="store_true", help="print a JSON object")
    sub.add_parser("module-path", help="print the broker module file for 'flux module load'")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["shell"]:  # run by the job shell plugin, not by people
        from copy_offload.flux.jobshell import main as shell_main

        sys.exit(shell_main(argv[1:]))
    args = _parser().parse_args(argv)
    if args.cmd == "module-path":
        print(module_path())
        return
    import flux
    import flux.job

    prog = "flux-copy-offload"
    try:
        h = flux.Flux()
        if args.cmd == "status":
            stats = h.rpc(TOPIC_STATS, {}).get()
            print(json.dumps(stats, indent=2, sort_keys=True) if args.json
                  else format_stats(stats))
            return
        jobid = flux.job.JobID(args.jobid)
        if args.cmd == "job":
            show_job(h, jobid, args)
            return
        reply = h.rpc("job-info.lookup", {"id": int(jobid), "keys": ["eventlog"],
                                          "flags": 0}).get()
        variables = find_env_event(reply.get("eventlog", ""))
    except OSError as exc:
        text = exc.strerror or str(exc)
        if getattr(exc, "errno", None) == errno.ENOSYS:
            text = "the copy-offload service is not running (no copy-offload service)"
        sys.exit(f"{prog}: {text}")
    except ValueError as exc:
        sys.exit(f"{prog}: {exc}")
    if variables is None:
        sys.exit(f"{prog}: job {args.jobid} has no {EVENT} event (not a dw job, or it has "
                 "not reached RUN)")
    shown = redact(variables)
    if args.json:
        print(json.dumps(shown, indent=2, sort_keys=True))
    else:
        for key in sorted(shown):
            print(f"{key}={shown[key]}")
