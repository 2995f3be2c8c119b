"""Test-wide setup: float64 JAX (the library itself never changes global JAX config)."""

from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)

DATA = Path(__file__).resolve().parent / "data"
PARITY = DATA / "parity"
TEMPLATES = DATA / "mlip_templates"
PARITY_CASES = ("si_L08", "si_L16", "si_L20", "species2_L16")


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return PARITY


@pytest.fixture(scope="session")
def templates_dir() -> Path:
    return TEMPLATES
