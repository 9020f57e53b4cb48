"""The Kubernetes API double itself, driven by the real ``kubernetes`` client."""

from __future__ import annotations

import json
import threading
import time

import pytest
from kube_double import DWS, NNF, KubeDouble, seed_nnf
from kubernetes import client, watch

WF = ("dataworkflowservices.github.io", "v1alpha7", "default", "workflows")


@pytest.fixture
def kube():
    with KubeDouble() as double:
        seed_nnf(double, root="/r")
        api = double.api_client()
        double.custom = client.CustomObjectsApi(api)
        double.core = client.CoreV1Api(api)
        yield double
        api.close()


def test_nnf_double_get_list_selectors_and_versions(kube):
    co = kube.custom
    wf = co.get_namespaced_custom_object(*WF, "fluxjob-1234")
    assert wf["status"]["state"] == "PreRun" and wf["apiVersion"] == DWS + "/v1alpha7"
    old = co.get_namespaced_custom_object(DWS, "v1alpha6", "default", "workflows", "fluxjob-1234")
    assert old["apiVersion"] == DWS + "/v1alpha6"
    mounts = co.list_namespaced_custom_object(
        DWS, "v1alpha7", "rabbit-01", "clientmounts",
        label_selector="dataworkflowservices.github.io/workflow.name=fluxjob-1234,nnf.cray.hpe.com/directive_index in (0)",
    )
    assert [m["spec"]["mounts"][0]["mountPath"] for m in mounts["items"]] == [
        "/r/mnt/nnf/3f2c9a1e-5b7d-4e8a-9c61-0d4b2e7f8a15-0/rabbit-01-0"
    ]
    everywhere = co.list_cluster_custom_object(DWS, "v1alpha7", "clientmounts", label_selector="!nope")
    assert len(everywhere["items"]) == 4
    pods = kube.core.list_namespaced_pod(
        "default", label_selector="training.kubeflow.org/job-role=worker", field_selector="spec.nodeName=rabbit-01"
    )
    assert [p.metadata.name for p in pods.items] == ["fluxjob-1234-worker-0"]
    with pytest.raises(client.ApiException) as err:
        co.get_api_resources(NNF, "v1alpha9")
    assert err.value.status == 404
    with pytest.raises(client.ApiException) as err:
        co.get_namespaced_custom_object(*WF, "nope")
    assert err.value.status == 404
    assert json.loads(err.value.body)["message"] == 'workflows.dataworkflowservices.github.io "nope" not found'



def test_nnf_double_create_status_conflict_patch(kube):
    co = kube.custom
    body = {"apiVersion": NNF + "/v1alpha11", "kind": "NnfDataMovement",
            "metadata": {"generateName": "nnf-copy-offload-node-"}, "spec": {"a": 1}, "status": {"state": "X"}}
    dm = co.create_namespaced_custom_object(NNF, "v1alpha11", "rabbit-01", "nnfdatamovements", body)
    name = dm["metadata"]["name"]
    assert name.startswith("nnf-copy-offload-node-") and len(name) == len("nnf-copy-offload-node-") + 5
    assert "status" not in dm and dm["metadata"]["uid"] and dm["metadata"]["creationTimestamp"]
    dm["status"] = {"state": "Running"}
    dm["spec"]["a"] = 2  # ignored by a status write
    new = co.replace_namespaced_custom_object_status(NNF, "v1alpha11", "rabbit-01", "nnfdatamovements", name, dm)
    assert new["status"] == {"state": "Running"} and new["spec"] == {"a": 1}
    with pytest.raises(client.ApiException) as err:  # dm carries the old resourceVersion
        co.replace_namespaced_custom_object_status(NNF, "v1alpha11", "rabbit-01", "nnfdatamovements", name, dm)
    assert err.value.status == 409 and "the object has been modified" in json.loads(err.value.body)["message"]
    patched = co.patch_namespaced_custom_object(NNF, "v1alpha11", "rabbit-01", "nnfdatamovements", name, {"spec": {"cancel": True}})
    assert patched["spec"] == {"a": 1, "cancel": True} and patched["status"] == {"state": "Running"}
    with pytest.raises(client.ApiException) as err:
        co.create_namespaced_custom_object(NNF, "v1alpha11", "rabbit-01", "nnfdatamovements", {"metadata": {"name": name}})
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"
    assert kube.writes(plural="nnfdatamovements") == 3
    assert kube.count(plural="nnfdatamovements", verb="update", status=409) == 1


