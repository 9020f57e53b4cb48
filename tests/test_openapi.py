"""docs/openapi.yaml: a valid OpenAPI 3.1 document that matches the wire module and a live server.

The live part drives a real ``copy-offload-server`` (TLS, tokens) through every route and
every response code a client can provoke, and checks each answer against the document: the
status code is documented for that operation, the media type is listed, and the body
validates against the schema (JSON for ``/status``, the text patterns and constants for the
rest). ``additionalProperties: false`` on the status schema means an undocumented status key
fails here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import time

import httpx
import pytest
import yaml
from copy_offload.client import wire

DOC_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "openapi.yaml")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@pytest.fixture(scope="module")
def doc():
    with open(DOC_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def resolve(doc, node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            node = node[part]
    return node


# --------------------------------------------------------------------------- the document itself


def test_document_is_valid_openapi():
    validator = pytest.importorskip("openapi_spec_validator")
    from openapi_spec_validator.readers import read_from_filename

    spec, _ = read_from_filename(DOC_PATH)
    assert spec["openapi"].startswith("3.")
    validator.validate(spec)


def test_every_wire_route_is_documented_with_its_method(doc):
    documented = {}
    for path, item in doc["paths"].items():
        ops = [m for m in METHODS if m in item]
        assert len(ops) == 1, path  # the reference serves one method per route
        documented[path] = ops[0].upper()
    expected = {}
    for route, method in wire.METHODS.items():
        path = route + "{name}" if route.endswith("/") else route
        expected[path] = method
    assert documented == expected


def test_documented_texts_are_the_wire_texts(doc):
    params = doc["components"]["parameters"]
    assert params["AcceptsVersion"]["name"] == wire.VERSION_HEADER
    assert params["AcceptsVersion"]["schema"]["const"] == wire.API_VERSION
    responses = doc["components"]["responses"]
    text = lambda r: r["content"]["text/plain"]["schema"]["const"]  # noqa: E731
    assert text(responses["BadVersion"]) == wire.ERR_VERSION + "\n"
    assert text(responses["MethodNotSupported"]) == wire.ERR_METHOD + "\n"
    hello = doc["paths"][wire.HELLO]["get"]["responses"]["200"]
    assert hello["content"]["text/plain"]["schema"]["const"] == wire.HELLO_BODY
    shutdown = doc["paths"][wire.SHUTDOWN]["post"]["responses"]["200"]
    assert shutdown["content"]["text/plain"]["schema"]["const"] == wire.SHUTDOWN_BODY
    for name in ("ERR_COMPUTE", "ERR_SOURCE", "ERR_DEST", "ERR_SLOTS", "ERR_MAX_SLOTS", "ERR_DECODE_PREFIX"):
        assert getattr(wire, name).strip() in doc["paths"][wire.TRIAL]["post"]["responses"]["400"]["description"]
    assert wire.ERR_SHUTDOWN_BUSY in json.dumps(doc["paths"][wire.SHUTDOWN])
    assert wire.ERR_CANCEL_PREFIX + wire.ERR_REQUEST_NOT_FOUND in json.dumps(doc["paths"]["/cancel/{name}"])
    assert doc["components"]["securitySchemes"]["bearerToken"] == {
        **doc["components"]["securitySchemes"]["bearerToken"], "type": "http", "scheme": "bearer",
    }


def test_copy_request_schema_has_the_wire_fields(doc):
    schema = doc["components"]["schemas"]["CopyRequest"]
    assert set(schema["properties"]) == set(wire.CopyRequest().__dict__)
    kinds = {str: "string", bool: "boolean", int: "integer"}
    for field, value in wire.CopyRequest().__dict__.items():
        assert schema["properties"][field]["type"] == [kinds[type(value)], "null"], field


def test_status_examples_validate(doc):
    jsonschema = pytest.importorskip("jsonschema")
    examples = doc["paths"]["/status/{name}"]["get"]["responses"]["200"]["content"]["text/plain"]["examples"]
    for example in examples.values():
        _validator(doc, "#/components/schemas/Status", jsonschema).validate(json.loads(example["value"]))


# --------------------------------------------------------------------------- live checks


def _validator(doc, pointer, jsonschema):
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource("urn:openapi", Resource.from_contents(doc, default_specification=DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": "urn:openapi" + pointer}, registry=registry)


class Checker:
    """Sends requests and checks each answer against the document."""

    def __init__(self, doc, server, jsonschema):
        self.doc = doc
        self.jsonschema = jsonschema
        self.client = httpx.Client(base_url=server.url, verify=server.material.context() if server.tls else False, timeout=30)
        self.token = server.material.token
        self.seen = set()

    def close(self):
        self.client.close()

    def send(self, method, path, *, version="1.0", token="good", body=None, expect=None):
        headers = {}
        if version is not None:
            headers[wire.VERSION_HEADER] = version
        if token == "good":
            headers[wire.AUTH_HEADER] = "Bearer " + self.token
        elif token is not None:
            headers[wire.AUTH_HEADER] = token
        response = self.client.request(method, path, headers=headers, content=body)
        if expect is not None:
            assert response.status_code == expect, (method, path, response.status_code, response.text)
        self.check(method, path, response)
        return response

    def check(self, method, path, response):
        template, item = self._path_item(path.split("?")[0])
        code = str(response.status_code)
        op = item.get(method.lower())
        if op is None:  # a method the route does not take
            assert code == "501", (method, path, code)
            spec = resolve(self.doc, self.doc["components"]["responses"]["MethodNotSupported"])
        else:
            assert code in op["responses"], "undocumented %s for %s %s: %r" % (code, method, template, response.text)
            spec = resolve(self.doc, op["responses"][code])
        self.seen.add((template, method.upper(), code))
        content = spec.get("content")
        if not content:
            assert response.content == b"", (method, path, response.content)
            return
        if response.content == b"" and "content-type" not in response.headers:
            return  # an empty 200 (list, cancel): no Content-Type, as Go sends one only with bytes
        media = response.headers["content-type"].split(";")[0].strip()
        assert media in content, (media, list(content))
        media_spec = content[media]
        schema = media_spec["schema"]
        instance = json.loads(response.text) if media_spec.get("x-body-format") == "json" else response.text
        if "$ref" in schema:
            validator = _validator(self.doc, schema["$ref"], self.jsonschema)
        else:  # an inline text schema (const or pattern)
            validator = self.jsonschema.Draft202012Validator(schema)
        errors = sorted(validator.iter_errors(instance), key=str)
        assert not errors, "%s %s -> %s: %s\nbody: %r" % (method, path, code, errors[0].message, response.text)

    def _path_item(self, path):
        for template, item in self.doc["paths"].items():
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(pattern, path):
                return template, item
        raise AssertionError("path %s is not in the document" % path)


@pytest.fixture
def checker_for(doc):
    jsonschema = pytest.importorskip("jsonschema")
    made = []

    def make(server):
        checker = Checker(doc, server, jsonschema)
        made.append(checker)
        return checker

    yield make
    for checker in made:
        checker.close()


def test_live_mock_server_matches_the_document(server_factory, checker_for):
    server = server_factory("mock")
    c = checker_for(server)
    trial = json.dumps({"computeName": "compute-01", "sourcePath": "/a", "destinationPath": "/b"}).encode()

    c.send("GET", "/hello", expect=200)
    c.send("GET", "/hello", token=None, expect=401)
    c.send("GET", "/hello", token="Bearer not.a.token", expect=401)
    c.send("GET", "/hello", version=None, expect=406)
    c.send("GET", "/hello", version="0.0", expect=406)
    c.send("POST", "/hello", expect=501)

    c.send("GET", "/list", expect=200)  # empty
    name = c.send("POST", "/trial", body=trial, expect=200).text.strip().partition("=")[2]
    c.send("POST", "/trial", body=b"{}", expect=400)
    c.send("POST", "/trial", body=b"", expect=400)
    c.send("POST", "/trial", body=b'{"computeName": 1}', expect=400)
    c.send("POST", "/trial", body=b'{"computeName":"c","sourcePath":"/a","destinationPath":"/b","slots":-2}', expect=400)
    c.send("POST", "/trial", body=b"x" * ((1 << 20) + 1), expect=413)
    c.send("GET", "/trial", expect=501)

    assert c.send("GET", "/list", expect=200).text == name + "\n"
    c.send("PUT", "/list", expect=501)

    c.send("GET", "/status/%s?maxWaitSecs=0" % name, expect=200)
    c.send("GET", "/status/%s?maxWaitSecs=300" % name, expect=200)  # mock mode never waits
    c.send("GET", "/status/no-such-request?maxWaitSecs=0", expect=404)
    c.send("GET", "/status/%s" % name, expect=400)
    c.send("GET", "/status/%s?maxWaitSecs=0&extra=1" % name, expect=400)
    c.send("GET", "/status/%s?maxWaitSecs=soon" % name, expect=400)
    c.send("DELETE", "/status/%s" % name, expect=501)

    c.send("POST", "/shutdown", expect=409)
    c.send("GET", "/shutdown", expect=501)
    c.send("DELETE", "/cancel/no-such-request", expect=404)
    c.send("GET", "/cancel/%s" % name, expect=501)
    c.send("DELETE", "/cancel/%s" % name, expect=200)
    deadline = time.monotonic() + 5
    while c.send("GET", "/list", expect=200).text and time.monotonic() < deadline:
        time.sleep(0.05)

    c.send("POST", "/trial", body=json.dumps({"computeName": "c", "sourcePath": "/a", "destinationPath": "/b", "dryrun": True}).encode(), expect=200)
    deadline = time.monotonic() + 10
    while c.send("GET", "/list", expect=200).text and time.monotonic() < deadline:
        time.sleep(0.1)
    c.send("POST", "/shutdown", body=b'{"message": "shutdown"}', expect=200)
    assert server.wait(10) == 0

    # Every operation was seen with its 200 and with its 501.
    for template, item in c.doc["paths"].items():
        method = next(m for m in METHODS if m in item).upper()
        assert (template, method, "200") in c.seen, template
        assert any(t == template and code == "501" for t, _m, code in c.seen), template


@pytest.mark.skipif(
    importlib.util.find_spec("copy_offload.server.local.driver") is None, reason="the local driver is not there yet"
)
def test_live_local_server_status_documents(server_factory, checker_for, tmp_path):
    """Real copies: running and completed statuses with the progress counters validate."""
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    for i in range(20):
        (root / "src" / ("f%02d" % i)).write_bytes(os.urandom(4096 * (i + 1)))
    server = server_factory("local", extra=["--allow-root", str(root), "--state-dir", str(tmp_path / "state")])
    c = checker_for(server)
    body = {"computeName": "compute-01", "sourcePath": str(root / "src"), "destinationPath": str(root / "dst")}
    name = c.send("POST", "/trial", body=json.dumps(body).encode(), expect=200).text.strip().partition("=")[2]
    c.send("GET", "/status/%s?maxWaitSecs=0" % name, expect=200)
    done = c.send("GET", "/status/%s?maxWaitSecs=-1" % name, expect=200).json()
    assert done["state"] == "completed" and done["status"] == "success", done
    outside = dict(body, sourcePath="/etc", destinationPath=str(root / "x"))
    c.send("POST", "/trial", body=json.dumps(outside).encode(), expect=400)
    dry = dict(body, destinationPath=str(root / "dry"), dryrun=True)
    name = c.send("POST", "/trial", body=json.dumps(dry).encode(), expect=200).text.strip().partition("=")[2]
    c.send("GET", "/status/%s?maxWaitSecs=-1" % name, expect=200)
    c.send("DELETE", "/cancel/%s" % name)  # 200 or 404 once done: both documented
