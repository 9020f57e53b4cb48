"""Hostile paths against one live local-driver server: confined, no injection, no 5xx.

The server may read and write only below its ``--allow-root``. Beside the root sits an
``outside`` tree with a secret; inside the root, symlinks point out of it. Hypothesis sends
copy requests with random and hostile source and destination paths (``..``, symlinks, NUL,
newlines, relative, very long, ``/proc``, devices) and profiles; every answer is a 200 or a
400 with a text, every started copy ends, and nothing outside the root changes or leaks.
"""

from __future__ import annotations

import json
import os
import time
from typing import Dict

import httpx
import pytest
from copy_offload.client import wire
from hardening_support import assert_clean_log, auth_headers, http_client, leaked, start_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("copy_offload.server.local.driver")

EXAMPLES = settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
PROFILES = """
[profiles.plaincp]
command = "cp -r $SRC $DEST"
"""
SECRET = b"outside secret 0123456789\n"


def snapshot(top: str) -> Dict[str, bytes]:
    """Every entry below ``top`` with its content (files) or link target."""
    out = {}
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(base, name)
            if os.path.islink(path):
                out[path] = b"-> " + os.readlink(path).encode()
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    out[path] = handle.read()
            else:
                out[path] = b"<dir>" if os.path.isdir(path) else b"<special>"
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, material):
    top = tmp_path_factory.mktemp("local-hostile")
    root, outside = top / "root", top / "outside"
    (root / "src" / "tree" / "sub").mkdir(parents=True)
    (root / "dst").mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(SECRET)
    (root / "src" / "file").write_bytes(b"hello\n")
    (root / "src" / "tree" / "sub" / "f").write_bytes(b"x" * 5000)
    (root / "src" / "x; touch PWNED").write_bytes(b"name with a shell command\n")
    (root / "src" / "$(touch PWNED2)").write_bytes(b"another\n")
    os.symlink(outside, root / "src" / "out-dir")
    os.symlink(outside / "secret", root / "src" / "out-file")
    os.symlink(outside, root / "dst" / "out-dir")
    os.symlink("../../outside", root / "dst" / "rel-out")
    os.mkfifo(root / "src" / "fifo")
    (top / "profiles.toml").write_text(PROFILES)
    server = start_server(material, "local", ["--allow-root", str(root), "--state-dir", str(top / "state"),
                                               "--profiles", str(top / "profiles.toml")])
    outside_before = snapshot(str(outside))
    yield {"top": str(top), "root": str(root), "outside": str(outside), "server": server}
    alive = server.process.poll() is None
    server.stop()
    assert alive, server.log[-3000:]
    assert snapshot(str(outside)) == outside_before
    assert sorted(os.listdir(top)) == ["outside", "profiles.toml", "root", "state"]
    assert not [p for p in snapshot(str(top)) if "PWNED" in os.path.basename(p) and "touch" not in p]
    assert SECRET.decode().strip() not in server.log
    assert_clean_log(server)


@pytest.fixture(scope="module")
def http(world):
    with http_client(world["server"]) as client:
        client.headers.update(auth_headers(world["server"].material))
        yield client


def copy(http: httpx.Client, source: str, destination: str, **extra) -> httpx.Response:
    body = {"computeName": "c", "sourcePath": source, "destinationPath": destination, **extra}
    return http.post(wire.TRIAL, content=json.dumps(body))


def finish(http: httpx.Client, response: httpx.Response) -> dict:
    """Wait for a started copy to end (cancelling it after 20 s); its final status."""
    name = wire.parse_trial_body(response.text)
    final = http.get(wire.status_path(name, 20), timeout=60)
    doc = json.loads(final.text)
    if doc["state"] != wire.STATE_COMPLETED:
        assert http.delete(wire.cancel_path(name)).status_code == 200
        doc = json.loads(http.get(wire.status_path(name, 10), timeout=30).text)
    assert doc["state"] == wire.STATE_COMPLETED, doc
    return doc


def check_refusal(response: httpx.Response, world) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    text = response.text
    assert text.endswith("\n") and text.strip(), repr(text)
    assert response.headers["content-type"].startswith("text/plain")
    assert not leaked(text, world["server"].material)
    assert SECRET.decode().strip() not in text


# --------------------------------------------------------------------------- random paths

component = st.sampled_from(["src", "dst", "file", "tree", "sub", "f", "..", ".", "", "out-dir", "out-file",
                             "rel-out", "fifo", "new", "x; touch PWNED", "$(touch PWNED2)", "secret", "outside",
                             "\u00e9t\u00e9", "a\nb", "a\x00b", "*", "~", "-rf", "--help"])
# Over-long names ("a" * 300) join the strategy once test_overlong_names_are_a_400 passes.


def path_strategy(root: str) -> st.SearchStrategy[str]:
    below = st.lists(component, min_size=0, max_size=6).map(lambda parts: root + "/" + "/".join(parts))
    return st.one_of(
        below, below, below,
        st.sampled_from(["/etc/passwd", "/proc/self/environ", "/dev/zero", "/dev/null", "/", "", "relative/path",
                         "~/x", root, root + "/", root + "/../outside/secret", root + "/src/../../outside",
                         "//" + root.lstrip("/") + "/src/file", root + "/src/file/", "/tmp", root + "\x00"]),
        st.text(max_size=40),
    )