def test_nnf_double_watch_and_expired(kube):
    co = kube.custom
    start = kube.resource_version
    events = []

    def run():
        for ev in watch.Watch().stream(co.list_namespaced_custom_object, *WF, resource_version=str(start), timeout_seconds=3):
            events.append((ev["type"], ev["object"]["status"]["state"]))
            if len(events) == 2:
                break

    thread = threading.Thread(target=run)
    thread.start()  # the watch replays from `start`, whenever it connects: no need to wait for it
    co.patch_namespaced_custom_object(*WF, "fluxjob-1234", {"status": {"state": "PostRun"}})
    kube.modify(DWS, "workflows", "default", "fluxjob-1234", lambda o: o["status"].update(state="DataOut"))
    thread.join(5)
    assert events == [("MODIFIED", "PostRun"), ("MODIFIED", "DataOut")]
    kube.compact()
    with pytest.raises(client.ApiException) as err:
        for _ in watch.Watch().stream(co.list_namespaced_custom_object, *WF, resource_version=str(start), timeout_seconds=2):
            pass
    assert err.value.status == 410


def test_nnf_double_faults(kube):
    co = kube.custom
    kube.fail(503, count=2, method="GET", path="/workflows/")
    for _ in range(2):
        with pytest.raises(client.ApiException) as err:
            co.get_namespaced_custom_object(*WF, "fluxjob-1234")
        assert err.value.status == 503
    assert co.get_namespaced_custom_object(*WF, "fluxjob-1234")["metadata"]["name"] == "fluxjob-1234"
    no_retry = client.CustomObjectsApi(kube.api_client(retries=0))
    kube.delay(3.0)
    began = time.monotonic()
    with pytest.raises(Exception, match="[Tt]imed? ?out"):
        no_retry.get_namespaced_custom_object(*WF, "fluxjob-1234", _request_timeout=0.2)
    assert time.monotonic() - began < 2.5  # the client's 0.2 s, not the double's 3 s
    kube.reset(method="GET")
    with pytest.raises(Exception, match="[Cc]onnection|reset|aborted"):
        no_retry.get_namespaced_custom_object(*WF, "fluxjob-1234")
    kube.refuse_connections()
    with pytest.raises(Exception, match="[Rr]efused"):
        no_retry.get_namespaced_custom_object(*WF, "fluxjob-1234")
    kube.accept_connections()
    assert no_retry.get_namespaced_custom_object(*WF, "fluxjob-1234")["kind"] == "Workflow"
    no_retry.api_client.close()
    assert kube.count(verb="get", fault="reset") == 1
    assert kube.count(verb="get", plural="workflows", status=503) == 2


def test_nnf_double_delete_finalizers_json_patch_and_watch_control(kube):
    co, core = kube.custom, kube.core
    core.create_namespaced_secret("default", {"metadata": {"name": "s", "finalizers": ["keep"]}, "data": {"k": "dg=="}})
    core.delete_namespaced_secret("s", "default")
    held = core.read_namespaced_secret("s", "default")
    assert held.metadata.deletion_timestamp is not None  # finalizer holds it
    core.patch_namespaced_secret("s", "default", [{"op": "remove", "path": "/metadata/finalizers"}])
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_secret("s", "default")
    assert err.value.status == 404
    # a watch started from now sees the ADDED replay only for rv 0, and close_watches() ends it
    seen = []

    def run():
        for ev in watch.Watch().stream(co.list_namespaced_custom_object, *WF, resource_version="0", timeout_seconds=5):
            seen.append(ev["type"])

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:  # connected once its replay has arrived
        time.sleep(0.01)
    kube.close_watches()
    thread.join(4)  # the stream itself would run 5 s
    assert seen == ["ADDED"] and not thread.is_alive()
    kube.compact()
    kube.watch_gone_as_http = True
    with pytest.raises(client.ApiException) as err:
        for _ in watch.Watch().stream(co.list_namespaced_custom_object, *WF, resource_version="2", timeout_seconds=2):
            pass
    assert err.value.status == 410
    assert kube.count(verb="watch", status=410) == 1
