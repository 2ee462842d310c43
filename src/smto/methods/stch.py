"""STCH: smooth Tchebycheff scalarization of the log losses, normalized by a nadir point.

Lin, Zhang, Wang, Liu, Zhang, Zhang, "Smooth Tchebycheff Scalarization for Multi-Objective
Optimization", ICML 2024 (arXiv 2402.19078). The multi-task details follow the authors' code
as LibMTL has it (``LibMTL/weighting/STCH.py``): warm-up epochs on the sum of the log losses,
the nadir point as the mean loss of the last warm-up epoch, the 1e-20 inside the logs, and
the factor K.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from smto.capabilities import EpochEnd
from smto.method import LossMethod, Scale

EPS = 1e-20


class STCH(LossMethod, EpochEnd):
    """Minimizes ``mu K log sum_k exp(l_k / mu)`` with ``l_k = log(L_k / z_k + 1e-20)``.

    The smooth Tchebycheff function tends to ``K max_k l_k`` as ``mu -> 0`` (the classic
    Tchebycheff scalarization) and is the log-sum-exp mixing of the normalized log losses for
    larger ``mu``. During the first ``warmup_epochs`` epochs and the next one, the objective is
    ``sum_k log(L_k + 1e-20)``; the nadir point ``z`` is the mean batch loss of that last
    warm-up epoch (epoch ``warmup_epochs``, counted from 0 by :meth:`end_epoch`, which a
    trainer calls at the end of each training epoch; a loop that never calls it stays in
    the warm-up).

    The gradient of the objective at a step is ``sum_k w_k grad L_k`` with
    ``w_k = K softmax(l / mu)_k / (L_k + 1e-20 z_k)`` (warm-up: ``1 / (L_k + 1e-20)``); the
    terms are ``w_k L_k`` with ``w`` detached, which have that gradient. Scale (CUSTOM).

    Args:
        n_tasks: the number of tasks.
        mu: the smoothing temperature (> 0; LibMTL's default 1.0).
        warmup_epochs: epochs on the log losses before the nadir point is measured (LibMTL's
            default 4).
    """

    display_name = "STCH"
    scale = Scale.CUSTOM

    def __init__(self, n_tasks: int, mu: float = 1.0, warmup_epochs: int = 4) -> None:
        super().__init__(n_tasks)
        if not mu > 0.0:
            raise ValueError(f"mu must be > 0, got {mu}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int):
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs!r}")
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an integer >= 0, got {warmup_epochs}")
        self.mu = float(mu)
        self.warmup_epochs = warmup_epochs
        self.epoch = 0
        self.nadir: Tensor | None = None
        self._loss_sum: Tensor | None = None
        self._n_batches = 0

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        detached = losses.detach()
        if self.epoch <= self.warmup_epochs:
            if self.epoch == self.warmup_epochs:
                batch = detached.to(torch.float64)
                total = self._loss_sum
                self._loss_sum = batch if total is None else total.to(batch.device) + batch
                self._n_batches += 1
            weights = 1.0 / (detached + EPS)
        else:
            weights = self.current_weights(detached)
        return losses * weights, weights

    def current_weights(self, losses: Tensor) -> Tensor:
        """``K softmax(l / mu) / (L + 1e-20 z)`` for losses after the warm-up."""
        if self.nadir is None:
            if self._loss_sum is None:
                raise RuntimeError("STCH: no losses were seen in the last warm-up epoch")
            self.nadir = self._loss_sum / self._n_batches
        nadir = self.nadir.to(device=losses.device, dtype=losses.dtype)
        normalized = torch.log(losses / nadir + EPS)
        mixing = torch.softmax(normalized / self.mu, dim=0)
        return self.n_tasks * mixing / (losses + EPS * nadir)

    def end_epoch(self) -> None:
        """Counts the epoch (the warm-up, and when the nadir point is measured)."""
        self.epoch += 1

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "nadir": self.nadir,
            "loss_sum": self._loss_sum,
            "n_batches": self._n_batches,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.nadir = state["nadir"]
        self._loss_sum = state["loss_sum"]
        self._n_batches = int(state["n_batches"])
