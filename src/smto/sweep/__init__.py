"""Hyperparameter sweeps (``smto sweep``): the study's grids as Optuna trials, exactly once.

Sweep files (:mod:`smto.sweep.spec`) are validated without Optuna; running them needs it
(``pip install 'smto[sweep]'``), imported only when a sweep runs.
"""

from smto.sweep.spec import Sweep, SweepError, load_sweep

__all__ = ["Sweep", "SweepError", "load_sweep"]
