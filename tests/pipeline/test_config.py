"""Config errors fail before any computation, naming the key."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from distill.pipeline_cli import run as cli_run
from distill.stages.config import PipelineConfigError, load, validate

TINY = Path(__file__).with_name("tiny.toml")
DATA = Path(__file__).resolve().parents[2] / "data"


def _text() -> str:
    """tiny.toml with absolute data paths (the copies live in tmp_path)."""
    return TINY.read_text().replace('"../../data', f'"{DATA}')


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(_text() + "\n" + text)
    return path


def _with(tmp_path: Path, section: str, line: str) -> Path:
    """tiny.toml with `line` added at the top of `[section]` (replacing the same key)."""
    lines = _text().splitlines()
    key = line.split("=")[0].strip()
    start = lines.index(f"[{section}]")
    end = next((k for k in range(start + 1, len(lines)) if lines[k].startswith("[")), len(lines))
    lines = lines[: start + 1] + [line] + [
        x for x in lines[start + 1 : end] if x.split("=")[0].strip() != key] + lines[end:]
    path = tmp_path / "cfg.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_tiny_config_is_valid():
    cfg = load(TINY)
    assert cfg["fit"]["levels"] == [2]
    assert Path(cfg["d0"]["train"]).is_file()


@pytest.mark.parametrize(
    ("section", "line", "key"),
    [
        ("run", 'stages = ["teacher", "distil"]', "run.stages[1]"),
        ("fit", "levels = [2, 5]", "fit.levels[1]"),
        ("fit", "levels = [2, 40]", "fit.levels[1]"),
        ("teacher", 'spec = "gap:/no/such/gap.xml"', "teacher.spec"),
        ("teacher", 'spec = "mtp:/no/such.mtp:Si"', "teacher.spec"),
        ("fit", "max_iters = 3", "fit.max_iters"),
        ("fit", 'max_iter = "3"', "fit.max_iter"),
        ("d0", 'train = "missing.xyz"', "d0.train"),
        ("md", 'protocols = ["melt"]', "md.protocols[0]"),
        ("md", 'models = ["student"]', "md.models[0]"),
        ("analysis", 'crystals = ["sh", "wurtzite"]', "analysis.crystals[1]"),
        ("analysis", 'quench_protocols = ["melt"]', "analysis.quench_protocols[0]"),
        ("analysis", "similarity_edges_GPa = [0.0, 10.0, 5.0]", "analysis.similarity_edges_GPa"),
        ("analysis", "p_step_GPa = 0.0", "analysis.p_step_GPa"),
        ("evaluate", "md_repeat = 0", "evaluate.md_repeat"),
    ],
)
def test_bad_values_name_the_key(tmp_path, section, line, key):
    with pytest.raises(PipelineConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load(_with(tmp_path, section, line))


def test_unknown_section_and_md_protocol_errors(tmp_path):
    with pytest.raises(PipelineConfigError, match="fitting"):
        load(_write(tmp_path, "[fitting]\nlevels = [2]\n"))
    with pytest.raises(PipelineConfigError, match="both or neither|exactly one"):
        validate({"teacher": {"fit_gap": False}})
    bad = _text().replace('ensemble = "npt"', 'ensemble = "nph"')
    path = tmp_path / "bad_md.toml"
    path.write_text(bad)
    with pytest.raises(PipelineConfigError, match=r"md\.protocol\.compress"):
        load(path)


def test_cli_fails_before_compute(tmp_path, capsys):
    run_dir = tmp_path / "never"
    args = argparse.Namespace(action="run", config=str(_with(tmp_path, "fit", "levels = [3]")),
                              run_dir=str(run_dir), redo=None, no_progress=True)
    assert cli_run(args) == 2
    assert "fit.levels[0]" in capsys.readouterr().err
    assert not run_dir.exists()


def test_shipped_configs_validate():
    root = Path(__file__).resolve().parents[2]
    cfg = load(root / "distill/configs/demo.toml")
    assert cfg["teacher"]["fit_gap"] and cfg["fit"]["levels"]
    paper = root / "distill/configs/paper.toml"
    with pytest.raises(PipelineConfigError, match="teacher.spec"):  # GAP-18 is not shipped
        load(paper)
    raw = __import__("tomllib").loads(paper.read_text())
    raw["teacher"] = {"spec": "ase:md.analysis.calculators:stillinger_weber_si"}
    for key in ("train", "test"):
        raw["d0"][key] = str(root / raw["d0"][key])
    cfg = validate(raw, base=root)
    assert cfg["fit"]["levels"] == [12, 14, 16, 18, 20, 22, 24]
    assert cfg["sample"]["n_atoms"] == 1000
    medium = load(root / "distill/configs/medium.toml")  # written, not yet run (see its header)
    assert medium["fit"]["levels"] == [8, 12, 16, 20]
    s = medium["sample"]
    snapshots = s["runs"] * (s["nvt_steps"] + s["ramp_steps"]) // s["snapshot_every"]
    assert snapshots * s["n_atoms"] >= 1e5  # D1 of at least 10^5 environments
    assert 8 * medium["evaluate"]["md_repeat"] ** 3 >= 1000
