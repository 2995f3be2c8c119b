"""MaxVol grades and selection against MLIP-2 ``mlp`` 2.1.2 (calc-grade, select-add)."""

from __future__ import annotations

import numpy as np
import pytest

from mtpjax import grade as G
from mtpjax.cli import main
from mtpjax.errors import InputError
from mtpjax.io.cfg import read_cfg
from tests.conftest import DATA

REF = DATA / "grade" / "si_L08"


@pytest.fixture(scope="module")
def train():
    return read_cfg(REF / "train.cfg")


@pytest.fixture(scope="module")
def candidates():
    return read_cfg(REF / "in.cfg")


@pytest.fixture(scope="module")
def grader():
    return G.Grader(REF / "pot.mtp")


@pytest.fixture(scope="module")
def train_rows(grader, train):
    return grader.rows(train)


@pytest.fixture(scope="module")
def calc_grade_run(tmp_path_factory):
    """``mtpjax calc-grade`` on the reference, saving the active set."""
    tmp = tmp_path_factory.mktemp("calc_grade")
    out, als = tmp / "grades.cfg", tmp / "state.als"
    rc = main(["calc-grade", str(REF / "pot.mtp"), str(REF / "train.cfg"),
               str(REF / "in.cfg"), str(out), "--als-filename", str(als)])
    assert rc == 0
    return out, als


def _grades(path) -> np.ndarray:
    return np.array([float(c.features["MV_grade"]) for c in read_cfg(path)])


def _assert_mlp_grades(ours, ref):
    # mlp prints 6 decimals: 1e-4 relative, 2e-6 absolute floor for small grades
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=2e-6)


def test_calc_grade_matches_mlp(calc_grade_run):
    out, _ = calc_grade_run
    ref = _grades(REF / "grades.cfg")
    ours = _grades(out)
    assert len(ours) == len(ref) == 34
    _assert_mlp_grades(ours, ref)
    assert (ref > 1).any() and (ref < 1).any()  # the case exercises both sides


def test_saved_active_set_is_reusable(calc_grade_run, tmp_path, candidates):
    out, als = calc_grade_run
    again = tmp_path / "again.cfg"
    assert main(["calc-grade", str(REF / "pot.mtp"), "-", str(REF / "in.cfg"), str(again),
                 "--load-als", str(als)]) == 0
    np.testing.assert_array_equal(_grades(again), _grades(out))
    loaded = G.Grader.load(als)
    assert loaded.maxvol.inited_rows() == sum(lab is not None for lab in loaded.maxvol.labels)
    assert len(loaded.active_configs) > 0

    # the ASE calculator's grade() with the same state
    from ase import Atoms

    from mtpjax.calculator import MTPCalculator

    calc = MTPCalculator(REF / "pot.mtp", species=["Si"], active_set=als)
    ref = _grades(REF / "grades.cfg")
    for k in (0, 3, 28):
        c = candidates[k]
        atoms = Atoms("Si" * len(c), positions=c.positions, cell=c.cell, pbc=c.pbc)
        assert calc.grade(atoms) == pytest.approx(ref[k], rel=1e-4, abs=2e-6)


def test_select_add_matches_mlp(tmp_path):
    diff = tmp_path / "diff.cfg"
    rc = main(["select-add", str(REF / "pot.mtp"), str(REF / "train.cfg"), str(REF / "in.cfg"),
               str(diff), "--selected-filename", str(tmp_path / "active.cfg")])
    assert rc == 0
    ours, ref = read_cfg(diff), read_cfg(REF / "selected.cfg")
    assert len(ours) == len(ref) == 9
    for a, b in zip(ours, ref, strict=True):  # same configurations, same order
        assert len(a) == len(b)
        np.testing.assert_allclose(a.positions, b.positions, atol=2e-6)
        assert (a.cell is None) == (b.cell is None)
        if a.cell is not None:
            np.testing.assert_allclose(a.cell, b.cell, atol=2e-6)
    assert len(read_cfg(tmp_path / "active.cfg")) == G.coefficient_count(G.Grader(
        REF / "pot.mtp").spec) - 3  # 3 rows stay uninitialised: their radial columns are zero


