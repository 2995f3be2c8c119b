"""Keep a long-lived process under the kernel's cap on memory mappings.

On the CPU backend every program XLA compiles holds memory mappings of its own, and Linux caps
the mappings of one process (``/proc/sys/vm/max_map_count``, 65,530 by default). A process
that fits, grades and runs MD over and over — the grade rounds of ``mtpjax distill``, a
benchmark sweep of many fits — keeps every program it compiled in jax's in-memory caches
until LLVM fails with "LLVM compilation error: Cannot allocate memory" (seen after ~90 min of
level-16 grade rounds). :func:`release_if_near_cap` drops those caches once the process holds
more than a fraction of the cap; the programs it drops are compiled again (or loaded from the
persistent compilation cache) when next called, so results are unchanged.

Outside Linux (no ``/proc``) nothing is measured and nothing is released.
"""

from __future__ import annotations

import logging
from pathlib import Path

SELF_MAPS = Path("/proc/self/maps")
MAX_MAP_COUNT = Path("/proc/sys/vm/max_map_count")

#: share of the cap above which :func:`release_if_near_cap` drops jax's caches
DEFAULT_FRACTION = 0.5


def map_count(maps: Path | None = None) -> int | None:
    """Memory mappings this process holds now (lines of ``/proc/self/maps``), or None."""
    try:
        with open(SELF_MAPS if maps is None else maps, "rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return None


def map_cap(limit: Path | None = None) -> int | None:
    """The kernel's cap on one process's memory mappings (``vm.max_map_count``), or None."""
    try:
        return int(Path(MAX_MAP_COUNT if limit is None else limit).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def release_if_near_cap(fraction: float = DEFAULT_FRACTION, *, maps: Path | None = None,
                        limit: Path | None = None) -> tuple[int, int] | None:
    """Drop jax's in-memory compilation caches (``jax.clear_caches()``) when this process
    holds more than ``fraction`` of the kernel's mapping cap.

    Returns (mappings held before, cap) when it released them — after logging one warning
    line on the ``mtpjax`` logger — else None (below the threshold, or not measurable).
    Call it between units of work (before a fit), never inside a jitted function."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    held, cap = map_count(maps), map_cap(limit)
    if held is None or cap is None or held <= fraction * cap:
        return None
    import jax

    jax.clear_caches()
    logging.getLogger("mtpjax").warning(
        "released jax's compiled programs: this process held %d of the kernel's %d memory "
        "mappings (vm.max_map_count); they are compiled again when next used", held, cap)
    return held, cap
