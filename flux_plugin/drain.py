"""Drain at job end: wait until the job's copy-offload server has no active request.

On a Rabbit the server lives in the job's user container, which goes away soon after the
tasks end; a per-job local server is stopped by the job shell. Either way a copy still running
when the application exits would be lost, so the job shell runs this first: it waits for each
active request (bounded by one deadline for all of them), says one line per copy it waited
for and a summary, and returns every outcome so the caller can record them for
``flux copy-offload job``. Only the client's public API is used.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

DEFAULT_DRAIN_TIMEOUT = 300.0


class OptionError(ValueError):
    """A ``-o copy-offload.*`` value that makes no sense; the text names the option."""


@dataclass
class Outcome:
    """What became of one copy: the request name, its final (or last seen) state and bytes."""

    name: str
    state: str
    status: str
    bytes: Optional[int]
    message: str = ""

    def line(self) -> str:
        size = "? bytes" if self.bytes is None else f"{self.bytes} bytes"
        text = f"{self.name}: {self.status or self.state}, {size}"
        first = self.message.strip().splitlines()[0][:200] if self.message.strip() else ""
        return text + (f" ({first})" if first else "")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class DrainResult:
    """Every outcome the drain knows of, the names still running at the limit, time waited."""

    outcomes: List[Outcome]
    left: List[str]
    waited: float
    limit: float

    def summary(self) -> str:
        done = [o for o in self.outcomes if o.state == "completed"]
        ok = sum(1 for o in done if o.status == "success")
        total = sum(o.bytes or 0 for o in done)
        text = (f"drain: {len(done)} copies complete ({ok} success, {len(done) - ok} not), "
                f"{total} bytes, waited {self.waited:.1f}s")
        if self.left:
            text += f"; {len(self.left)} still running at the {self.limit:g}s limit"
        return text

    def warning(self) -> Optional[str]:
        if not self.left:
            return None
        return (f"drain limit of {self.limit:g}s reached; still running, not waited for: "
                f"{', '.join(self.left)}")


def _truth(value: Any, option: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", ""):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise OptionError(f"-o copy-offload.{option} must be true or false, not {value!r}")


def _seconds(value: Any, option: str) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number != number or number < 0:
        raise OptionError(f"-o copy-offload.{option} must be a number of seconds >= 0, "
                          f"not {value!r}")
    return number


def drain_limit(site_timeout: float, options: Mapping[str, Any]) -> Tuple[float, Optional[str]]:
    """The drain's time limit (0 = no drain) and a note when the user's value was lowered.

    The site's ``drain-timeout`` is both the default and the ceiling: a node held by one job's
    drain is a node no other job gets, so a user may shorten the wait but not lengthen it.
    """
    if "drain" in options and not _truth(options["drain"], "drain"):
        return 0.0, None
    if "drain-timeout" not in options:
        return site_timeout, None
    wanted = _seconds(options["drain-timeout"], "drain-timeout")
    if wanted > site_timeout:
        return site_timeout, (f"-o copy-offload.drain-timeout={wanted:g} is above the site's "
                              f"limit; waiting at most {site_timeout:g}s")
    return wanted, None


def wants_local_server(options: Mapping[str, Any]) -> bool:
    """True when the job asked for a per-job local server (``-o copy-offload.local-server``)."""
    return "local-server" in options and _truth(options["local-server"], "local-server")


def _outcome(name: str, status: Any) -> Outcome:
    return Outcome(name=name, state=status.state, status=status.status,
                   bytes=status.bytes_copied, message=status.message)


def drain(client: Any, limit: float, say: Callable[[str], None], *,
          known: Iterable[str] = (), clock: Callable[[], float] = time.monotonic) -> DrainResult:
    """Wait for every active request of ``client``'s server, for at most ``limit`` seconds.

    ``say`` gets a line naming the copies it waits for, then one line per copy as it ends. ``known`` names requests the job made that may
    have finished already (the per-job server's records); their outcome is looked up too.
    A request that vanishes while waited for (a server that reaps finished requests) is
    recorded with the state it was last seen in.
    """
    from copy_offload.client.errors import CopyOffloadError, WaitTimeout

    start = clock()
    deadline = start + limit
    outcomes: Dict[str, Outcome] = {}
    left: List[str] = []
    announced = False
    while True:
        active = [n for n in client.list() if n not in outcomes]
        if not active:
            left = []
            break
        left = active
        if clock() >= deadline:
            break
        if not announced:
            say(f"waiting for {len(active)} running copies (at most {limit:g}s): "
                f"{', '.join(active)}")
            announced = True
        for name in active:
            remaining = deadline - clock()
            if remaining <= 0:
                break
            try:
                status = client.wait(name, timeout=remaining)
            except WaitTimeout:
                break  # the limit came first: still running, named in ``left``
            except CopyOffloadError as exc:
                outcomes[name] = Outcome(name, "unknown", "unknown", None, str(exc))
                say(f"copy {outcomes[name].line()}")
                continue
            if status.done:
                outcomes[name] = _outcome(name, status)
                say(f"copy {outcomes[name].line()}")
    for name in known:
        if name in outcomes or name in left:
            continue
        try:
            outcomes[name] = _outcome(name, client.status(name))
        except CopyOffloadError as exc:
            outcomes[name] = Outcome(name, "unknown", "unknown", None, str(exc))
    for name in left:
        try:
            outcomes[name] = _outcome(name, client.status(name))
        except CopyOffloadError as exc:
            outcomes[name] = Outcome(name, "unknown", "unknown", None, str(exc))
    ordered = sorted(outcomes.values(), key=lambda o: o.name)
    return DrainResult(outcomes=ordered, left=sorted(left), waited=clock() - start, limit=limit)


__all__ = ["DEFAULT_DRAIN_TIMEOUT", "DrainResult", "OptionError", "Outcome", "drain",
           "drain_limit", "wants_local_server"]
