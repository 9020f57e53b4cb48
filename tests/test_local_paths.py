"""Confinement of request paths to the --allow-root trees: escapes refused with a clear 400."""

from __future__ import annotations

import os

import pytest
from copy_offload.server.app import http_code
from copy_offload.server.drivers.errors import DriverError
from copy_offload.server.local.paths import ERR_NO_ROOTS, Confinement


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "file").write_text("x")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("s")
    os.symlink(tmp_path / "outside", root / "escape")  # a symlink leading out
    os.symlink("data/sub", root / "inner-link")  # a symlink staying in
    os.symlink(tmp_path / "outside" / "new", root / "dangling-out")
    return tmp_path, root, Confinement([str(root)])


def refused(call, *texts):
    with pytest.raises(DriverError) as info:
        call()
    assert http_code(info.value) == 400
    for text in texts:
        assert text in info.value.message, info.value.message
    return info.value.message


def test_paths_inside_resolve(tree):
    tmp, root, conf = tree
    paths = conf.request(str(root / "data" / "file"), str(root / "new" / "dir" / "copy"))
    assert (paths.source, paths.destination) == (str(root / "data" / "file"), str(root / "new" / "dir" / "copy"))
    assert conf.source(str(root / "inner-link")) == str(root / "data" / "sub")
    assert conf.destination(str(root / "inner-link" / "x")) == str(root / "data" / "sub" / "x")
    assert conf.source(str(root / "data" / ".." / "data" / "file")) == str(root / "data" / "file")
    assert conf.source(str(root)) == str(root)


@pytest.mark.parametrize("rel", ["../outside/secret", "data/../../outside/secret", "escape/secret", "escape"])
def test_source_escapes_are_refused(tree, rel):
    tmp, root, conf = tree
    text = refused(lambda: conf.source(str(root / rel)), "source path", "outside the allowed roots", str(root))
    assert str(root / rel) in text


@pytest.mark.parametrize("rel", ["../outside/new", "escape/new", "escape", "dangling-out", "data/../../x",
                                 "nonexistent/../../outside/y"])
def test_destination_escapes_are_refused(tree, rel):
    tmp, root, conf = tree
    refused(lambda: conf.destination(str(root / rel)), "destination path", "outside the allowed roots")


@pytest.mark.parametrize("rel", ["escape/secret", "escape", "dangling-out"])
def test_refusals_never_say_where_a_symlink_points(tree, rel):
    tmp, root, conf = tree
    check = conf.destination if rel == "dangling-out" else conf.source
    text = refused(lambda: check(str(root / rel)), "resolves outside the allowed roots")
    assert str(tmp / "outside") not in text and "resolves to" not in text


def test_outside_paths_reveal_nothing_about_existence(tree):
    tmp, root, conf = tree
    a = refused(lambda: conf.source(str(tmp / "outside" / "secret")), "outside the allowed roots")
    b = refused(lambda: conf.source(str(tmp / "outside" / "nope")), "outside the allowed roots")
    assert "exist" not in a + b


def test_missing_source_relative_paths_and_nul(tree):
    tmp, root, conf = tree
    refused(lambda: conf.source(str(root / "missing")), "does not exist")
    refused(lambda: conf.source("data/file"), "must be absolute")
    refused(lambda: conf.destination("x"), "must be absolute")
    refused(lambda: conf.source(str(root / "data") + "\0x"), "NUL")


def test_prefix_of_a_root_name_is_not_inside(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root-other").mkdir()
    (tmp_path / "root-other" / "f").write_text("x")
    conf = Confinement([str(tmp_path / "root")])
    refused(lambda: conf.source(str(tmp_path / "root-other" / "f")), "outside the allowed roots")


def test_roots_are_resolved_and_several_allowed(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "f").write_text("x")
    os.symlink(tmp_path / "b", tmp_path / "b-link")
    conf = Confinement([str(tmp_path / "a"), str(tmp_path / "b-link")])
    assert conf.roots == (str(tmp_path / "a"), str(tmp_path / "b"))
    assert conf.source(str(tmp_path / "b" / "f")) == str(tmp_path / "b" / "f")


def test_no_roots_refuses_everything(tmp_path):
    conf = Confinement([])
    assert refused(lambda: conf.source(str(tmp_path)), ERR_NO_ROOTS)
    assert refused(lambda: conf.destination(str(tmp_path)), ERR_NO_ROOTS)
