"""Destination preparation in one launch or none gives the reference's answers, step by step's.

Every case runs in the four modes (``each``: one launch per stat/mkdir, as the reference;
``launch``: one launch; ``local``: none; ``auto``) on dry-run requests (prep runs, the copy is
``true``), and the outcomes must be the same: the error text, or the destination path and the
directories made. The fake mpirun's log counts the launches.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
from copy_offload.client.wire import WireError
from nnf_support import COMPUTE_GFS2, COMPUTE_LUSTRE, listing, run, wait_done

MODES = ("each", "launch", "local", "auto")


def _cases(world):
    gsrc = world.source_tree("tree")
    world.source_tree("idx", files=1)
    lsrc = world.source_tree("ltree", lustre=True)
    out = world.lus + "/prep"
    os.makedirs(out + "/existing", exist_ok=True)
    with open(out + "/afile", "w") as fh:
        fh.write("x")
    return [
        ("dir to new dir", gsrc, out + "/new"),
        ("file to new file", gsrc + "/f0", out + "/deep/new-file"),
        ("file to dir/", gsrc + "/f0", out + "/existing/"),
        ("file to existing dir", gsrc + "/f0", out + "/existing"),
        ("missing source", gsrc + "-missing", out + "/never"),
        ("below a file", gsrc, out + "/afile/sub"),
        ("source is the index mount", COMPUTE_GFS2, out + "/whole"),
        ("lustre dir", lsrc, out + "/lnew"),
        ("lustre file", lsrc + "/f0", out + "/lfile"),
        ("lustre missing", COMPUTE_LUSTRE + "/nope", out + "/lnever"),
    ]


def _launches(world):
    if not os.path.exists(world.mpirun_log):
        return 0
    with open(world.mpirun_log) as fh:
        return fh.read().count("RUN: ")


def _outcomes(world, mode):
    cases = _cases(world)

    async def scenario():
        driver = await world.driver(prepare_mode=mode)
        results = {}
        for label, src, dest in cases:
            before = _launches(world)
            try:
                name = await driver.submit(world.request(src, dest, dryrun=True))
            except WireError as exc:
                outcome = ("error", exc.code, re.sub(r"/dm-[^/ ]+", "/dm-X", exc.message))  # each request's own run dir
            else:
                await wait_done(driver, name)
                outcome = ("ok", world.dm(name)["spec"]["destination"]["path"])
            results[label] = (outcome, _launches(world) - before)
        await driver.close()
        return results

    results = run(scenario(), timeout=120)
    made = listing(world.lus + "/prep", dirs=True)
    shutil.rmtree(world.lus + "/prep")
    return results, made


@pytest.mark.parametrize("mode", MODES[1:])
def test_nnf_prepare_modes_match_the_reference_steps(world, mode):
    reference, reference_made = _outcomes(world, "each")
    results, made = _outcomes(world, mode)
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
    results, made = _outcomes(world, "launch")
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
