"""Reading (.cfg, extxyz, ASE db), checks on bad data, and bucket packing."""

from __future__ import annotations

import ase.db
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from mtpjax.fit.data import (
    TrainingDataError,
    check_samples,
    load_dataset,
    pack_buckets,
    read_samples,
)
from mtpjax.io.cfg import Configuration, write_cfg
from tests.fit.conftest import si_cells


def _extxyz(tmp_path, keys="REF", n=3, stress=True):
    frames = []
    for k, atoms in enumerate(si_cells(n)):
        atoms = atoms.copy()
        f = np.full((len(atoms), 3), 0.1 * k)
        s = np.array([1, 2, 3, 0.1, 0.2, 0.3]) * 1e-3
        if keys == "REF":
            atoms.info["REF_energy"] = -5.0 * len(atoms) + k
            atoms.arrays["REF_forces"] = f
            if stress:
                atoms.info["REF_stress"] = s
        else:
            atoms.calc = SinglePointCalculator(atoms, energy=-5.0 * len(atoms) + k, forces=f,
                                               **({"stress": s} if stress else {}))
        frames.append(atoms)
    path = tmp_path / f"d_{keys}.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path, frames


@pytest.mark.parametrize("keys", ["REF", "plain"])
def test_extxyz_labels(tmp_path, keys):
    path, frames = _extxyz(tmp_path, keys)
    samples = read_samples(path, species=["Si"])
    assert len(samples) == 3
    for k, (s, atoms) in enumerate(zip(samples, frames, strict=True)):
        assert s.energy == pytest.approx(-5.0 * len(atoms) + k)
        np.testing.assert_allclose(s.forces, 0.1 * k)
        vol = atoms.get_volume()
        np.testing.assert_allclose(np.diag(s.virial), np.array([1, 2, 3]) * 1e-3 * vol)
        np.testing.assert_allclose(s.virial[1, 2], 0.1e-3 * vol)
        assert s.virial[1, 2] == s.virial[2, 1]
        assert (s.types == 0).all() and s.source == str(path) and s.index == k


def test_ase_db_and_cfg_roundtrip(tmp_path):
    _, frames = _extxyz(tmp_path, "plain", stress=False)
    db = tmp_path / "d.db"
    with ase.db.connect(str(db)) as con:
        for atoms in frames:
            con.write(atoms)
    from_db = read_samples(db, species=["Si"])
    cfg_path = tmp_path / "d.cfg"
    write_cfg(cfg_path, [Configuration(positions=a.positions, types=np.zeros(len(a), int),
                                       cell=a.cell.array, pbc=np.ones(3, bool),
                                       energy=a.get_potential_energy(), forces=a.get_forces(),
                                       plus_stress=-np.array([1, 2, 3, 4, 5, 6.0]))
                         for a in frames])
    from_cfg = read_samples(cfg_path, species_count=1)
    for a, b in zip(from_db, from_cfg, strict=True):
        assert a.energy == pytest.approx(b.energy)
        np.testing.assert_allclose(a.forces, b.forces, atol=1e-9)
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-9)
    v = from_cfg[0].virial  # virial = −PlusStress (xx yy zz yz xz xy)
    assert v[0, 0] == 1 and v[1, 2] == 4 and v[0, 2] == 5 and v[0, 1] == 6
    assert from_db[0].virial is None


def test_bad_data_messages(tmp_path):
    path, frames = _extxyz(tmp_path)
    frames[1].info["REF_energy"] = float("nan")
    ase.io.write(tmp_path / "nan.xyz", frames, format="extxyz")
    with pytest.raises(TrainingDataError,
                       match=r"nan\.xyz:\d+: configuration 1: energy.*NaN") as err:
        load_dataset(tmp_path / "nan.xyz", 5.0, species=["Si"], species_count=1)
    assert err.value.line == 1 + len(frames[0]) + 2  # the frame's atom-count line
    for a in frames:
        a.info["REF_energy"] = -1.0
    del frames[2].arrays["REF_forces"]
    ase.io.write(tmp_path / "nof.xyz", frames, format="extxyz")
    with pytest.raises(TrainingDataError, match=r"nof\.xyz:\d+: configuration 2: no force labels"):
        load_dataset(tmp_path / "nof.xyz", 5.0, species=["Si"], force_weight=0.1)
    # energies-only fit accepts it
    load_dataset(tmp_path / "nof.xyz", 5.0, species=["Si"], force_weight=0.0)
    frames[0].numbers[1] = 6
    ase.io.write(tmp_path / "elem.xyz", frames, format="extxyz")
    with pytest.raises(TrainingDataError, match=r"elem\.xyz:1: configuration 0: element\(s\) C"):
        read_samples(tmp_path / "elem.xyz", species=["Si"])
    (tmp_path / "empty.cfg").write_text("")
    with pytest.raises(TrainingDataError, match=r"empty\.cfg: no configurations"):
        read_samples(tmp_path / "empty.cfg")
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(TrainingDataError, match=r"empty\.xyz"):
        read_samples(tmp_path / "empty.xyz", species=["Si"])
    with pytest.raises(TrainingDataError, match="species list is needed"):
        read_samples(path, species_count=2)
    with pytest.raises(TrainingDataError, match="no such file"):
        read_samples(tmp_path / "missing.xyz", species=["Si"])


def test_force_nan_and_cfg_type(tmp_path, labelled):
    bad = [s for s in labelled[:3]]
    forces = bad[1].forces.copy()
    forces[2, 1] = np.nan
    import dataclasses

    bad[1] = dataclasses.replace(bad[1], forces=forces)
    with pytest.raises(TrainingDataError, match="configuration 1: force label of atom 2"):
        check_samples(bad)
    cfg = tmp_path / "t.cfg"
    write_cfg(cfg, [Configuration(positions=np.zeros((1, 3)), types=np.array([1]),
                                  energy=0.0)])
    with pytest.raises(TrainingDataError, match=r"t\.cfg:5: configuration 0: atom type 1"):
        read_samples(cfg, species_count=1)


def test_packing_keeps_every_atom_once(labelled):
    for apg in (None, 16, 40):
        buckets = pack_buckets(labelled, atoms_per_group=apg, group_multiple=2)
        seen = []
        for b in buckets:
            G, A, J, C = b.batch.shape
            assert G % 2 == 0 and J % 8 == 0 and J >= max(labelled[k].max_neighbors
                                                         for k in b.members)
            for g, members in enumerate(b.groups):
                mask = np.asarray(b.batch.atom_mask[g])
                assert mask.sum() == sum(len(labelled[k]) for k in members)
                # neighbours stay inside their own configuration
                conf = np.asarray(b.batch.atom_conf[g])
                idx = np.asarray(b.batch.nbr_idx[g])
                m = np.asarray(b.batch.nbr_mask[g])
                assert (conf[idx][m] == np.broadcast_to(conf[:, None], idx.shape)[m]).all()
                seen += members
        assert sorted(seen) == list(range(len(labelled)))
