"""Fitting MTPs: data buckets, weighted loss, optax optimisers, least squares, checkpoints.

Public surface::

    from mtpjax.fit import FitConfig, Trainer, fit, load_dataset, LossWeights

See ``docs/fitting.md`` for the loss conventions, the optimisers and data parallelism.

The package itself is callable: ``mtpjax.fit(potential, "train.cfg", **options)`` is
:func:`mtpjax.api.fit` (train from data files, return the trained potential), so that the
public ``mtpjax.fit`` stays one object whether or not this package was imported.
"""

import sys
import types

from mtpjax.fit.data import (
    Batch,
    Sample,
    TrainingDataError,
    check_samples,
    load_dataset,
    pack_buckets,
    precompute_neighbors,
    read_samples,
)
from mtpjax.fit.loss import LossWeights, make_loss_fn, predict_group, summarize
from mtpjax.fit.lstsq import solve_linear
from mtpjax.fit.trainer import FitConfig, StopTraining, Trainer, default_mesh, fit

__all__ = [
    "Batch", "Sample", "TrainingDataError", "check_samples", "load_dataset", "pack_buckets",
    "precompute_neighbors", "read_samples", "LossWeights", "make_loss_fn", "predict_group",
    "summarize", "solve_linear", "FitConfig", "StopTraining", "Trainer", "default_mesh", "fit",
]


class _CallableModule(types.ModuleType):
    """This package's module type: calling it calls :func:`mtpjax.api.fit`."""

    def __call__(self, *args, **kwargs):
        from mtpjax.api import fit as _fit

        return _fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
