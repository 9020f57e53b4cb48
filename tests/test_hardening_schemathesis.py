"""Schemathesis against docs/openapi.yaml and a live server: the document and the server agree.

Schemathesis generates valid and invalid requests for every documented operation (its coverage,
example and fuzzing phases) and runs its checks on the answers: no 5xx, only documented status
codes and content types, required headers enforced, authentication not ignored. Skipped when
schemathesis is not installed (it is a test extra, not a dependency).

Checks left out or widened, each for a reason of the contract: ``unsupported_method`` is off and
``not_a_server_error`` accepts 501 (the reference answers a wrong method with 501 ``method not
supported``, not 405), and
``positive_data_acceptance`` (a schema-valid copy request can still be refused by the
reference's own validation, e.g. an empty ``computeName``, and a drawn request name is unknown).
"""

from __future__ import annotations

import json
import os

import pytest
import yaml
from copy_offload.client import wire
from hardening_support import assert_clean_log, auth_headers, http_client, start_server

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.config import NotAServerErrorConfig  # noqa: E402
from schemathesis.specs.openapi import checks as openapi_checks  # noqa: E402

DOC_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "openapi.yaml")
EXCLUDED = [openapi_checks.unsupported_method, openapi_checks.positive_data_acceptance]


@pytest.fixture(scope="module")
def server(material):
    proc = start_server(material)
    with http_client(proc) as client:
        client.headers.update(auth_headers(material))
        # One running mock request keeps every POST /shutdown a 409: the server must stay up.
        busy = client.post(wire.TRIAL, content=json.dumps({"computeName": "c", "sourcePath": "/s",
                                                          "destinationPath": "/d"}))
        assert busy.status_code == 200
        yield proc
        for name in client.get(wire.LIST).text.strip().split(","):
            if name:
                client.delete(wire.cancel_path(name))
    alive = proc.process.poll() is None
    proc.stop()
    assert alive, proc.log[-3000:]
    assert_clean_log(proc)


# Loaded at import (schemathesis' lazy ``from_fixture`` uses pytest internals that pytest 9 dropped);
# the live server's URL, CA and token are given per call.
def _contract() -> dict:
    """The document; it says (as Go's encoding/json decides) that every CopyRequest field accepts null."""
    with open(DOC_PATH, encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)
    for prop in doc["components"]["schemas"]["CopyRequest"]["properties"].values():
        assert "null" in prop["type"], prop
    return doc


schema = schemathesis.openapi.from_dict(_contract())
schema.config.generation.update(max_examples=40)
# A wrong method is the reference's 501 "method not supported": a client's mistake, not a crash.
schema.config.checks.not_a_server_error = NotAServerErrorConfig(expected_statuses=["2xx", "3xx", "4xx", "501"])


@schema.parametrize()
def test_openapi_contract(case, server):
    response = case.call_and_validate(base_url=server.url, headers={wire.AUTH_HEADER: "Bearer " + server.material.token},
                                      excluded_checks=EXCLUDED, verify=server.material.cert, timeout=30)
    if case.path == wire.TRIAL and response.status_code == 200:  # a started mock copy: stop it
        name = wire.parse_trial_body(response.text)
        with http_client(server) as client:
            client.delete(wire.cancel_path(name), headers=auth_headers(server.material))
