"""Shared fixtures: TLS material and tokens, and real server processes on loopback."""

from __future__ import annotations

import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest
from hypothesis import settings
from support import Material, ServerProcess, server_args

# CI runs the property-based tests on a fixed sequence of examples, so a red run can be replayed;
# developers' runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return Material(str(tmp_path_factory.mktemp("material")))


@pytest.fixture
def server_factory(material: Material) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers: ``server_factory(driver="mock", tls=True, token=True, extra=[...], env={...})``."""
    started: List[ServerProcess] = []

    def start(driver: str = "mock", *, tls: bool = True, token: bool = True, extra: Sequence[str] = (),
              env: Optional[Dict[str, str]] = None) -> ServerProcess:
        environment = dict(os.environ)
        environment.update(env or {})
        args = server_args(material, tls=tls, token=token, extra=["--driver", driver, *extra])
        server = ServerProcess(args=args, env=environment, tls=tls, material=material).start()
        started.append(server)
        return server

    yield start
    from hardening_support import assert_no_secrets

    for server in started:
        server.stop()
    for server in started:
        assert_no_secrets(server)  # no test's server may log a token or a key


@pytest.fixture
def mock_server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """The reference mock mode with TLS and a token, as the reference e2e runs it."""
    return server_factory("mock")


@pytest.fixture
def kube():
    """A fresh Kubernetes API double (tests/kube_double.py) that the real client talks to."""
    from kube_double import KubeDouble

    with KubeDouble() as double:
        yield double


@pytest.fixture
def world(tmp_path, monkeypatch):
    """The NNF scenario: the double seeded as spec/nnf-resources.md, fake mpirun/dcp on PATH."""
    from kube_double import KubeDouble
    from nnf_support import NnfWorld, env_for_tests

    with KubeDouble() as double:
        w = NnfWorld(double, str(tmp_path))
        env_for_tests(monkeypatch, w)
        yield w


@pytest.fixture
def service(kube, tmp_path):
    """Make Flux copy-offload services (flux_support.Service) against ``kube``; closed at the end."""
    from flux_support import Service

    made = []

    def make(**cfg):
        made.append(Service(kube, tmp_path, **cfg))
        return made[-1]

    yield make
    for svc in made:
        svc.close()