def test_training_grades_bounded_after_selection(train_rows):
    for select, swap in ((G.SELECT_THRESHOLD, G.SWAP_THRESHOLD), (1.5, 1.2)):
        mv = G.MaxVol.new(train_rows.shape[1])
        swaps = mv.select(train_rows, list(range(len(train_rows))), select, swap)
        assert swaps
        grades = mv.grades(train_rows)
        assert grades.max() <= swap * (1 + 1e-9)
        # the active rows are A's rows: unit coefficients
        for lab in set(mv.labels) - {None}:
            assert grades[lab] == pytest.approx(1.0, abs=1e-8)


def test_rank_one_updates_match_direct_inverse(train_rows):
    mv = G.MaxVol.new(train_rows.shape[1])
    mv.select(train_rows, list(range(len(train_rows))), 1.1, 1.0000001)
    live = [j for j, lab in enumerate(mv.labels) if lab is not None]
    np.testing.assert_allclose(mv.A[live], train_rows[[mv.labels[j] for j in live]], rtol=0,
                               atol=0)
    ident = mv.A @ mv.A_inv
    np.testing.assert_allclose(ident, np.eye(mv.n), atol=1e-8)
    sign, logdet = np.linalg.slogdet(mv.A)
    assert mv.log_det == pytest.approx(logdet, rel=1e-10)


def test_maxvol_small_matrices():
    rng = np.random.default_rng(0)
    B = rng.normal(size=(40, 5))
    mv = G.MaxVol.new(5, 1e-5)
    swaps = mv.select(B, list(range(40)), 1.1, 1.0000001)
    assert mv.inited_rows() == 5 and len(swaps) >= 5
    assert mv.grades(B).max() <= 1.0000001
    # a row already in the span with small coefficients is not selected
    assert mv.select(0.1 * B[:3], ["x", "y", "z"], 1.1, 1.0000001) == []
    # a far-out row is, and replaces exactly one row
    far = 100 * B[:1]
    assert len(mv.select(far, ["far"], 1.1, 1.0000001)) == 1
    assert "far" in mv.labels


def test_grade_invariance(grader, candidates, train_rows):
    from scipy.spatial.transform import Rotation

    from mtpjax.io.cfg import Configuration

    ref = _grades(REF / "grades.cfg")
    state = G.MaxVol.new(train_rows.shape[1])
    state.select(train_rows, list(range(len(train_rows))), G.SELECT_THRESHOLD,
                 G.SWAP_THRESHOLD)
    picks = [0, 3, 27]
    base = [candidates[k] for k in picks]
    g0 = state.grades(grader.rows(base))
    np.testing.assert_allclose(g0, ref[picks], rtol=1e-4, atol=2e-6)

    rot = Rotation.from_euler("zyx", [0.3, -1.1, 2.0]).as_matrix()
    rng = np.random.default_rng(1)
    moved = []
    for c in base:
        perm = rng.permutation(len(c))
        moved.append(Configuration(positions=(c.positions @ rot.T)[perm] + 1.7,
                                   types=c.types[perm],
                                   cell=None if c.cell is None else c.cell @ rot.T, pbc=c.pbc))
    np.testing.assert_allclose(state.grades(grader.rows(moved)), g0, rtol=1e-8)


