"""Optimizers studied by Elich et al.: signSGD with momentum and per-task Adam (AdaTask)."""

from smto.optim.per_task_adam import PerTaskAdam
from smto.optim.sign_sgd import SignSGD

__all__ = ["PerTaskAdam", "SignSGD"]
