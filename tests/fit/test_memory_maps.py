"""The guard against the kernel's per-process cap on memory mappings (mtpjax.memory_maps):
compiled programs are dropped only above the threshold, the mappings they held are returned,
and every fit (Trainer) checks it first."""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from mtpjax import memory_maps
from mtpjax.fit import FitConfig, Trainer

LINUX = Path("/proc/self/maps").is_file()


def _cap_file(tmp_path, value) -> Path:
    path = tmp_path / "max_map_count"
    path.write_text(f"{value}\n")
    return path


def _compiled(n: int = 1):
    """``n`` distinct jitted functions, each compiled once (cache size 1)."""
    fns = [jax.jit(lambda x, k=k: jnp.sin(x) * k + jnp.cos(x * k)) for k in range(n)]
    for f in fns:
        f(jnp.arange(7.0)).block_until_ready()
    return fns


@pytest.mark.skipif(not LINUX, reason="/proc/self/maps is Linux's")
def test_counts_read_from_proc():
    held, cap = memory_maps.map_count(), memory_maps.map_cap()
    assert held is not None and held > 10
    assert cap == int(Path("/proc/sys/vm/max_map_count").read_text())


def test_unreadable_sources_measure_nothing(tmp_path):
    assert memory_maps.map_count(tmp_path / "missing") is None
    assert memory_maps.map_cap(tmp_path / "missing") is None
    assert memory_maps.map_cap(_cap_file(tmp_path, "lots")) is None
    f, = _compiled()
    assert memory_maps.release_if_near_cap(maps=tmp_path / "missing",
                                           limit=_cap_file(tmp_path, 1)) is None
    assert f._cache_size() == 1


def test_map_count_counts_lines(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("a\n" * 2500)
    assert memory_maps.map_count(maps) == 2500


def test_below_threshold_keeps_compiled_programs(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text("x\n" * 500)
    f, = _compiled()
    assert memory_maps.release_if_near_cap(0.5, maps=maps, limit=_cap_file(tmp_path, 1000)) \
        is None  # 500 held ≤ 0.5 · 1000
    assert f._cache_size() == 1


def test_above_threshold_drops_compiled_programs(tmp_path, caplog):
    maps = tmp_path / "maps"
    maps.write_text("x\n" * 501)
    fns = _compiled(3)
    with caplog.at_level(logging.WARNING, logger="mtpjax"):
        got = memory_maps.release_if_near_cap(0.5, maps=maps, limit=_cap_file(tmp_path, 1000))
    assert got == (501, 1000)
    assert [f._cache_size() for f in fns] == [0, 0, 0]
    assert "held 501 of the kernel's 1000 memory mappings" in caplog.text
    assert fns[0](jnp.arange(7.0)).shape == (7,)  # compiled again on use


@pytest.mark.skipif(not LINUX, reason="/proc/self/maps is Linux's")
def test_release_returns_the_mappings(tmp_path):
    """The point of the guard: dropping the compiled programs gives their mappings back."""
    _compiled(6)
    held, _ = memory_maps.release_if_near_cap(limit=_cap_file(tmp_path, 1))
    assert memory_maps.map_count() < held


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction must be in"):
        memory_maps.release_if_near_cap(fraction)


@pytest.mark.skipif(not LINUX, reason="/proc/self/maps is Linux's")
@pytest.mark.parametrize("cap, released", [(1, True), (10**9, False)])
def test_every_fit_checks_the_cap_first(monkeypatch, tmp_path, caplog, template_l08,
                                        labelled, cap, released):
    """A Trainer (every fit: ``mtpjax train``, the pipeline's fits and grading students,
    the benchmarks) drops the compiled programs when the process is near the cap, and
    only then."""
    monkeypatch.setattr(memory_maps, "MAX_MAP_COUNT", _cap_file(tmp_path, cap))
    f, = _compiled()
    with caplog.at_level(logging.WARNING, logger="mtpjax"):
        Trainer(template_l08, labelled[:4], None, FitConfig(checkpoint_every=0))
    assert f._cache_size() == (0 if released else 1)
    assert ("released jax's compiled programs" in caplog.text) == released
