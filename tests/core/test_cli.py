"""`mtpjax calc-efs` / `calc-errors` mirror `mlp` and write readable, precise output."""

import numpy as np

from mtpjax.cli import main
from mtpjax.io.cfg import read_cfg
from tests.conftest import PARITY


def _subset(tmp_path, n=3):
    text = (PARITY / "si_L08" / "configs.cfg").read_text()
    blocks = text.split("END_CFG")[:n]
    path = tmp_path / "in.cfg"
    path.write_text("END_CFG".join(blocks) + "END_CFG\n")
    return path


def test_calc_efs_writes_12_digit_results(tmp_path):
    src = _subset(tmp_path)
    out = tmp_path / "out.cfg"
    assert (
        main(["calc-efs", str(PARITY / "si_L08" / "pot.mtp"), str(src), str(out), "--quiet"]) == 0
    )
    ref = np.load(PARITY / "si_L08" / "reference.npz")
    results = read_cfg(out)
    assert len(results) == 3
    for k, cfg in enumerate(results):
        assert abs(cfg.energy - ref[f"energy_{k}"]) / len(cfg) < 1e-9
        assert np.abs(cfg.forces - ref[f"forces_{k}"]).max() < 2e-6
        plus_ref = -ref[f"stress_{k}"] * abs(np.linalg.det(ref[f"cell_{k}"]))
        assert np.abs(cfg.plus_stress - plus_ref).max() < 2e-5
    line = next(ln for ln in out.read_text().splitlines() if ln.strip().startswith("1 0"))
    assert all(len(tok.split(".")[1]) == 12 for tok in line.split()[2:])


def test_calc_errors_reports_zero_against_own_output(tmp_path, capsys):
    src = _subset(tmp_path, 2)
    out = tmp_path / "out.cfg"
    pot = str(PARITY / "si_L08" / "pot.mtp")
    main(["calc-efs", pot, str(src), str(out), "--quiet"])
    capsys.readouterr()
    assert main(["calc-errors", pot, str(out), "--quiet", "--json", str(tmp_path / "e.json")]) == 0
    text = capsys.readouterr().out
    assert "Energy per atom" in text and "Errors checked for 2 configurations" in text
    import json

    report = json.loads((tmp_path / "e.json").read_text())
    assert report["energy_per_atom"]["mae"] < 1e-11 and report["forces"]["rmse"] < 1e-11
    assert report["forces"]["count"] == sum(len(c) for c in read_cfg(out))


def test_device_out_of_memory_is_one_line_with_what_to_try(monkeypatch, capsys):
    """XLA's RESOURCE_EXHAUSTED (seen on an H200 in float64, docs/gpu.md) is not a traceback."""
    import jax

    import mtpjax.commands.calc_efs as calc_efs

    def run(_args):
        raise jax.errors.JaxRuntimeError(
            "RESOURCE_EXHAUSTED: Underlying backend ran out of memory trying to instantiate\n"
            "command buffer with 70 (total of 0 alive graphs in the process).")

    monkeypatch.setattr(calc_efs, "run", run)
    assert main(["calc-efs", "pot.mtp", "in.cfg", "out.cfg"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("mtpjax: error: the device ran out of memory (RESOURCE_EXHAUSTED")
    assert "XLA_PYTHON_CLIENT_PREALLOCATE=false" in err[0]


def test_other_runtime_errors_are_not_disguised(monkeypatch):
    import jax
    import pytest

    import mtpjax.commands.calc_efs as calc_efs

    def run(_args):
        raise jax.errors.JaxRuntimeError("INTERNAL: something else")

    monkeypatch.setattr(calc_efs, "run", run)
    with pytest.raises(jax.errors.JaxRuntimeError):
        main(["calc-efs", "pot.mtp", "in.cfg", "out.cfg"])
