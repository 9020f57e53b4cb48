"""Destination preparation in one launch or none gives the reference's answers, step by step's.

Every case runs in the four modes (``each``: one launch per stat/mkdir, as the reference;
``launch``: one launch; ``local``: none; ``auto``) on dry-run requests (prep runs, the copy is
``true``), and the outcomes must be the same: the error text, or the destination path and the
directories made. The fake mpirun's log counts the launches.
"""

from __future__ import annotations

import pytest
from nnf_support import prepare_outcomes

MODES = ("each", "launch", "local", "auto")


@pytest.mark.parametrize("mode", MODES[1:])
def test_nnf_prepare_modes_match_the_reference_steps(world, mode):
    reference, reference_made = prepare_outcomes(world, "each")
    results, made = prepare_outcomes(world, mode)
    assert {k: v[0] for k, v in results.items()} == {k: v[0] for k, v in reference.items()}
    assert made == reference_made
    launches = {k: v[1] for k, v in results.items()}
    if mode == "launch":
        assert set(launches.values()) == {1}, launches
    elif mode == "local":
        assert set(launches.values()) == {0}, launches
    else:  # auto: here when the source is visible here, else one launch
        assert launches["missing source"] == launches["lustre missing"] == 1 and launches["dir to new dir"] == 0
    assert max(v[1] for v in reference.values()) >= 4  # the reference's way: a launch per step


def test_nnf_prepare_reference_outcomes(world):
    results, made = prepare_outcomes(world, "launch")
    out = world.lus + "/prep"
    assert results["dir to new dir"][0] == ("ok", out + "/new/rabbit-01-0")
    assert results["file to new file"][0] == ("ok", out + "/deep/rabbit-01-0/new-file")
    assert results["file to dir/"][0] == ("ok", out + "/existing/rabbit-01-0/")
    assert results["source is the index mount"][0] == ("ok", out + "/whole")
    assert results["lustre file"][0] == ("ok", out + "/lfile")
    kind, code, text = results["missing source"][0]
    assert code == 500 and text.startswith("internal error: could not determine source type: could not stat path ('%s/tree-missing'): "
                                           "command: mpirun --mca orte_tmpdir_base %s/dm-X --allow-run-as-root -np 1 --hostfile " % (world.rabbit_gfs2, world.hostfiles))
    assert "No such file or directory" in text and text.endswith(" - error: exit status 1")
    kind, code, text = results["below a file"][0]
    assert text.startswith("internal error: could not create destination directory: could not stat path ('%s/afile/sub/rabbit-01-0')"
                           % out) and "Not a directory" in text
    assert "deep/rabbit-01-0" in made and "new/rabbit-01-0" in made and "lnew" in made and "whole" in made