@pytest.mark.parametrize("args, text", [
    (["--select-threshold", "0.9"], "--select-threshold must be > 1"),
    (["--init-threshold", "0"], "--init-threshold must be > 0"),
])
def test_bad_options_one_line(tmp_path, capsys, args, text):
    rc = main(["calc-grade", str(REF / "pot.mtp"), str(REF / "train.cfg"),
               str(REF / "in.cfg"), str(tmp_path / "o.cfg"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and text in err[0]


def test_bad_active_set_file(tmp_path, capsys):
    bad = tmp_path / "state.als"
    bad.write_text("not an archive")
    rc = main(["calc-grade", str(REF / "pot.mtp"), "-", str(REF / "in.cfg"),
               str(tmp_path / "o.cfg"), "--load-als", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "active-set file" in err[0]


def test_md_records_grades(tmp_path, train_rows):
    from md.config import StageConfig
    from md.runner import Simulation
    from tests.md.conftest import diamond

    grader = G.Grader(REF / "pot.mtp")
    grader.maxvol.select(train_rows, list(range(len(train_rows))), G.SELECT_THRESHOLD,
                         G.SWAP_THRESHOLD)
    sim = Simulation(REF / "pot.mtp", diamond(2), timestep_fs=1.0, temperature_K=300, seed=2,
                     chunk_steps=8, thermo_every=4, output_dir=tmp_path, active_set=grader,
                     grade_every=5)
    sim.run_stage(StageConfig("nve", "nve", 12, 300.0, 300.0))
    assert [s for s, _ in sim.grades] == [5, 10]
    assert [r["step"] for r in sim.history] == [0, 4, 8, 12]  # thermo rows unchanged
    lines = (tmp_path / "grades.csv").read_text().splitlines()
    assert lines[0] == "step,gamma" and [int(x.split(",")[0]) for x in lines[1:]] == [5, 10]
    gamma = sim.grades[-1][1]
    assert gamma > 0 and np.isfinite(gamma)
    sim.run_stage(StageConfig("nve", "nve", 3, 300.0, 300.0))  # ends on step 15
    sim.close()
    assert sim.grades[-1][0] == 15
    assert grader.grade_atoms(sim.atoms(), ["Si"]) == pytest.approx(sim.grades[-1][1],
                                                                   rel=1e-10)
    with pytest.raises(ValueError, match="active_set"):
        Simulation(REF / "pot.mtp", diamond(1), grade_every=5)


def test_md_thermo_gamma_column(tmp_path, train_rows):
    """With grading on, thermo.csv has a ``gamma`` column: γ on the graded steps (the same as
    grades.csv), NaN on the others; without grading there is no such column."""
    from md.analysis.thermo import read_thermo
    from md.config import StageConfig
    from md.runner import Simulation
    from tests.md.conftest import diamond

    grader = G.Grader(REF / "pot.mtp")
    grader.maxvol.select(train_rows, list(range(len(train_rows))), G.SELECT_THRESHOLD,
                         G.SWAP_THRESHOLD)
    sim = Simulation(REF / "pot.mtp", diamond(2), timestep_fs=1.0, temperature_K=300, seed=2,
                     chunk_steps=8, thermo_every=5, output_dir=tmp_path / "g",
                     active_set=grader, grade_every=10)
    sim.run_stage(StageConfig("nve", "nve", 20, 300.0, 300.0))
    sim.close()
    thermo = read_thermo(tmp_path / "g" / "thermo.csv")
    np.testing.assert_array_equal(thermo["step"], [0, 5, 10, 15, 20])
    gamma = np.asarray(thermo["gamma"])
    assert np.isnan(gamma[[0, 1, 3]]).all()
    np.testing.assert_allclose(gamma[[2, 4]], [g for _, g in sim.grades], rtol=1e-9)
    assert [s for s, _ in sim.grades] == [10, 20] and np.all(gamma[[2, 4]] > 0)
    assert [r["step"] for r in sim.history if np.isfinite(r["gamma"])] == [10, 20]
    logged = (tmp_path / "g" / "grades.csv").read_text().splitlines()
    assert [int(x.split(",")[0]) for x in logged[1:]] == [10, 20]  # grades.csv kept

    plain = Simulation(REF / "pot.mtp", diamond(2), timestep_fs=1.0, temperature_K=300,
                       seed=2, chunk_steps=8, thermo_every=5, output_dir=tmp_path / "p")
    plain.run_stage(StageConfig("nve", "nve", 5, 300.0, 300.0))
    plain.close()
    header = (tmp_path / "p" / "thermo.csv").read_text().splitlines()[0].split(",")
    assert "gamma" not in header and "gamma" not in plain.history[-1]


def test_two_species_rows_and_invariance():
    """Rows of a 2-species potential: MLIP's column layout (species columns = N_t / N, the
    linear part reproduces the energy) and γ invariant under permutations mixing species."""
    from mtpjax.io.cfg import Configuration

    case = DATA / "parity" / "species2_L16"
    picks = (1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)  # one neighbour capacity
    configs = [read_cfg(case / "configs.cfg")[k] for k in picks]
    mlp = np.load(case / "reference.npz")  # mlp calc-efs 2.1.2
    grader = G.Grader(case / "pot.mtp")
    rows = grader.rows(configs)
    spec, params = grader.spec, grader.params
    q = params["radial_coeffs"].size
    C = spec.species_count
    assert rows.shape == (12, G.coefficient_count(spec))
    lin = np.concatenate([params["species_coeffs"], params["moment_coeffs"]])
    for k, (c, r) in enumerate(zip(configs, rows, strict=True)):
        n = len(c)
        np.testing.assert_allclose(r[q:q + C], np.bincount(c.types, minlength=C) / n,
                                   atol=1e-14)
        assert n * r[q:] @ lin == pytest.approx(float(mlp[f"energy_{picks[k]}"]), rel=1e-9)
    mv = G.MaxVol.new(rows.shape[1])
    mv.select(rows[:10], list(range(10)), 1.1, 1.0000001)
    rng = np.random.default_rng(5)
    moved = []
    for c in configs[10:]:
        perm = rng.permutation(len(c))
        moved.append(Configuration(positions=c.positions[perm] - 0.3, types=c.types[perm],
                                   cell=c.cell, pbc=c.pbc))
    np.testing.assert_allclose(mv.grades(grader.rows(moved)), mv.grades(rows[10:]), rtol=1e-8)


def test_wrong_species_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.cfg"
    bad.write_text((REF / "in.cfg").read_text().replace("\n    1 0 ", "\n    1 1 ", 1))
    rc = main(["calc-grade", str(REF / "pot.mtp"), str(bad), str(REF / "in.cfg"),
               str(tmp_path / "o.cfg")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "bad.cfg" in err[0] and "species_count" in err[0]


def test_reads_mlp_binary_state(tmp_path, train_rows, candidates):
    """An ``mlp`` ``.als`` (MLIP-2 layout, written here from our own selection) is read for
    grading: potential text, ``^``, 4 weights, ``#``, A, A⁻¹ stored column by column."""
    from mtpjax.calculator import MTPCalculator

    mv = G.MaxVol.new(train_rows.shape[1])
    mv.select(train_rows, list(range(len(train_rows))), G.SELECT_THRESHOLD, G.SWAP_THRESHOLD)
    als = tmp_path / "state.als"
    with open(als, "wb") as fh:
        fh.write((REF / "pot.mtp").read_bytes().rstrip(b"\n") + b"\n^")
        fh.write(np.array([0.0, 1.0, 0.0, 0.0]).tobytes() + b"\n#")
        fh.write(mv.A.tobytes() + mv.A_inv.T.copy().tobytes() + b"\n")
        fh.write("".join(f"{j} 0\n" for j in range(mv.n)).encode())
        fh.write(G._mlp_lossless(None).encode())  # (rows named by one empty configuration)
    loaded = G.Grader.load(als)
    np.testing.assert_array_equal(loaded.maxvol.A_inv, mv.A_inv)
    ref = _grades(REF / "grades.cfg")
    np.testing.assert_allclose(loaded.maxvol.grades(train_rows), mv.grades(train_rows))
    calc = MTPCalculator(REF / "pot.mtp", species=["Si"], active_set=als)
    from ase import Atoms

    c = candidates[28]
    atoms = Atoms("Si" * len(c), positions=c.positions, cell=c.cell, pbc=c.pbc)
    assert calc.grade(atoms) == pytest.approx(ref[28], rel=1e-4)
    # a state selected with force or stress equations is refused
    raw = als.read_bytes().replace(np.array([0.0, 1.0, 0.0, 0.0]).tobytes(),
                                   np.array([0.0, 1.0, 1.0, 0.0]).tobytes())
    als.write_bytes(raw)
    with pytest.raises(InputError, match="energy-weighted"):
        G.Grader.load(als)


def _mlp_state_parts(path, n):
    """(potential text, weights, A, stored A⁻¹ᵀ, the text after the matrices) of an .als."""
    data = path.read_bytes()
    cut = data.find(b"\n^")
    pos = data.find(b"\n#", cut) + 2
    mats = np.frombuffer(data[pos:pos + 16 * n * n], "<f8")
    return (data[:cut], data[cut + 2:cut + 34], mats[:n * n].reshape(n, n),
            mats[n * n:].reshape(n, n), data[pos + 16 * n * n:])


def test_mlp_als_read_and_rewritten_bytewise(tmp_path, candidates):
    """mlp's own ``state.als`` (calc-grade on the reference): read completely (A, A⁻¹, the row
    table and the active configurations) and written back byte for byte after the potential."""
    mlp_state = REF / "state.als"
    loaded = G.Grader.load(mlp_state)
    _assert_mlp_grades(loaded.grade(candidates), _grades(REF / "grades.cfg"))
    assert loaded.maxvol.inited_rows() == 23 and len(loaded.active_configs) == 23
    assert all(len(c) > 0 for c in loaded.active_configs.values())
    again = tmp_path / "again.als"
    loaded.save(again)
    n = loaded.maxvol.n
    ours, theirs = _mlp_state_parts(again, n), _mlp_state_parts(mlp_state, n)
    for a, b in zip(ours[1:], theirs[1:], strict=True):
        assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
    assert G.Grader.load(again).potential.params()["moment_coeffs"].tolist() == \
        loaded.potential.params()["moment_coeffs"].tolist()


def test_our_als_has_mlp_layout(calc_grade_run, candidates):
    """``mtpjax calc-grade --als-filename x.als`` writes mlp's layout: same weights and row
    table as mlp's state for the reference, A and A⁻¹ to rounding, the same active
    configurations (up to symmetry-equivalent ties, whose rows are equal to rounding)."""
    _, als = calc_grade_run
    n = G.Grader.load(als).maxvol.n
    ours, theirs = _mlp_state_parts(als, n), _mlp_state_parts(REF / "state.als", n)
    assert ours[1] == theirs[1] == np.array([0.0, 1.0, 0.0, 0.0]).tobytes()
    for a, b in zip(ours[2:4], theirs[2:4], strict=True):  # (cancellations: scale-relative)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9 * np.abs(b).max())
    head = ours[4].split(b"BEGIN_CFG")[0]
    assert head == theirs[4].split(b"BEGIN_CFG")[0]  # "row configuration" table
    assert ours[4].count(b"BEGIN_CFG") == theirs[4].count(b"BEGIN_CFG") == 24
    a, b = G.Grader.load(als), G.Grader.load(REF / "state.als")
    ka = [a.active_configs[lab] for lab in dict.fromkeys(a.maxvol.labels) if lab]
    kb = [b.active_configs[lab] for lab in dict.fromkeys(b.maxvol.labels) if lab]
    ra, rb = a.rows(ka), b.rows(kb)
    # (the strained copies agree to the 1e-9 Å digits of the inputs)
    np.testing.assert_allclose(ra, rb, rtol=0, atol=1e-7 * np.abs(rb).max())
    _assert_mlp_grades(a.grade(candidates), _grades(REF / "grades.cfg"))


def test_npz_state_still_written_on_request(tmp_path, calc_grade_run, candidates):
    _, als = calc_grade_run
    grader = G.Grader.load(als)
    path = tmp_path / "state.npz"
    grader.save(path)
    assert path.read_bytes()[:2] == b"PK"
    np.testing.assert_array_equal(G.Grader.load(path).grade(candidates[:3]),
                                  grader.grade(candidates[:3]))
    grader.weighting = "molecules"
    with pytest.raises(InputError, match="molecules"):
        grader.save(tmp_path / "m.als")
