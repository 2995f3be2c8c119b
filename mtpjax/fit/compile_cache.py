"""JAX's persistent compilation cache for fitting (start-up: compile once, reuse across runs).

A fit compiles a handful of large programs (loss terms, the Jacobian passes of
:mod:`mtpjax.fit.varpro`, the optimiser step) — tens of seconds each on a CPU core. With the
cache, a later run with the same model and the same shape buckets (:mod:`mtpjax.fit.data`
rounds the shapes, so a similar-size data set has the same ones) loads them from disk.

Where: ``path`` when given; else ``$MTPJAX_COMPILE_CACHE``; else ``$JAX_COMPILATION_CACHE_DIR``
(JAX's own variable); else ``~/.cache/mtpjax/jax`` (``$XDG_CACHE_HOME`` honoured). ``"off"``
(or an empty string) disables it. Every program is cached (minimum compile time 0 s), small
ones too.

On the CPU backend the cache is used only when asked for (``path``, or one of the two
variables): jaxlib's XLA:CPU loader logs two ERROR lines per cached program when it loads it
(jax-ml/jax#38445: tuning flags compared as if they were instruction-set features) and then
runs it anyway — harmless for a cache written on the same machine, a SIGILL risk for a home
directory shared by nodes with different CPUs. On GPUs the default folder is used.
"""

from __future__ import annotations

import os
from pathlib import Path

OFF = ("off", "none", "")


def default_dir() -> str:
    for var in ("MTPJAX_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var]
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "mtpjax" / "jax")


def _requested() -> bool:
    """A cache folder named in the environment."""
    return any(var in os.environ for var in ("MTPJAX_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR"))


def enable(path: str | os.PathLike | None = None) -> str | None:
    """Turn the persistent cache on (idempotent); returns its folder, or None when off
    (``path`` None on a CPU backend with no folder in the environment: off, see above)."""
    import jax

    if path is None and not _requested() and jax.default_backend() == "cpu":
        return None
    path = default_dir() if path is None else str(path)
    if path.strip().lower() in OFF:
        return None
    path = str(Path(path).expanduser())
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # an unwritable cache folder must not stop a fit
    if jax.config.jax_compilation_cache_dir != path:
        jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