@given(data=st.data())
@EXAMPLES
def test_random_paths_stay_confined(world, http, data):
    root = world["root"]
    good_source = st.sampled_from(["src/file", "src/tree", "src/tree/sub/f", "src/x; touch PWNED", "src/",
                                   "src/$(touch PWNED2)", "src/tree/sub/../sub"]).map(lambda p: root + "/" + p)
    good_destination = st.builds(lambda part, n: "%s/dst/%s-%d" % (root, part, n),
                                 st.sampled_from(["new", "néw", "a b", "-rf", "x; touch PWNED"]),
                                 st.integers(min_value=0, max_value=10**9))
    source = data.draw(good_source | path_strategy(root))
    destination = data.draw(good_destination | path_strategy(root))
    extra = data.draw(st.fixed_dictionaries({}, optional={
        "dryrun": st.booleans(), "dmProfile": st.sampled_from(["", "default", "plaincp", "nope", "a\nb"]),
        "slots": st.integers(min_value=-1, max_value=64), "maxSlots": st.integers(min_value=-1, max_value=64),
        "dcpOptions": st.sampled_from(["; touch PWNED", "$(touch PWNED)", "--help"]),
        "mpirunOptions": st.sampled_from(["; touch PWNED", "`touch PWNED`"]),
    }))
    response = copy(http, source, destination, **extra)
    if response.status_code == 200:
        finish(http, response)
    else:
        check_refusal(response, world)


# --------------------------------------------------------------------------- explicit hostile cases


@pytest.mark.parametrize("source, destination", [
    ("{root}/src/out-dir/secret", "{root}/dst/a"),
    ("{root}/src/out-file", "{root}/dst/b"),
    ("{root}/src/../../outside/secret", "{root}/dst/c"),
    ("{root}/src/file", "{root}/dst/out-dir/stolen"),
    ("{root}/src/file", "{root}/dst/rel-out/stolen"),
    ("{root}/src/file", "{root}/dst/../../outside/stolen"),
    ("{root}/src/file", "{root}/dst/out-dir"),
    ("/proc/self/environ", "{root}/dst/env"),
    ("{root}/src/file", "relative"),
])
def test_escapes_are_refused(world, http, source, destination):
    response = copy(http, source.format(root=world["root"]), destination.format(root=world["root"]))
    check_refusal(response, world)
    assert "outside the allowed roots" in response.text or "must be absolute" in response.text, response.text


@pytest.mark.parametrize("source, destination", [
    ("{root}/src/file", "{root}/dst/" + "b" * 300 + "/x"),
    ("{root}/src/file", "{root}/src/" + "b" * 5000),
])
def test_overlong_names_are_a_400(tmp_path, material, source, destination):
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "file").write_bytes(b"x")
    server = start_server(material, "local", ["--allow-root", str(root), "--state-dir", str(tmp_path / "state")])
    try:
        with http_client(server) as client:
            client.headers.update(auth_headers(material))
            response = copy(client, source.format(root=root), destination.format(root=root))
    finally:
        server.stop()
    check_refusal(response, {"server": server})
    assert_clean_log(server)


@pytest.mark.parametrize("profile", ["", "plaincp"])
@pytest.mark.parametrize("name", ["x; touch PWNED", "$(touch PWNED2)"])
def test_no_shell_through_paths(world, http, profile, name):
    root = world["root"]
    destination = os.path.join(root, "dst", "copied-%s-%d" % (profile or "engine", len(name)))
    response = copy(http, os.path.join(root, "src", name), destination, dmProfile=profile,
                    dcpOptions="; touch PWNED3", mpirunOptions="$(touch PWNED4)")
    assert response.status_code == 200, response.text
    doc = finish(http, response)
    assert doc["status"] == wire.STATUS_SUCCESS, doc
    with open(os.path.join(root, "src", name), "rb") as a, open(destination, "rb") as b:
        assert a.read() == b.read()
    for base, _, files in os.walk(world["top"]):
        assert not [f for f in files if f.startswith("PWNED")], base


def test_fifo_source_cannot_hang_the_server(world, http):
    """A FIFO in the root: the copy fails or is cancelled, and the server keeps answering."""
    response = copy(http, os.path.join(world["root"], "src", "fifo"), os.path.join(world["root"], "dst", "fifo-copy"))
    if response.status_code == 400:
        check_refusal(response, world)
        return
    assert response.status_code == 200, response.text
    name = wire.parse_trial_body(response.text)
    started = time.monotonic()
    doc = json.loads(http.get(wire.status_path(name, 3), timeout=30).text)
    if doc["state"] != wire.STATE_COMPLETED:
        assert http.delete(wire.cancel_path(name)).status_code == 200
        doc = json.loads(http.get(wire.status_path(name, 5), timeout=30).text)
    assert doc["state"] == wire.STATE_COMPLETED, doc
    assert time.monotonic() - started < 15
    assert http.get(wire.HELLO).status_code == 200
    assert not os.path.exists(os.path.join(world["root"], "dst", "fifo-copy")) or doc["status"] == "success"
