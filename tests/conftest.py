"""Test-wide setup: float64 JAX (the library itself never changes global JAX config)."""

from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.skip(f"shared reference folder {SHARED} not present")
    return SHARED
