"""Cheap and deliberately faulty teachers, for tests and for trying the engine out.

All are ASE calculator factories usable as ``ase:distill.testing:NAME`` teachers. They are
EMT (fast, deterministic) except on structures with a chosen number of atoms, where they
misbehave in one way: raise, return NaN, kill their own process, or (once, remembered through a
marker file) kill their process only the first time.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
from ase.calculators.calculator import all_changes
from ase.calculators.emt import EMT


class FaultyEMT(EMT):
    """EMT that misbehaves on structures of `n_atoms` atoms.

    mode: ``"raise"`` (RuntimeError), ``"nan"`` (NaN energy and forces), ``"exit"``
    (``os._exit(3)``), ``"kill_once"`` (SIGKILL to its own process the first time, noted in
    `marker`; correct afterwards).
    """

    def __init__(self, n_atoms: int, mode: str, marker: str = ""):
        super().__init__()
        self.n_atoms, self.mode, self.marker = n_atoms, mode, marker

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if atoms is not None and len(atoms) == self.n_atoms:
            self._misbehave()
        super().calculate(atoms, properties, system_changes)
        if atoms is not None and len(atoms) == self.n_atoms and self.mode == "nan":
            self.results["energy"] = float("nan")
            self.results["forces"] = np.full_like(self.results["forces"], np.nan)

    def _misbehave(self) -> None:
        if self.mode == "raise":
            raise RuntimeError(f"teacher refuses structures of {self.n_atoms} atoms")
        if self.mode == "exit":
            os._exit(3)
        if self.mode == "kill_once" and not Path(self.marker).exists():
            Path(self.marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


class SlowEMT(EMT):
    """EMT that sleeps `seconds` before every calculation (to interrupt runs midway)."""

    def __init__(self, seconds: float = 0.05):
        super().__init__()
        self.seconds = seconds

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        time.sleep(self.seconds)
        super().calculate(atoms, properties, system_changes)


class RecordingEMT(EMT):
    """EMT that notes every process it is built in: a file named by the pid in `folder`,
    holding that process's OMP_NUM_THREADS."""

    def __init__(self, folder: str):
        super().__init__()
        Path(folder, str(os.getpid())).write_text(os.environ.get("OMP_NUM_THREADS", "unset"))
