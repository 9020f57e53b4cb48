"""``copy-offload-server --driver nnf`` as a real process, against the Kubernetes double."""

from __future__ import annotations

import os

import copy_offload.client as co
import pytest
from kube_double import KubeDouble
from nnf_support import NNF_BIN, NnfWorld


@pytest.fixture
def world(tmp_path):
    with KubeDouble() as kube:
        w = NnfWorld(kube, str(tmp_path))
        # the server runs as root here: a $SETPRIV that stays root keeps the test's private paths readable
        w.set_profile("default", setprivCommand="")
        yield w


def test_nnf_server_process_copies_through_kubernetes(world, server_factory):
    kubeconfig = world.kube.write_kubeconfig(os.path.join(world.tmp, "kubeconfig"))
    env = {
        "KUBECONFIG": kubeconfig, "NNF_NODE_NAME": "rabbit-01", "DW_WORKFLOW_NAME": "fluxjob-1234",
        "DW_WORKFLOW_NAMESPACE": "default", "ENVIRONMENT": "test", "FAKE_MPIRUN_LOG": world.mpirun_log,
        "PATH": NNF_BIN + os.pathsep + os.environ.get("PATH", ""),
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    server = server_factory("nnf", env=env)
    src = world.source_tree("e2e")
    with co.Client(**server.client_kwargs()) as client:
        name = client.copy(src, world.lus + "/e2e-out", compute_name="compute-01")
        assert name.startswith("rabbit-01--nnf-copy-offload-node-")
        status = client.status(name, 20)
        assert status.done and status.status == "success" and status.progress == 100
        assert client.list() == []
        with pytest.raises(co.CopyOffloadError) as info:
            client.status("no-dashes", 0)
        assert "request not found" in str(info.value)
    dm = world.dm(name)
    assert dm["status"]["state"] == "Finished" and dm["spec"]["userId"] == 1001
    assert os.path.exists(world.lus + "/e2e-out/rabbit-01-0/e2e/f0")
    server.stop()
    assert "nnf driver: workflow default/fluxjob-1234, node rabbit-01, NNF v1alpha11" in server.log


def test_nnf_server_process_exits_on_missing_environment(server_factory):
    env = {"NNF_NODE_NAME": "", "DW_WORKFLOW_NAME": "", "DW_WORKFLOW_NAMESPACE": "", "ENVIRONMENT": ""}
    with pytest.raises(RuntimeError) as info:
        server_factory("nnf", env=env)
    assert "missing NNF_NODE_NAME, DW_WORKFLOW_NAME, DW_WORKFLOW_NAMESPACE, ENVIRONMENT" in str(info.value)
