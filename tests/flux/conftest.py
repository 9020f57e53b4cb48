"""Real-Flux tier: a ``flux start`` instance with both C plugins and the service module.

Runs only where ``flux`` is on PATH (skipped otherwise). The plugins are built with
``make -C jobtap`` into a temporary directory; the service is loaded the way a site loads it
(flux-modprobe entry from share/flux/modprobe, module found through FLUX_MODULE_PATH) and
talks to tests/kube_double.py, which runs in this pytest process.

Flux's own Python must import ``copy_offload.flux`` and ``kubernetes``. For the repository
checkout, a symlink tree makes ``copy_offload`` importable; if flux's Python lacks
``kubernetes``, the directory this interpreter imports it from is added (same Python
version needed); likewise for the client's dependencies (the job shell's drain helper runs the
client under flux's Python).

Memory-checked mode: ``COPY_OFFLOAD_FLUX_VALGRIND=1`` builds the plugins with ``-O0 -g``, runs
the broker under ``flux start --wrap=valgrind,...`` (memcheck; the jobtap plugin runs inside
the job-manager, a broker module) and every job shell under valgrind too (``[exec] job-shell``
is a wrapper; the shell plugin runs there). Each instance's teardown reads the valgrind logs
and fails on any error report whose stacks name our plugins; nothing of ours is suppressed.
``valgrind`` is found on PATH or through ``COPY_OFFLOAD_VALGRIND``.
``COPY_OFFLOAD_JOBTAP_DIR`` builds the plugins from another copy of ``jobtap/`` (to check that
the mode catches a known bug in an older version).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, List, Optional

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flux_support import memcheck_errors  # noqa: E402
from kube_double import KubeDouble  # noqa: E402

FLUX = shutil.which("flux")
VALGRIND_MODE = os.environ.get("COPY_OFFLOAD_FLUX_VALGRIND", "") not in ("", "0")
VALGRIND = os.environ.get("COPY_OFFLOAD_VALGRIND") or shutil.which("valgrind")
JOBTAP_DIR = os.environ.get("COPY_OFFLOAD_JOBTAP_DIR") or os.path.join(REPO, "jobtap")
# Reports that stop at the first error of ours would hide the rest: no limit, full stacks.
MEMCHECK = ["--tool=memcheck", "--error-limit=no", "--num-callers=40", "--leak-check=no",
            "--track-origins=no", "--trace-children=no"]


def pytest_collection_modifyitems(config: Any, items: List[Any]) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.flux)
            if FLUX is None:
                item.add_marker(pytest.mark.skip(reason="flux is not on PATH"))
            elif VALGRIND_MODE and not VALGRIND:
                item.add_marker(pytest.mark.skip(
                    reason="COPY_OFFLOAD_FLUX_VALGRIND=1 but valgrind is not on PATH "
                    "(or set COPY_OFFLOAD_VALGRIND)"))


def _flux_env() -> Dict[str, str]:
    env = dict(os.environ)
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(FLUX or "flux")))
    pc = os.path.join(prefix, "lib", "pkgconfig")
    if os.path.isdir(pc):
        env["PKG_CONFIG_PATH"] = os.pathsep.join(
            p for p in (env.get("PKG_CONFIG_PATH"), pc) if p)
    return env


@pytest.fixture(scope="session")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``make -C jobtap`` into a temporary build directory; returns it."""
    build = str(tmp_path_factory.mktemp("jobtap-build"))
    cmd = ["make", "-s", "-C", JOBTAP_DIR, f"BUILD={build}"]
    if VALGRIND_MODE:
        cmd.append("CFLAGS=-O0 -g")  # exact lines in the reports
    proc = subprocess.run(cmd, env=_flux_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"make -C jobtap failed:\n{proc.stdout}\n{proc.stderr}"
    return build


def _python_path(tmp: str) -> str:
    """PYTHONPATH that lets flux's Python import copy_offload.flux (and kubernetes)."""
    tree = os.path.join(tmp, "pysite")
    pkg = os.path.join(tree, "copy_offload")
    os.makedirs(pkg, exist_ok=True)
    for name, folder in (("flux", "flux_plugin"), ("client", "client")):
        link = os.path.join(pkg, name)
        if not os.path.exists(link):
            os.symlink(os.path.join(REPO, folder), link)
    parts = [tree]
    # kubernetes for the service; the client's own dependencies for the job shell's helper.
    for name in ("kubernetes", "httpx"):
        probe = subprocess.run([FLUX or "flux", "python", "-c", f"import {name}"],
                               capture_output=True)
        if probe.returncode != 0:
            module = importlib.import_module(name)
            where = os.path.dirname(os.path.dirname(module.__file__ or ""))
            if where not in parts:
                parts.append(where)
    return os.pathsep.join(parts)


class Instance:
    """One ``flux start`` instance; ``flux(...)`` runs a flux command against it."""

    def __init__(self, tmp: str, plugins: str, kube: KubeDouble, *,
                 prepare_timeout: float = 2.0, jobtap_timeout: float = 30.0,
                 module: bool = True, bare: bool = False, config: str = "",
                 rundir: Optional[str] = None) -> None:
        """``module=False``: the service is not loaded; ``bare=True``: no copy-offload piece
        at all (a baseline instance); ``config``: more ``[copy-offload]`` keys, always kept;
        ``rundir``: an existing directory for the broker's sockets, so that an instance
        started after this one with the same ``rundir`` has the same FLUX_URI (a restart)."""
        self.tmp = tmp
        self.kube = kube
        self.plugins = plugins
        self.jobtap_timeout = jobtap_timeout
        self.conf_dir = os.path.join(tmp, "conf")
        os.makedirs(self.conf_dir, exist_ok=True)
        self.kubeconfig = kube.write_kubeconfig(os.path.join(tmp, "kubeconfig"))
        self.bare = bare
        self.config = config
        self.reported = 0
        self.valgrind_dir = os.path.join(tmp, "valgrind")
        self.job_shell = self._shell_wrapper() if VALGRIND_MODE else None
        self.write_config(f"prepare-timeout = {prepare_timeout}\n")
        env = _flux_env()
        env["PYTHONPATH"] = _python_path(tmp)
        env["FLUX_MODULE_PATH_PREPEND"] = os.path.join(REPO, "flux_plugin")
        if module and not bare:  # rc1 loads the service, as the site's modprobe files do
            env["FLUX_MODPROBE_PATH_APPEND"] = os.path.join(REPO, "share", "flux", "modprobe")
        env["FLUX_EXEC_PATH_PREPEND"] = os.path.join(REPO, "flux_plugin")
        shell_path = subprocess.run(["pkg-config", "--variable=fluxshellpluginpath",
                                     "flux-core"], env=env, capture_output=True,
                                    text=True).stdout.strip()
        self.uri_file = os.path.join(tmp, "uri")
        self.log_path = os.path.join(tmp, "broker.log")
        self.pid_file = os.path.join(tmp, "initial.pid")
        script = (f'echo $$ > {self.pid_file}; trap \'kill $!; exit 0\' TERM; '
                  f'echo "$FLUX_URI" > {self.uri_file}.tmp && '
                  f'mv {self.uri_file}.tmp {self.uri_file}; sleep 3600 & wait $!')
        wrap = [f"--test-rundir={rundir}"] if rundir else []
        if VALGRIND_MODE:
            log_file = os.path.join(self.valgrind_dir, "broker.%p.log")
            wrap += [f"--wrap={','.join([VALGRIND or 'valgrind', *MEMCHECK, '--log-file=' + log_file])}"]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [FLUX or "flux", "start", *wrap, "-s1", f"--config-path={self.conf_dir}",
                 f"-Sconf.shell_pluginpath={shell_path if bare else plugins + '/shell:' + shell_path}",
                 "sh", "-c", script],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + (300 if VALGRIND_MODE else 60)
        while not os.path.exists(self.uri_file):
            assert self.proc.poll() is None, f"flux start failed:\n{self.broker_log()}"
            assert time.monotonic() < deadline, "flux start did not come up"
            time.sleep(0.05)
        with open(self.uri_file) as fh:
            env["FLUX_URI"] = fh.read().strip()
        self.env = env

    def _shell_wrapper(self) -> str:
        """A job shell that runs flux-shell under memcheck (the shell plugin runs in it)."""
        os.makedirs(self.valgrind_dir, exist_ok=True)
        real = subprocess.run([FLUX or "flux", "config", "builtin", "shell_path"],
                              capture_output=True, text=True, check=True).stdout.strip()
        path = os.path.join(self.tmp, "job-shell-memcheck")
        args = " ".join([VALGRIND or "valgrind", *MEMCHECK,
                         f"--log-file={self.valgrind_dir}/shell.%p.log"])
        with open(path, "w") as fh:
            fh.write(f'#!/bin/sh\nexec {args} {real} "$@"\n')
        os.chmod(path, 0o755)
        return path

    def memcheck_errors(self) -> List[str]:
        """Every valgrind report of this instance whose stacks name our plugins."""
        found = []
        if os.path.isdir(self.valgrind_dir):
            for name in sorted(os.listdir(self.valgrind_dir)):
                with open(os.path.join(self.valgrind_dir, name), errors="replace") as fh:
                    found += [f"{name}:\n{e}" for e in memcheck_errors(fh.read())]
        return found

    def write_config(self, extra: str = "") -> None:
        """(Re)write the instance's TOML: both plugins' settings plus ``extra`` keys."""
        with open(os.path.join(self.conf_dir, "copy-offload.toml"), "w") as fh:
            if self.job_shell:
                fh.write(f'[exec]\njob-shell = "{self.job_shell}"\n\n')
            if self.bare:
                return
            fh.write(
                "[job-manager]\n"
                f'plugins = [ {{ load = "{self.plugins}/copy-offload.so", '
                f"conf = {{ timeout = {self.jobtap_timeout} }} }} ]\n\n"
                "[copy-offload]\n"
                f'kubeconfig = "{self.kubeconfig}"\n'
                "backoff-min = 0.1\nbackoff-max = 1.0\nrequest-timeout = 5.0\n"
                + self.config + extra)

    def broker_log(self) -> str:
        with open(self.log_path) as fh:
            return fh.read()

    def flux(self, *args: str, check: bool = True, env: Optional[Dict[str, str]] = None,
             timeout: float = 60) -> subprocess.CompletedProcess:
        full = dict(self.env)
        full.update(env or {})
        proc = subprocess.run([FLUX or "flux", *args], env=full, capture_output=True,
                              text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, \
                f"flux {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def stats(self) -> Dict[str, Any]:
        return json.loads(self.flux("copy-offload", "status", "--json").stdout)

    def wait_service(self, timeout: float = 30) -> None:
        """Until the service answers and its Workflow cache is in sync."""
        deadline = time.monotonic() + timeout
        while True:
            proc = self.flux("copy-offload", "status", "--json", check=False)
            if proc.returncode == 0 and json.loads(proc.stdout).get("synced"):
                return
            assert time.monotonic() < deadline, f"service not ready: {proc.stderr}"
            time.sleep(0.1)

    def put_workflow(self, obj: Dict[str, Any]) -> None:
        """Store a Workflow in the double and wait until the service's watch has seen it.

        With flux-coral2 a job's Workflow exists long before RUN; here the test creates it
        just before releasing the job, so it waits for the watch event to avoid a race.
        """
        before = self.stats()["watch"]["events"]
        self.kube.put(obj)
        deadline = time.monotonic() + 30
        while self.stats()["watch"]["events"] <= before:
            assert time.monotonic() < deadline, "the service never saw the Workflow"
            time.sleep(0.05)

    def submit(self, *args: str, dw: Optional[str] = None, hold: bool = False) -> str:
        opts = []
        if dw is not None:
            opts.append(f"--setattr=system.dw={dw}")
        if hold:
            opts.append("--urgency=hold")
        return self.flux("submit", *opts, *args).stdout.strip()

    def decimal(self, jobid: str) -> int:
        return int(self.flux("job", "id", "--to=dec", jobid).stdout.strip())

    def release(self, jobid: str) -> None:
        self.flux("job", "urgency", jobid, "default")

    def attach(self, jobid: str) -> subprocess.CompletedProcess:
        return self.flux("job", "attach", jobid, check=False)

    def eventlog(self, jobid: str) -> List[Dict[str, Any]]:
        out = self.flux("job", "eventlog", "--format=json", jobid).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def stop_clean(self) -> None:
        """Stop; fail unless the shutdown was clean and memcheck found nothing of ours."""
        rc = self.stop()
        log = self.broker_log()
        assert rc == 0 and "runtime failure" not in log, f"unclean shutdown ({rc}):\n{log}"
        assert_memcheck_clean(self)

    def stop(self) -> int:
        """Exit the initial program and wait for a clean shutdown; returns flux start's code."""
        if self.proc.poll() is None:
            with open(self.pid_file) as fh:
                os.kill(int(fh.read().strip()), 15)
            try:
                self.proc.wait(300 if VALGRIND_MODE else 60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def kube() -> Iterator[KubeDouble]:
    with KubeDouble() as double:
        yield double


@pytest.fixture(scope="module")
def instance(request: Any, tmp_path_factory: pytest.TempPathFactory, plugins: str,
             kube: KubeDouble) -> Iterator[Instance]:
    """One instance per test module; a module may set INSTANCE_OPTIONS (Instance keywords)."""
    options = getattr(request.module, "INSTANCE_OPTIONS", {})
    inst = Instance(str(tmp_path_factory.mktemp("flux")), plugins, kube, **options)
    try:
        if options.get("module", True):
            inst.wait_service()
        yield inst
    finally:
        inst.stop_clean()


@pytest.fixture
def start_instance(plugins: str, kube: KubeDouble) -> Iterator[Any]:
    """Start more instances in one test (``start_instance(tmp, **options)``); each is stopped,
    and checked like the module's instance, by the test (``stop_clean``) or at the end."""
    made: List[Instance] = []

    def start(tmp: str, **options: Any) -> Instance:
        made.append(Instance(tmp, plugins, kube, **options))
        return made[-1]

    yield start
    for inst in made:
        if inst.proc.poll() is None:
            inst.stop_clean()


def assert_memcheck_clean(inst: Instance) -> None:
    """Fail on memcheck reports naming our plugins that no earlier check reported."""
    errors = inst.memcheck_errors()[inst.reported:]
    inst.reported += len(errors)
    assert not errors, f"memcheck: {len(errors)} error(s) in our plugins:\n" + \
        "\n\n".join(errors)


@pytest.fixture(autouse=True)
def memcheck_each_test(request: Any) -> Iterator[None]:
    """In the valgrind mode, a test fails on the memcheck errors made while it ran."""
    yield
    inst = request.node.funcargs.get("instance")
    if VALGRIND_MODE and isinstance(inst, Instance):
        assert_memcheck_clean(inst)
