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
        ("fit", "valid_fraction = 1.5", "fit.valid_fraction"),
        ("fit", "valid_fraction = 0.0", "fit.patience"),  # tiny.toml has patience = 1
        ("fit", "patience = -2", "fit.patience"),
        ("md", "workers = 0", "md.workers"),
        ("md.protocol.quench", "replicas = 0", "md.protocol.quench.replicas"),
        ("md.protocol.quench", "replicas = 2.5", "md.protocol.quench.replicas"),
        ("md.protocol.quench", "replicas = 33", "md.protocol.quench.replicas"),
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


def test_replicas_error_names_the_line(tmp_path):
    path = _with(tmp_path, "md.protocol.quench", "replicas = 0")
    line = path.read_text().splitlines().index("replicas = 0") + 1
    with pytest.raises(PipelineConfigError) as err:
        load(path)
    assert f"{path}:{line}" in str(err.value), str(err.value)


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
    medium = load(root / "distill/configs/medium.toml")  # its measured run: docs/medium/
    assert medium["fit"]["levels"] == [8, 12, 16]  # level 20 at this scale needs a GPU
    s = medium["sample"]
    snapshots = s["runs"] * (s["nvt_steps"] + s["ramp_steps"]) // s["snapshot_every"]
    assert snapshots * s["n_atoms"] >= 1e5  # D1 of at least 10^5 environments
    assert 8 * medium["evaluate"]["md_repeat"] ** 3 >= 1000


def _labels(tmp_path: Path, *lines: str) -> Path:
    """tiny.toml with its [labels] table replaced by `lines`."""
    path = tmp_path / "labels.toml"
    path.write_text(_text().replace('executor = "serial"', "\n".join(lines)))
    return path


def test_dask_executor_configs(tmp_path):
    cfg = load(_labels(tmp_path, 'executor = "dask"', 'scheduler = "tcp://node01:8786"'))
    assert cfg["labels"]["scheduler"] == "tcp://node01:8786"
    cfg = load(_labels(tmp_path, 'executor = "dask"', "workers = 4"))  # a LocalCluster
    assert (cfg["labels"]["executor"], cfg["labels"]["workers"]) == ("dask", 4)
    assert load(TINY)["labels"]["scheduler"] == ""


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['executor = "slurm"'], r"labels\.executor: expected one of 'local', 'serial', 'dask'"),
        (['executor = "dask"', 'scheduler = "tcp//node01:8786"'],
         r":3: labels\.scheduler: 'tcp//node01:8786' is not a scheduler address"),
        (['executor = "dask"', 'scheduler = "http://node01:8786"'],
         r":3: labels\.scheduler: .*unknown scheme 'http'"),
        (['executor = "dask"', 'scheduler = "tcp://node01"'], r":3: labels\.scheduler"),
        (['executor = "local"', 'scheduler = "tcp://node01:8786"'],
         r"labels\.scheduler: a Dask scheduler address needs executor = 'dask'"),
        (['executor = "dask"', 'scheduler = "tcp://node01:8786"', "workers = 2"],
         r"labels\.workers: the cluster at labels\.scheduler has its own workers"),
        (['executor = "dask"', "scheduler = 8786"], r"labels\.scheduler: expected str"),
    ],
)
def test_bad_dask_configs_name_the_key_and_line(tmp_path, lines, message):
    path = _labels(tmp_path, *lines)
    lines_before = _text().splitlines().index("[labels]")  # [labels] is line lines_before + 1
    message = message.replace(":3:", f":{lines_before + 3}:")
    with pytest.raises(PipelineConfigError, match=message):
        load(path)


def test_cli_reports_a_bad_scheduler_in_one_line(tmp_path, capsys):
    path = _labels(tmp_path, 'executor = "dask"', 'scheduler = "tcp:/node01:8786"')
    args = argparse.Namespace(action="check", config=str(path), run_dir=None)
    assert cli_run(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtpjax: error: ") and "labels.scheduler" in err
    assert len(err.splitlines()) == 1


def test_executor_settings_do_not_change_stage_keys():
    """Every executor gives the same labels: switching executor, workers, chunking or scheduler
    (a new address every SLURM job) must not redo the labels stage, nor the fits after it."""
    from distill import pipeline

    stages = {s.name: s for s in pipeline._stages()}
    base = load(TINY)
    keys = {"teacher": "t", "sample": "s", "labels": "l"}
    ref = {n: pipeline._key(stages[n], base, keys) for n in ("labels", "tests")}
    for change in ({"executor": "dask", "scheduler": "tcp://node07:40331"},
                   {"executor": "local", "workers": 8, "chunk_size": 16}):
        cfg = {**base, "labels": {**base["labels"], **change}}
        assert {n: pipeline._key(stages[n], cfg, keys) for n in ref} == ref
    other_d0 = {**base, "d0": {**base["d0"], "max_structures": 5}}
    assert pipeline._key(stages["labels"], other_d0, keys) != ref["labels"]


def test_optimizer_names_equal_the_trainers():
    """The config check's list (kept JAX-free) names exactly the trainer's optimisers."""
    from distill.stages import config
    from mtpjax.fit import trainer

    assert config.OPTIMIZERS == trainer.OPTIMIZERS
