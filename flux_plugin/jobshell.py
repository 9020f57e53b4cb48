"""``flux copy-offload shell start|finish``: what the job shell plugin runs at job start and end.

The C shell plugin stays thin: it runs this with the job's copy-offload variables in the
environment and turns each stdout line into a task variable (``env NAME=VALUE``) or a line in
the job's output (``info``/``warn``/``error`` TEXT). ``start`` brings up a per-job local
server; ``finish`` drains the job's server, records every copy's outcome in the job's guest
KVS (eventlog ``copy-offload``, kept with the job after it ends, read by
``flux copy-offload job``) and stops a per-job server. Settings come from the instance's
``[copy-offload]`` table and the job's ``-o copy-offload.*`` options.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from typing import Any, Dict, List, Optional

from copy_offload.flux import drain as draining
from copy_offload.flux import jobserver
from copy_offload.flux.config import ConfigError, ServiceConfig, parse_config
from copy_offload.flux.directives import asks_copy_offload

OUTCOME_KEY = "copy-offload"


def say(kind: str, text: str) -> None:
    """One protocol line for the shell plugin (never a token in ``text``)."""
    print(f"{kind} {text}", flush=True)


def site_config(h: Any) -> ServiceConfig:
    """The instance's ``[copy-offload]`` table; defaults (with a warning) when it is invalid."""
    try:
        return parse_config(h.rpc("config.get").get())
    except (ConfigError, OSError) as exc:
        say("warn", f"using default settings: {exc}")
        return ServiceConfig()


def append_outcomes(h: Any, entries: List[Dict[str, Any]]) -> None:
    """Append eventlog entries to the job's guest KVS key (FLUX_KVS_NAMESPACE)."""
    import flux.constants
    from flux.core.inner import ffi, raw

    lines = "".join(json.dumps({"timestamp": time.time(), "name": e["name"],
                                "context": e["context"]}) + "\n" for e in entries)
    txn = raw.flux_kvs_txn_create()
    try:
        raw.flux_kvs_txn_put(txn, flux.constants.FLUX_KVS_APPEND, OUTCOME_KEY, lines)
        future = raw.flux_kvs_commit(h, ffi.NULL, 0, txn)
        try:
            raw.flux_future_get(future, ffi.NULL)
        finally:
            raw.flux_future_destroy(future)
    finally:
        raw.flux_kvs_txn_destroy(txn)


def _options(text: str) -> Dict[str, Any]:
    try:
        options = json.loads(text or "{}")
    except ValueError:
        return {}
    return options if isinstance(options, dict) else {}


def do_start(cfg: ServiceConfig, args: argparse.Namespace) -> int:
    try:
        if not draining.wants_local_server(_options(args.options)):
            return 0
    except draining.OptionError as exc:
        say("error", str(exc))
        return 1
    tmpdir = os.environ.get("FLUX_JOB_TMPDIR")
    if not tmpdir:
        say("error", "no FLUX_JOB_TMPDIR for the per-job server's key")
        return 1
    try:
        env = jobserver.start(jobid=args.jobid, job_tmpdir=tmpdir, roots=cfg.local_roots,
                              program=cfg.local_server, state_base=cfg.local_state_dir,
                              profiles=cfg.local_profiles)
    except (jobserver.JobServerError, OSError) as exc:
        say("error", f"per-job server: {exc}")
        return 1
    for key, value in env.items():
        print(f"env {key}={value}", flush=True)
    say("info", f"per-job server on {env['NNF_CONTAINER_LAUNCHER']}:"
        f"{env['NNF_CONTAINER_PORTS']} (records in {env['COPY_OFFLOAD_STATE_DIR']})")
    return 0


def _drain(cfg: ServiceConfig, options: Dict[str, Any], known: List[str]
           ) -> Optional[draining.DrainResult]:
    from copy_offload.client import Client
    from copy_offload.client.errors import CopyOffloadError

    limit, note = draining.drain_limit(cfg.drain_timeout, options)
    if note:
        say("warn", note)
    try:
        # Each call is bounded too: a Rabbit that is gone must not hold the node past the limit.
        with Client(timeout=max(5.0, min(30.0, limit))) as client:
            result = draining.drain(client, limit, lambda line: say("info", line), known=known)
    except CopyOffloadError as exc:
        say("warn", f"cannot drain the job's copy-offload server: {exc}")
        return None
    if limit == 0:
        if result.left:
            say("info", f"drain is off; not waited for: {', '.join(result.left)}")
    else:
        say("info", result.summary())
        warning = result.warning()
        if warning:
            say("warn", warning)
    return result


def do_finish(h: Any, cfg: ServiceConfig, args: argparse.Namespace) -> int:
    tmpdir = os.environ.get("FLUX_JOB_TMPDIR", "")
    server = jobserver.info(tmpdir) if tmpdir else None
    if server is None and not (args.dw and _asked(h, args.jobid)):
        return 0
    if not os.environ.get("NNF_CONTAINER_PORTS"):
        return 0  # the job never got a server's address (its prolog said why)
    options = _options(args.options)
    known = jobserver.known_requests(str(server["state-dir"])) if server else []
    try:
        result = _drain(cfg, options, known)
    except draining.OptionError as exc:
        say("warn", f"{exc}; using the site's drain-timeout")
        result = _drain(cfg, {}, known)
    if result is not None:
        where = {"rank": args.rank, "host": socket.gethostname()}
        entries = [{"name": "copy", "context": {**o.to_dict(), **where}}
                   for o in result.outcomes]
        entries.append({"name": "drain", "context": {
            **where, "waited": round(result.waited, 3), "limit": result.limit,
            "left": result.left, "copies": len(result.outcomes)}})
        try:
            append_outcomes(h, entries)
        except OSError as exc:
            say("warn", f"cannot record the copies' outcomes in the job's KVS: {exc}")
    if server is not None:
        stopped = jobserver.stop(int(server["pid"]))
        say("info", "per-job server stopped" + ("" if stopped else " (killed)"))
    return 0


def _asked(h: Any, jobid: str) -> bool:
    """True when the job's dw directives ask for copy-offload (requires=copy-offload)."""
    try:
        reply = h.rpc("job-info.lookup", {"id": int(jobid), "keys": ["jobspec"],
                                          "flags": 0}).get()
        spec = reply["jobspec"]
        spec = json.loads(spec) if isinstance(spec, str) else spec
        dw = spec.get("attributes", {}).get("system", {}).get("dw")
    except (OSError, KeyError, ValueError, AttributeError):
        return False
    return asks_copy_offload(dw)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="flux copy-offload shell",
                                description="run by the copy-offload shell plugin")
    p.add_argument("action", choices=["start", "finish"])
    p.add_argument("--jobid", required=True)
    p.add_argument("--rank", type=int, default=0)
    p.add_argument("--options", default="{}")
    p.add_argument("--dw", action="store_true")
    p.add_argument("--no-dw", dest="dw", action="store_false")
    args = p.parse_args(argv)
    import flux

    h = flux.Flux()
    cfg = site_config(h)
    if args.action == "start":
        return do_start(cfg, args)
    return do_finish(h, cfg, args)


if __name__ == "__main__":
    sys.exit(main())
