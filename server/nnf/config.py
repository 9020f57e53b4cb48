"""What the nnf driver needs from its environment: variables, Kubernetes config, settings.

The NNF user container gets ``NNF_NODE_NAME``, ``DW_WORKFLOW_NAME``, ``DW_WORKFLOW_NAMESPACE``
and ``ENVIRONMENT`` from nnf-sos; the reference exits when one is missing, and so do we, with
one message naming all of them. ``NNF_REST_CONFIG_QPS``/``_BURST`` optionally rate-limit the
client as in the reference.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional

from copy_offload.server.kube import KubeError, load_configuration
from copy_offload.server.nnf.kube import KubeSettings
from copy_offload.server.nnf.prepare import PREP_MODES

REQUIRED_ENV = ("NNF_NODE_NAME", "DW_WORKFLOW_NAME", "DW_WORKFLOW_NAMESPACE", "ENVIRONMENT")

NNF_VERSIONS = ("v1alpha11", "v1alpha10", "v1alpha9", "v1alpha8")
DWS_VERSIONS = ("v1alpha7", "v1alpha6")
LUSTRE_VERSIONS = ("v1beta1", "v1alpha1")


class NnfStartupError(RuntimeError):
    """The nnf driver cannot start; the text says what to fix (the server prints it, exit 1)."""


def missing_environment(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """None when the environment is complete, else one message naming every problem."""
    env = os.environ if environ is None else environ
    problems = []
    missing = [name for name in REQUIRED_ENV if not env.get(name)]
    if missing:
        problems.append(
            "the nnf driver needs these environment variables, which nnf-sos sets in the copy-offload "
            "user container: missing %s" % ", ".join(missing)
        )
    mode = env.get("NNF_PREPARE_MODE")
    if mode and mode not in PREP_MODES:
        problems.append("invalid value for NNF_PREPARE_MODE: %r (auto, launch, local or each)" % mode)
    for name, kind in (("NNF_REST_CONFIG_QPS", float), ("NNF_REST_CONFIG_BURST", int)):
        value = env.get(name)
        if value is not None:
            try:
                if kind(value) <= 0:
                    raise ValueError
            except ValueError:
                problems.append("invalid value for %s: %r (a positive %s)" % (name, value, kind.__name__))
    return "; ".join(problems) or None


def kube_settings_from_env(environ: Optional[Mapping[str, str]] = None, base: Optional[KubeSettings] = None) -> KubeSettings:
    env = os.environ if environ is None else environ
    settings = base or KubeSettings()
    if env.get("NNF_REST_CONFIG_QPS"):
        settings.qps = float(env["NNF_REST_CONFIG_QPS"])
    if env.get("NNF_REST_CONFIG_BURST"):
        settings.burst = int(env["NNF_REST_CONFIG_BURST"])
    return settings


def load_kube_configuration(kubeconfig: Optional[str], environ: Optional[Mapping[str, str]] = None) -> Any:
    """A ``kubernetes.client.Configuration`` in the server's one precedence (``server/kube.py``).
    Blocking file reads: call it off the event loop."""
    try:
        cfg, source = load_configuration(kubeconfig, environ=environ)
    except KubeError as exc:
        raise NnfStartupError("unable to load the Kubernetes configuration: %s" % exc.message) from None
    cfg.copy_offload_source = source  # for the startup log line
    return cfg


@dataclass
class NnfSettings:
    """Knobs of the nnf driver; defaults suit production, tests shrink the timings."""

    kube: KubeSettings = field(default_factory=KubeSettings)
    mpi_hostfile: str = "/etc/mpi/hostfile"
    """mpi-operator's hostfile on the launcher: the Rabbits of a Lustre copy."""
    hostfile_dir: str = field(default_factory=tempfile.gettempdir)
    """Where each request's ``dm-XXXX/hostfile`` directory is made."""
    environment: str = ""
    """``ENVIRONMENT`` (``kind`` accepts a symbolic link as a directory, as the reference)."""
    use_setpriv: Optional[bool] = None
    """Substitute the profile's ``setprivCommand`` for ``$SETPRIV``; None = only when root."""
    command_timeout: Optional[float] = None
    """Seconds for a stat/mkdir command (``NNF_COMMAND_TIMEOUT_SECONDS``); None = 300."""
    cancel_wait: float = 10.0
    """How long a cancel waits for the request to record its end before answering."""
    output_limit: int = 64 * 1024
    """Characters of command output kept for ``status.message`` (first/last lines win)."""
    status_conflict_retries: int = 10
    """Refetch-and-retry rounds for a status write that meets 409 Conflict."""
    completed_memory: int = 10000
    """Completed request names remembered for cancel-after-completion."""
    end_write_backoff: float = 0.5
    """First pause between tries of a final status write that failed; doubles each time."""
    end_write_backoff_max: float = 5.0
    """Longest pause between tries of a final status write (it is retried until it lands)."""
    watch_caches: bool = True
    """Serve the planning reads from watch-fed caches (``NNF_WATCH_CACHES=0`` turns them off)."""
    cache_sync_wait: float = 10.0
    """How long startup waits for the caches' first lists (reads go to the API server until then)."""
    prepare_mode: str = ""
    """Destination preparation (``NNF_PREPARE_MODE``): ``auto`` (default: here when this server
    sees the source as the copy's hosts do, else one launch), ``launch`` (always one launch),
    ``local`` (always here) or ``each`` (one launch per step, as the reference)."""
    retry_sleep: Optional[Callable[[float], Awaitable[Any]]] = None
    """How those pauses are taken (default ``asyncio.sleep``; tests pass a clock of their own)."""

    @classmethod
    def from_extra(cls, extra: Dict[str, Any], environ: Optional[Mapping[str, str]] = None) -> NnfSettings:
        env = os.environ if environ is None else environ
        settings = extra.get("settings")
        if not isinstance(settings, NnfSettings):
            settings = cls()
        for key in list(extra):
            if key != "settings" and hasattr(settings, key) and key != "kube":
                setattr(settings, key, extra[key])
        if isinstance(extra.get("kube_settings"), KubeSettings):
            settings.kube = extra["kube_settings"]
        if not settings.environment:
            settings.environment = env.get("ENVIRONMENT", "")
        if settings.command_timeout is None:
            raw = env.get("NNF_COMMAND_TIMEOUT_SECONDS")
            try:
                settings.command_timeout = float(raw) if raw and float(raw) > 0 else 300.0
            except ValueError:
                settings.command_timeout = 300.0
        if env.get("NNF_WATCH_CACHES", "").strip().lower() in ("0", "false", "no", "off"):
            settings.watch_caches = False
        if not settings.prepare_mode:
            settings.prepare_mode = env.get("NNF_PREPARE_MODE", "") or "auto"
        if settings.use_setpriv is None:
            settings.use_setpriv = hasattr(os, "getuid") and os.getuid() == 0
        kube_settings_from_env(env, settings.kube)
        return settings
