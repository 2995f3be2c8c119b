"""The evaluate stage's errors: one compiled predictor per model structure shared by M'_L and
M''_L, the DFT test cells predicted once for both references — the same numbers as the ASE
calculator gives for every (model, set) pair on its own."""

from __future__ import annotations

import ase.io
import numpy as np

from distill.stages.evaluate import TARGETS, errors, mae, predictor, refs
from distill.stages.fits import potential_path
from mtpjax.calculator import MTPCalculator
from mtpjax.io.mtp_file import read_mtp, write_mtp
from mtpjax.model import ModelSpec
from mtpjax.params import perturb
from tests.fit.conftest import si_cells

POT = "tests/data/parity/si_L08/pot.mtp"


def _labelled(frames, seed):
    rng = np.random.default_rng(seed)
    for a in frames:
        a.info["REF_energy"] = float(rng.normal(-5.4 * len(a), 0.1))
        a.arrays["REF_forces"] = rng.normal(0.0, 0.3, (len(a), 3))
    return frames


def test_errors_equal_independent_predictions(tmp_path):
    run = tmp_path / "run"
    (run / "tests").mkdir(parents=True)
    cells = si_cells(5, seed=3)
    dft = _labelled([a.copy() for a in cells], 1)  # the teacher's labels of the DFT cells
    m0 = _labelled([a.copy() for a in cells[::-1]], 2)  # DFT labels, in another order
    ase.io.write(run / "tests" / "dft_test.xyz", dft)
    ase.io.write(run / "tests" / "dft_test_m0.xyz", m0)
    ase.io.write(run / "tests" / "rss.xyz", _labelled(si_cells(3, seed=4), 3))
    (run / "tests" / "compression.xyz").write_text("")  # an empty test set is skipped
    pot = read_mtp(POT)
    for k, model in enumerate(("direct", "indirect")):
        path = potential_path(run, 8, model)
        path.parent.mkdir(parents=True)
        write_mtp(path, pot.with_params(perturb(pot.params(), seed=k, scale=0.02)))

    got = errors(run, {"fit": {"levels": [8]}}, ["Si"])

    for model, name in (("direct", "M'_8"), ("indirect", "M''_8")):
        assert set(got[name]) == {"rss.xyz:M1", "dft_test.xyz:M1", "dft_test_m0.xyz:M0"}
        for file, ref in TARGETS:
            if file == "compression.xyz":
                continue
            frames = ase.io.read(run / "tests" / file, index=":")
            # another path to the same numbers: the ASE calculator, frame by frame
            calc = MTPCalculator(potential_path(run, 8, model), species=["Si"])
            e, f = [], []
            for a in frames:
                b = a.copy()
                b.calc = calc
                e.append(b.get_potential_energy())
                f.append(b.get_forces())
            ref_e, ref_f, n = refs(frames)
            expect = mae(e, ref_e, n, f, ref_f)
            row = got[name][f"{file}:{ref}"]
            assert row["n_structures"] == expect["n_structures"]
            np.testing.assert_allclose(row["energy_mae_meV_per_atom"],
                                       expect["energy_mae_meV_per_atom"], rtol=1e-10)
            np.testing.assert_allclose(row["force_mae_eV_per_A"], expect["force_mae_eV_per_A"],
                                       rtol=1e-10)
    # the two models differ, so a shared compilation did not reuse one model's coefficients
    assert got["M'_8"]["rss.xyz:M1"] != got["M''_8"]["rss.xyz:M1"]
    # one compiled predictor for both (one model structure)
    fns = {predictor(ModelSpec.from_potential(read_mtp(potential_path(run, 8, m))))
           for m in ("direct", "indirect")}
    assert len(fns) == 1
