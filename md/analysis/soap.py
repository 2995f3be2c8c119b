"""Configuration-averaged SOAP similarity of frames (paper, Table S1), via quippy.

A frame's environments are summarised by one vector p̄ (quippy ``soap ... average=T``); the
similarity of two structures A and B is the normalised dot product raised to ζ:

    k(A, B) = (p̄_A · p̄_B / (|p̄_A| |p̄_B|))^ζ,   0 ≤ k ≤ 1, k(A, A) = 1.

quippy is imported lazily so that the rest of :mod:`md.analysis` works without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from .bonds import check_frame


@dataclass(frozen=True)
class SoapSettings:
    """SOAP hyperparameters; defaults are the paper's Table S1.

    Attributes:
        cutoff: radial cutoff r_cut in Å.
        cutoff_transition_width: width of the cosine cutoff transition in Å.
        atom_sigma: Gaussian width σ_at in Å.
        l_max, n_max: angular and radial basis sizes.
        zeta: exponent ζ of the dot-product kernel.
    """

    cutoff: float = 5.0
    cutoff_transition_width: float = 2.0
    atom_sigma: float = 0.5
    l_max: int = 6
    n_max: int = 10
    zeta: float = 4.0

    def descriptor_string(self, atomic_number: int) -> str:
        """quippy descriptor string for a one-species, configuration-averaged SOAP."""
        return (
            f"soap cutoff={self.cutoff} cutoff_transition_width={self.cutoff_transition_width} "
            f"atom_sigma={self.atom_sigma} l_max={self.l_max} n_max={self.n_max} average=T "
            f"n_species=1 species_Z={{{atomic_number}}} Z={atomic_number}"
        )


_DESCRIPTORS: dict[str, object] = {}


def _descriptor(text: str):
    if text not in _DESCRIPTORS:
        try:
            from quippy.descriptors import Descriptor
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError("SOAP similarity needs quippy (pip install quippy-ase)") from exc
        _DESCRIPTORS[text] = Descriptor(text)
    return _DESCRIPTORS[text]


def average_soap(atoms: Atoms, settings: SoapSettings = SoapSettings()) -> np.ndarray:
    """Configuration-averaged SOAP vector of a single-species frame, normalised to length 1."""
    check_frame(atoms, what="SOAP")
    numbers = np.unique(atoms.numbers)
    if numbers.size != 1:
        raise ValueError(f"SOAP similarity supports one species; frame has Z = {numbers.tolist()}")
    result = _descriptor(settings.descriptor_string(int(numbers[0]))).calc(atoms)
    data = np.asarray(result["data"], dtype=float).reshape(-1)
    norm = np.linalg.norm(data)
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("SOAP vector is zero: no atom has a neighbour within the cutoff")
    return data / norm


def kernel(p: np.ndarray, q: np.ndarray, zeta: float = 4.0) -> float:
    """Normalised dot-product kernel (p̂ · q̂)^ζ of two SOAP vectors (clipped to [0, 1])."""
    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    cos = float(p @ q / (np.linalg.norm(p) * np.linalg.norm(q)))
    return float(np.clip(cos, 0.0, 1.0) ** zeta)


def similarity(a: Atoms, b: Atoms, settings: SoapSettings = SoapSettings()) -> float:
    """SOAP similarity k(A, B) of two structures (configuration-averaged, ζ from settings)."""
    return kernel(average_soap(a, settings), average_soap(b, settings), settings.zeta)
