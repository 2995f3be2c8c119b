"""Training and test sets come out of the label store in the order their structures were given
to the teacher, not in the order the workers finished them (which varies from run to run: two
demo runs of one config wrote train_indirect.xyz with D0 cells swapped, so their M'' fits,
MD and analysis differed)."""

from __future__ import annotations

import numpy as np

from distill.engine import label
from distill.hashing import structure_key
from distill.stages.data import labelled_frames
from distill.store import open_store, select_labelled
from tests.distill.conftest import EMT, make_structures


def _store(path, frames, source):
    label(frames, EMT, path, "serial", progress=False, source=source, parent="t")
    return next(select_labelled(open_store(path))).teacher


def test_frames_follow_the_inputs_not_the_store(tmp_path):
    frames = make_structures(9, seed=3)
    other = make_structures(3, seed=4)
    tid = _store(tmp_path / "fwd.db", frames, "d0")
    assert _store(tmp_path / "rev.db", frames[::-1], "d0") == tid  # finished in reverse
    _store(tmp_path / "rev.db", other, "d1")  # another source in the same store: left out
    want = [structure_key(a) for a in frames]
    for db in ("fwd.db", "rev.db"):
        got = labelled_frames(tmp_path / db, tid, "d0", frames)
        assert [structure_key(a) for a in got] == want
        assert all(a.info["source"] == "d0" and np.isfinite(a.info["REF_energy"]) for a in got)
    # rows of structures not among the inputs: last, in structure-key order (same for both)
    part = frames[4:]
    got = [structure_key(a) for a in labelled_frames(tmp_path / "rev.db", tid, "d0", part)]
    assert got[:5] == want[4:] and got[5:] == sorted(want[:4])
    assert got == [structure_key(a) for a in
                   labelled_frames(tmp_path / "fwd.db", tid, "d0", part)]
