"""Opening beneath a root without following symlinks, both ways: openat2 and per component."""

from __future__ import annotations

import errno
import os

import pytest
from copy_offload.server.local import beneath, engine


@pytest.fixture(params=["openat2", "per-component"])
def mode(request, monkeypatch):
    """Each test runs with openat2 (if the kernel has it) and with the per-component walk."""
    if request.param == "per-component":
        monkeypatch.setattr(beneath, "_openat2", False)
    else:
        monkeypatch.setattr(beneath, "_openat2", None)
        monkeypatch.delenv("COPY_OFFLOAD_NO_OPENAT2", raising=False)
        if not beneath._load_openat2():
            pytest.skip("openat2 is not available on this kernel")
    return request.param


@pytest.fixture
def tree(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("inside")
    (outside / "b").mkdir(parents=True)
    (outside / "b" / "f").write_text("outside")
    os.symlink(outside, root / "link")
    os.symlink(outside / "b", root / "a" / "blink")
    opened = beneath.Tree.open(str(root))
    yield opened
    opened.close()


def test_a_plain_path_opens(tree, mode):
    fd = tree.opendir("a/b")
    try:
        assert os.listdir(fd) == ["f"]
    finally:
        os.close(fd)
    assert tree.lstat("a/b/f").st_size == 6
    assert tree.lstat("a/nothing") is None


@pytest.mark.parametrize("rel", ["link", "link/b", "a/blink", "/link/b", "a/../link/b"])
def test_symlinks_and_escapes_are_refused(tree, mode, rel):
    with pytest.raises(OSError) as info:
        os.close(tree.opendir(rel))
    assert info.value.errno in (errno.ELOOP, errno.EXDEV)
    assert beneath.reason(info.value) == beneath.SYMLINK_TEXT


def test_dotdot_cannot_climb_out(tree, mode):
    with pytest.raises(OSError) as info:
        os.close(tree.opendir("a/../.."))
    assert info.value.errno == errno.EXDEV


def test_remove_takes_links_away_without_following_them(tree, mode, tmp_path):
    tree.remove("a")
    assert sorted(os.listdir(tree.path)) == ["link"]
    assert (tmp_path / "outside" / "b" / "f").read_text() == "outside"


def test_a_copy_through_a_symlinked_component_fails_naming_the_path(tmp_path, mode):
    """The engine given a path whose middle is a symlink (as after a swap) refuses it."""
    root = tmp_path / "root"
    (root / "dst").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("secret")
    os.symlink(tmp_path / "outside", root / "src")
    job = engine.CopyJob(str(root / "src" / "secret"), str(root / "dst"), roots=[str(root)], processes=False)
    with pytest.raises(engine.CopyError) as info:
        job.run()
    assert beneath.SYMLINK_TEXT in info.value.message and str(root / "src" / "secret") in info.value.message
    assert "outside" not in info.value.message.replace(str(root), "")
    assert os.listdir(root / "dst") == []
