"""``mtpjax train``: outputs (potential, JSONL log, plot, checkpoint), TOML + flags, bad data."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mtpjax.cli import main
from mtpjax.errors import InputError
from mtpjax.fit.cli import build_config
from mtpjax.io.cfg import Configuration, write_cfg
from mtpjax.io.mtp_file import format_mtp, read_mtp


def _write_cfg(path, samples, nan_at=None):
    configs = []
    for k, s in enumerate(samples):
        configs.append(Configuration(positions=s.positions, types=s.types, cell=s.cell,
                                     pbc=s.pbc,
                                     energy=float("nan") if k == nan_at else s.energy,
                                     forces=s.forces, plus_stress=None))
    write_cfg(path, configs)


def test_train_cli_end_to_end(tmp_path, template_l08, labelled):
    init = tmp_path / "init.mtp"
    init.write_text(format_mtp(template_l08))
    _write_cfg(tmp_path / "train.cfg", labelled[:8])
    _write_cfg(tmp_path / "valid.cfg", labelled[8:])
    out = tmp_path / "pot.mtp"
    rc = main(["train", str(init), str(tmp_path / "train.cfg"), "--valid-cfgs",
               str(tmp_path / "valid.cfg"), "--max-iter=4", "--force-weight=0.1",
               f"--trained-pot-name={out}", "--workdir", str(tmp_path / "run"), "--quiet",
               "--eval-every", "2", "--checkpoint-every", "2"])
    assert rc == 0
    pot = read_mtp(out)
    assert pot.is_trained and np.all(np.isfinite(pot.moment_coeffs))
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log if not r.get("final")] == [0, 1, 2, 3, 4]
    assert all("valid" in r for r in log) and log[-1]["final"]
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000
    assert (tmp_path / "run" / "checkpoint.npz").exists()


def test_bad_data_stops_before_compute(tmp_path, template_l08, labelled, capsys):
    init = tmp_path / "init.mtp"
    init.write_text(format_mtp(template_l08))
    _write_cfg(tmp_path / "bad.cfg", labelled[:4], nan_at=2)
    assert main(["train", str(init), str(tmp_path / "bad.cfg"), "--workdir",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert re.search(r"^mtpjax: error: \S*bad\.cfg:\d+: configuration 2: .*'nan'",
                     err) and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_toml_config_and_flag_precedence(tmp_path):
    toml = tmp_path / "fit.toml"
    toml.write_text('species = ["Si"]\n[fit]\noptimizer = "adam"\nmax_iter = 7\n'
                    'force_weight = 0.1\nbatch_size = 4\n')
    import argparse

    from mtpjax.fit.cli import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["a.mtp", "b.cfg", "--config", str(toml), "--max-iter=9"])
    cfg, species = build_config(args)
    assert (cfg.optimizer, cfg.max_iter, cfg.force_weight, cfg.batch_size) == ("adam", 9, 0.1, 4)
    assert species == ["Si"]
    toml.write_text("[fit]\nno_such_option = 1\n")
    with pytest.raises(InputError, match="no_such_option"):
        build_config(parser.parse_args(["a.mtp", "b.cfg", "--config", str(toml)]))
