"""The ``[copy-offload]`` TOML table: parsed once at the edge, passed down as a dataclass.

Example (every key optional; these are the defaults)::

    [copy-offload]
    kubeconfig = ""                      # "" = $KUBECONFIG, in-cluster, then ~/.kube/config
    namespace = "default"                # where flux-coral2 creates fluxjob-<jobid>
    prepare-timeout = 1800.0             # seconds a job may wait for PreRun/ready
    workflow-grace = 60.0                # seconds a job waits for a Workflow that is missing
    api-group = "dataworkflowservices.github.io"
    api-versions = ["v1alpha7", "v1alpha6"]   # the first one the API server serves is used
    env-keys = ["*"]                     # status.env keys passed to the job (fnmatch patterns)
    watch-timeout = 300                  # seconds per watch request before it is renewed
    request-timeout = 30.0               # seconds for one list or Secret GET
    backoff-min = 0.5                    # first wait after a failed list/watch
    backoff-max = 60.0                   # the wait doubles up to this
    secret-retries = 3                   # tries for one token Secret GET (5xx, connection)
    drain-timeout = 300.0                # job end: longest wait for running copies (0 = no drain)
    local-roots = []                     # per-job local server: the trees it may copy between
    local-server = "copy-offload-server" # per-job local server: the program (PATH or absolute)
    local-state-dir = "~/.local/state/copy-offload/jobs"   # its records: <dir>/<jobid>/<host>
    local-profiles = ""                  # per-job local server: a --profiles TOML file ("" = none)
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

TABLE = "copy-offload"


class ConfigError(ValueError):
    """The [copy-offload] table is invalid; the text names the key."""


@dataclass(frozen=True)
class ServiceConfig:
    """Settings of the copy-offload service."""

    kubeconfig: Optional[str] = None
    namespace: str = "default"
    prepare_timeout: float = 1800.0
    workflow_grace: float = 60.0
    api_group: str = "dataworkflowservices.github.io"
    api_versions: Tuple[str, ...] = ("v1alpha7", "v1alpha6")
    env_keys: Tuple[str, ...] = ("*",)
    watch_timeout: int = 300
    request_timeout: float = 30.0
    backoff_min: float = 0.5
    backoff_max: float = 60.0
    secret_retries: int = 3
    drain_timeout: float = 300.0
    local_roots: Tuple[str, ...] = ()
    local_server: str = "copy-offload-server"
    local_state_dir: str = "~/.local/state/copy-offload/jobs"
    local_profiles: Optional[str] = None

    def env_allowed(self, key: str) -> bool:
        """True when a status.env key is passed to jobs."""
        return any(fnmatch.fnmatchcase(key, pat) for pat in self.env_keys)

    def kube_settings(self) -> tuple:
        """The settings whose change needs a new Kubernetes watch."""
        return (self.kubeconfig, self.namespace, self.api_group, self.api_versions,
                self.watch_timeout, self.request_timeout)


def _num(table: Dict[str, Any], key: str, default: float, *, minimum: float,
         integer: bool = False) -> Any:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"[{TABLE}] {key} must be a number, not {value!r}")
    if integer and value != int(value):
        raise ConfigError(f"[{TABLE}] {key} must be a whole number, not {value!r}")
    if value < minimum:
        raise ConfigError(f"[{TABLE}] {key} must be at least {minimum:g}, not {value!r}")
    return int(value) if integer else float(value)


def _str(table: Dict[str, Any], key: str, default: Optional[str]) -> Optional[str]:
    value = table.get(key, default)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"[{TABLE}] {key} must be a string, not {value!r}")
    return value


def _strlist(table: Dict[str, Any], key: str, default: Tuple[str, ...]) -> Tuple[str, ...]:
    value = table.get(key, list(default))
    if not isinstance(value, list) or not value or not all(
            isinstance(v, str) and v for v in value):
        raise ConfigError(f"[{TABLE}] {key} must be a non-empty list of strings, not {value!r}")
    return tuple(value)


def _roots(table: Dict[str, Any], key: str) -> Tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(
            isinstance(v, str) and v.startswith("/") for v in value):
        raise ConfigError(f"[{TABLE}] {key} must be a list of absolute paths, not {value!r}")
    return tuple(value)


def _nonempty(table: Dict[str, Any], key: str, default: str) -> str:
    value = _str(table, key, default)
    if not value:
        raise ConfigError(f"[{TABLE}] {key} must not be empty")
    return value


def parse_config(conf: Optional[Dict[str, Any]]) -> ServiceConfig:
    """Build a ServiceConfig from the whole Flux config object (or None).

    Unknown keys are an error, so a typo does not silently fall back to a default.
    """
    table = (conf or {}).get(TABLE, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{TABLE}] must be a table")
    known = {f.name.replace("_", "-") for f in fields(ServiceConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"[{TABLE}] unknown key(s): {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    d = ServiceConfig()
    kubeconfig = _str(table, "kubeconfig", None) or None
    namespace = _str(table, "namespace", d.namespace)
    if not namespace:
        raise ConfigError(f"[{TABLE}] namespace must not be empty")
    api_group = _str(table, "api-group", d.api_group)
    if not api_group:
        raise ConfigError(f"[{TABLE}] api-group must not be empty")
    backoff_min = _num(table, "backoff-min", d.backoff_min, minimum=0.01)
    backoff_max = _num(table, "backoff-max", d.backoff_max, minimum=0.01)
    if backoff_max < backoff_min:
        raise ConfigError(f"[{TABLE}] backoff-max must not be below backoff-min")
    return ServiceConfig(
        kubeconfig=kubeconfig,
        namespace=namespace,
        prepare_timeout=_num(table, "prepare-timeout", d.prepare_timeout, minimum=0.1),
        workflow_grace=_num(table, "workflow-grace", d.workflow_grace, minimum=0.0),
        api_group=api_group,
        api_versions=_strlist(table, "api-versions", d.api_versions),
        env_keys=_strlist(table, "env-keys", d.env_keys),
        watch_timeout=_num(table, "watch-timeout", d.watch_timeout, minimum=1, integer=True),
        request_timeout=_num(table, "request-timeout", d.request_timeout, minimum=0.1),
        backoff_min=backoff_min,
        backoff_max=backoff_max,
        secret_retries=_num(table, "secret-retries", d.secret_retries, minimum=1, integer=True),
        drain_timeout=_num(table, "drain-timeout", d.drain_timeout, minimum=0.0),
        local_roots=_roots(table, "local-roots"),
        local_server=_nonempty(table, "local-server", d.local_server),
        local_state_dir=_nonempty(table, "local-state-dir", d.local_state_dir),
        local_profiles=_str(table, "local-profiles", None) or None,
    )


FILE_KEYS = ("kubeconfig", "local-roots", "local-server", "local-state-dir", "local-profiles")


def config_summary(cfg: ServiceConfig, *, files: bool = True) -> Dict[str, Any]:
    """The settings as TOML-style keys, for the stats RPC (nothing secret in here).

    ``files=False`` leaves out the keys that name a file (for requests from guests: where the
    instance keeps its Kubernetes credentials is the owner's business).
    """
    out: Dict[str, Any] = {}
    for f in fields(cfg):
        if not files and f.name.replace("_", "-") in FILE_KEYS:
            continue
        value = getattr(cfg, f.name)
        out[f.name.replace("_", "-")] = list(value) if isinstance(value, tuple) else value
    return out


def allowed_env(cfg: ServiceConfig, env: Dict[str, str]) -> Dict[str, str]:
    """The part of a Workflow's status.env that the config lets through."""
    return {k: v for k, v in env.items() if cfg.env_allowed(k)}


__all__: List[str] = ["ConfigError", "ServiceConfig", "TABLE", "allowed_env", "config_summary",
                      "parse_config"]
