"""Checkpoints: one ``.npz`` file written atomically (temporary file + ``os.replace``).

Why not orbax: the whole state of an MTP fit is small (coefficients, optimiser moments or
L-BFGS history — at level 24 a few MB), lives on one host after the cross-device reduction, and
must be readable without JAX. A single ``.npz`` renamed into place is atomic on POSIX: a
process killed at any instant leaves either the previous or the new checkpoint, never a torn
one. The file stores the flattened leaves of the state pytree with their key paths plus a JSON
``meta`` record; :func:`load` restores them into a template pytree of the same structure (and
refuses a checkpoint of another structure, e.g. another level or optimiser).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import jax
import numpy as np


def _flatten(tree):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    keys = [jax.tree_util.keystr(path) for path, _ in leaves]
    return keys, [np.asarray(leaf) for _, leaf in leaves], treedef


def save(path, state, meta: dict | None = None) -> None:
    """Write ``state`` (any pytree of arrays/scalars) and ``meta`` (JSON-able) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys, leaves, _ = _flatten(state)
    arrays = {f"leaf_{i:05d}": leaf for i, leaf in enumerate(leaves)}
    arrays["__keys__"] = np.asarray(json.dumps(keys))
    arrays["__meta__"] = np.asarray(json.dumps(meta or {}))
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path, template):
    """Read a checkpoint into the structure of ``template``; returns (state, meta)."""
    with np.load(path, allow_pickle=False) as data:
        keys = json.loads(str(data["__keys__"]))
        meta = json.loads(str(data["__meta__"]))
        leaves = [data[f"leaf_{i:05d}"] for i in range(len(keys))]
    t_keys, t_leaves, treedef = _flatten(template)
    if keys != t_keys:
        raise ValueError(f"{path}: checkpoint structure differs from this run's "
                         f"(different level, optimiser or options?)")
    for k, a, b in zip(keys, leaves, t_leaves, strict=True):
        if a.shape != b.shape:
            raise ValueError(f"{path}: {k} has shape {a.shape}, expected {b.shape}")
    restored = [np.asarray(a, dtype=b.dtype) for a, b in zip(leaves, t_leaves, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, restored), meta
