"""Optimizers studied by Elich et al.: signSGD with momentum, per-task Adam (AdaTask) and
MTL-IO (per-task SGD states, stepped task by task)."""

from smto.optim.mtl_io import MTLIO
from smto.optim.per_task_adam import PerTaskAdam
from smto.optim.sign_sgd import SignSGD

__all__ = ["MTLIO", "PerTaskAdam", "SignSGD"]
