"""Real Flux: the service's answer to a request the jobtap plugin gave up on goes nowhere.

When the plugin's own timeout ends a job's wait, the service still holds that job's
``copy-offload.prepare`` and answers it later (when the Workflow turns ready, or with ECANCELED
once the job is inactive). flux-core routes a response by its matchtag alone: if the plugin
let the abandoned request's matchtag go back to the job-manager's pool, the late answer would
be taken by whichever RPC got that matchtag next: a KVS commit of an eventlog (the job-manager
exits) or the next job's prepare (that job gets the first job's token). Here the next job's
prepare is out when the late answer comes: its tasks must see their own token, and the
job-manager must stay up.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import List, Tuple

from flux_support import CO_DW, PLAIN_DW, env_of, set_status, token_secret, workflow
from kube_double import DWS

UID = os.getuid()
# The plugin gives up after TIMEOUT seconds; the service would wait a minute. TIMEOUT is also
# the second job's window, from its release to its Workflow turning ready: generous.
TIMEOUT = 10.0
INSTANCE_OPTIONS = {"prepare_timeout": 60.0, "jobtap_timeout": TIMEOUT}


def ready(kube, jobid: int) -> None:
    kube.modify(DWS, "workflows", "default", f"fluxjob-{jobid}", set_status(
        state="PreRun", ready=True,
        workflowToken={"secretName": f"fluxjob-{jobid}-token", "secretNamespace": "default"}))


def released_job(instance, kube, dw: List[str], *command: str) -> Tuple[str, int, str]:
    """A job released with its Workflow in Setup (not ready) and its token Secret stored."""
    job = instance.submit(*command, dw=" ".join(dw), hold=True)
    jobid = instance.decimal(job)
    token = f"jobid={jobid}.nonce={uuid.uuid4().hex}"  # a per-job claim
    kube.put(token_secret(jobid, token=token))
    instance.put_workflow(workflow(jobid, userid=UID, state="Setup", ready=False, dw=dw))
    instance.release(job)
    return job, jobid, token


def test_late_answer_to_an_abandoned_request_reaches_no_other_job(instance, kube, tmp_path):
    go = tmp_path / "go"
    # Job A: a plain dw job (it did not ask for copy-offload), so after the plugin's timeout it
    # runs without variables, and stays running, while the service still holds its request.
    first, first_id, first_token = released_job(
        instance, kube, PLAIN_DW, "sh", "-c", f'while [ ! -e "{go}" ]; do sleep 0.05; done')
    instance.flux("job", "wait-event", "-t", str(TIMEOUT + 120), first, "start")
    assert f"job {first_id} proceeds without copy-offload variables: no answer from the " \
        f"copy-offload service within {TIMEOUT:g}s" in instance.flux("dmesg").stdout
    assert instance.stats()["pending"] == 1  # the service still holds A's request

    # Job B asks for copy-offload; its prepare is out while A's answer comes.
    second, second_id, second_token = released_job(instance, kube, CO_DW, "printenv")
    instance.flux("job", "wait-event", "-t", "60", second, "prolog-start")

    answered = instance.stats()["counts"]["with-token"]
    ready(kube, first_id)  # the service answers A's abandoned request now
    deadline = time.monotonic() + 60
    while instance.stats()["counts"]["with-token"] == answered:
        assert time.monotonic() < deadline, "the service never answered job A's request"
        time.sleep(0.05)
    ready(kube, second_id)
    out = instance.attach(second)
    assert out.returncode == 0, out.stderr
    env = env_of(out.stdout)
    assert env.get("DW_WORKFLOW_TOKEN") == second_token, \
        f"job B's tasks got {env.get('DW_WORKFLOW_TOKEN')!r}; A's token is {first_token!r}"
    assert env["DW_WORKFLOW_NAME"] == f"fluxjob-{second_id}"

    go.touch()
    assert instance.attach(first).returncode == 0
    assert "job-manager" in instance.flux("module", "list").stdout
    assert instance.flux("jobtap", "query", "copy-offload.so").returncode == 0
    assert "runtime failure" not in instance.broker_log()


# flux-core's side of the contract the plugin builds on, checked with flux-core alone: an RPC
# future destroyed before any reply keeps its matchtag reserved until the late reply arrives
# (flux_rpc(3), "premature destruction"), so that reply reaches no other RPC. (A future
# fulfilled by flux_future_then()'s own timeout gives its matchtag back at once: docs/flux.md.)
ABANDONED_RPC = """
import gc, flux
from flux.core.inner import raw
service, client = flux.Flux(), flux.Flux()
service.service_register("late-reply-check").get()
first = client.rpc("late-reply-check.hold", {"n": 1})
first_tag = raw.flux_rpc_get_matchtag(first.pimpl.handle)
del first
gc.collect()
held = service.recv(type_mask=raw.FLUX_MSGTYPE_REQUEST)
second = client.rpc("late-reply-check.hold", {"n": 2})
second_tag = raw.flux_rpc_get_matchtag(second.pimpl.handle)
service.respond(held, {"answer-to": 1})
service.respond(service.recv(type_mask=raw.FLUX_MSGTYPE_REQUEST), {"answer-to": 2})
print(first_tag, second_tag, second.get()["answer-to"])
"""


def test_flux_core_keeps_an_abandoned_rpcs_matchtag_until_its_reply(instance):
    first_tag, second_tag, answer = instance.flux("python", "-c", ABANDONED_RPC).stdout.split()
    assert first_tag != second_tag and answer == "2"
