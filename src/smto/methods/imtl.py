"""Impartial multi-task learning: IMTL-L (loss scales), IMTL-G (gradient weights), IMTL (both).

Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, "Towards Impartial Multi-task Learning",
ICLR 2021 (openreview IMPnRXEWpvr).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from smto.method import GramMethod, GramWeights, LossMethod, RunContext, Scale, Space


def imtl_l_terms(s: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
    """IMTL-L's scaled losses e^{s_k} L_k - s_k and their weights e^{s_k} (detached)."""
    scale = torch.exp(s.to(losses.dtype))
    return scale * losses - s.to(losses.dtype), scale.detach()


SYSTEMS: tuple[str, ...] = ("paper", "transposed")


def imtl_g_weights(
    gram: Tensor, eps: float = 0.0, dtype_eps: float | None = None, system: str = "paper"
) -> tuple[Tensor, bool]:
    """IMTL-G's weights alpha from the Gram matrix A = G G^T of the task gradients.

    With D = g_1 - g_i and U = u_1 - u_i (rows i = 2..K, u_i = g_i / |g_i|),
    alpha_{2..K} = g_1 U^T (D U^T + eps I)^{-1} and alpha_1 = 1 - sum alpha_{2..K}; then
    sum_k alpha_k g_k has the same projection on every u_k. Only K x K products are used:
    (G U^T)_{ij} = A_ij / |g_j|, and D U^T, g_1 U^T are differences of its entries.

    When D U^T (+ eps I) is numerically singular (collinear gradients, whose unit vectors
    coincide, or a zero gradient), any alpha with equal projections is ill-defined; the
    weights then fall back to alpha = A^+ |g| / sum(A^+ |g|) (the pseudo-inverse
    generalization of Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization",
    arXiv 2406.16232, which equals IMTL-G for independent gradients), or to 1/K each if that
    sum vanishes. Returns (alpha, solved) with ``solved`` False on a fallback.

    ``system="transposed"`` solves the transposed system instead, alpha_{2..K} =
    g_1 U^T (U D^T + eps I)^{-1}, as the main study's code does: for K >= 3 the projections
    are then no longer equal (for K = 2 the two coincide).

    ``dtype_eps`` is the machine epsilon of the dtype the Gram matrix was computed in (it sets
    the singularity threshold); default: that of ``gram``.
    """
    k = gram.shape[0]
    a = gram.to(torch.float64)
    if k == 1:
        return torch.ones(1, dtype=torch.float64, device=a.device), True
    precision = torch.finfo(gram.dtype).eps if dtype_eps is None else dtype_eps
    norms = a.diagonal().clamp_min(0.0).sqrt()
    scale = float(norms.max())
    if scale == 0.0 or not math.isfinite(scale):
        return torch.full((k,), 1.0 / k, dtype=torch.float64, device=a.device), False
    gu = a / norms.clamp_min(scale * 1e-150).unsqueeze(0)
    diff = torch.cat(
        [
            torch.ones(k - 1, 1, dtype=a.dtype, device=a.device),
            -torch.eye(k - 1, dtype=a.dtype, device=a.device),
        ],
        dim=1,
    )
    du = diff @ gu @ diff.T
    g1u = gu[0] @ diff.T
    if eps > 0.0:
        du = du + eps * torch.eye(k - 1, dtype=a.dtype, device=a.device)
    # |D U^T| <= |D|_F |U|_F <= 4 (K - 1) max |g|: singular values below K eps of that bound
    # are rounding noise of the Gram matrix.
    bound = 4.0 * (k - 1) * scale
    smallest = torch.linalg.svdvals(du).min()
    if bool(smallest > k * precision * bound):
        rest = torch.linalg.solve(du.T if system == "paper" else du, g1u)
        if bool(torch.isfinite(rest).all()):
            return torch.cat([(1.0 - rest.sum()).reshape(1), rest]), True
    return _pinv_weights(a, norms, k * precision), False


def _pinv_weights(a: Tensor, norms: Tensor, rtol: float) -> Tensor:
    v = torch.linalg.pinv(a, rtol=rtol, hermitian=True) @ norms
    total = v.sum()
    if bool(total.abs() > 1e-12 * v.abs().sum()):
        return v / total
    return torch.full_like(norms, 1.0 / a.shape[0])


SCALE_OPTIMIZERS: tuple[str, ...] = ("model", "own")


def loss_scales(method: nn.Module, n_tasks: int, optimizer: str) -> None:
    """Registers IMTL-L's log-scales ``s`` (init 0) on ``method``: an ``nn.Parameter`` with
    ``scales_optimizer="model"``, a buffer (trained by :class:`ScalesAdam`) with ``"own"``."""
    if optimizer not in SCALE_OPTIMIZERS:
        raise ValueError(f"scales_optimizer must be one of {SCALE_OPTIMIZERS}, got {optimizer!r}")
    if optimizer == "model":
        method.s = nn.Parameter(torch.zeros(n_tasks))
    else:
        method.register_buffer("s", torch.zeros(n_tasks))


class _ScaledLosses:
    """Mixin of the methods with IMTL-L's scales: their own Adam's learning rate defaults to
    the run's initial one."""

    @classmethod
    def defaults_from(cls, context: RunContext) -> dict[str, Any]:
        """The learning rate of the scales' own Adam: the run's initial one."""
        return {} if context.lr is None else {"scales_lr": context.lr}


class ScalesAdam:
    """The main study's Adam of IMTL-L's scales: a fixed learning rate ``lr`` (the run's
    initial one), stepped inside ``backward`` on the gradient e^s L - 1 and written back
    into the buffer ``s``. Rebuilt, keeping its state, when ``s`` moved
    (``method.to(device)``)."""

    def __init__(self, lr: float | None) -> None:
        if lr is not None and (
            isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0
        ):
            raise ValueError(f"scales_lr must be a number > 0 or None, got {lr!r}")
        self.lr = None if lr is None else float(lr)
        self._adam: torch.optim.Adam | None = None
        self._leaf: Tensor | None = None
        self._state: dict[str, Any] | None = None

    def step(self, s: Tensor, losses: Tensor) -> None:
        """One Adam step of the scales ``s`` (in place) on the gradient e^s L - 1 of ``losses``."""
        if self.lr is None:
            raise ValueError(
                "scales_optimizer='own' needs scales_lr (the run's initial learning rate; "
                "smto.train sets it from the run)"
            )
        leaf = self._leaf
        if self._adam is None or leaf is None or (leaf.device, leaf.dtype) != (s.device, s.dtype):
            leaf = s.detach().clone().requires_grad_(True)
            adam = torch.optim.Adam([leaf], lr=self.lr)
            state = self._adam.state_dict() if self._adam is not None else self._state
            if state is not None:
                adam.load_state_dict(state)
            self._adam, self._leaf, self._state = adam, leaf, None
        with torch.no_grad():
            leaf.copy_(s)
        leaf.grad = torch.exp(s) * losses.detach().to(s) - 1.0
        self._adam.step()
        leaf.grad = None
        with torch.no_grad():
            s.copy_(leaf)

    def state_dict(self) -> dict[str, Any] | None:
        """The Adam state of the scales (before the first step: the loaded one, or None)."""
        return self._adam.state_dict() if self._adam is not None else self._state

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restores the Adam state (the optimizer is rebuilt from it at the next step)."""
        self._adam, self._leaf, self._state = None, None, copy.deepcopy(state)


class IMTLL(_ScaledLosses, LossMethod):
    """IMTL-L: minimizes sum_k e^{s_k} L_k - s_k with s learned (init 0).

    The gradient of ``s``, e^{s_k} L_k - 1, vanishes where e^{s_k} L_k = 1, so the scaled
    losses are driven to 1. With ``scales_optimizer="model"`` (default) ``s`` is an
    ``nn.Parameter``: give ``method.parameters()`` to the optimizer. With ``"own"`` (the main
    study's code) an Adam of its own trains ``s`` at ``scales_lr`` (the run's initial
    learning rate, unscheduled), whatever the model's optimizer.

    Scale (CUSTOM): weight e^{s_k} (1 each at initialization, sum K).
    """

    display_name = "IMTL-L"
    scale = Scale.CUSTOM

    def __init__(
        self, n_tasks: int, scales_optimizer: str = "model", scales_lr: float | None = None
    ) -> None:
        super().__init__(n_tasks)
        loss_scales(self, n_tasks, scales_optimizer)
        self.scales_optimizer = scales_optimizer
        self.scales_lr = scales_lr
        self._scales_adam = ScalesAdam(scales_lr)

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        if self.scales_optimizer == "model":
            return imtl_l_terms(self.s, losses)
        terms, scale = imtl_l_terms(self.s, losses)
        self._scales_adam.step(self.s, losses)
        return terms, scale

    def get_extra_state(self) -> dict[str, Any]:
        return {"scales_adam": self._scales_adam.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._scales_adam.load_state_dict(state["scales_adam"])


def _check_eps(eps: Any) -> float:
    if (
        not isinstance(eps, (int, float))
        or isinstance(eps, bool)
        or not math.isfinite(eps)
        or eps < 0
    ):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    return float(eps)


class IMTLG(GramMethod):
    """IMTL-G: the combination of the task gradients, weights summing to 1, whose projections
    on every unit task gradient are equal (see :func:`imtl_g_weights`).

    Works on the shared representation by default (as in the study; ``space="params"``
    applies it to the shared parameters). ``eps`` is a ridge added to D U^T before the
    inverse: the study's original code adds 1e-6 I (``eps=1e-6`` reproduces it), and with it
    IMTL still diverged on QM9 (11 tasks; numerical overflow, attributed to the unbounded
    weights), so the ridge is no safeguard; the default is 0 (the plain solve, as in the
    paper). ``system="transposed"`` solves the transposed system, as the main study's code
    does (its published Cityscapes S_D_I IMTL numbers come from it): for K >= 3 its
    projections are not equal; the default ``"paper"`` agrees with the paper and torchjd.
    Where the system is numerically singular (collinear gradients) the step falls back to
    the pseudo-inverse weights, sets ``info["converged"] = 0``, counts ``solver_failures``
    and warns (:class:`smto.solvers.SolverWarning`).

    Scale (MEAN): the weights sum to 1 (they can be negative and large when gradients nearly
    oppose each other).
    """

    display_name = "IMTL-G"
    scale = Scale.MEAN
    default_space = Space.FEATURES

    def __init__(
        self, n_tasks: int, eps: float = 0.0, system: str = "paper", space: str | None = None
    ) -> None:
        super().__init__(n_tasks, space)
        if system not in SYSTEMS:
            raise ValueError(f"system must be one of {SYSTEMS}, got {system!r}")
        self.eps = _check_eps(eps)
        self.system = system

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        alpha, solved = imtl_g_weights(gram, self.eps, dtype_eps, self.system)
        failure = None
        if not solved:
            failure = (
                "D U^T is numerically singular (collinear or zero task gradients); using the "
                "pseudo-inverse weights for this step"
            )
        return GramWeights(alpha, {}, failure)


class IMTL(_ScaledLosses, IMTLG):
    """IMTL (hybrid): IMTL-L scales the losses, IMTL-G combines the gradients of the scaled
    losses e^{s_k} L_k - s_k.

    ``s`` (init 0) receives the gradient e^{s_k} L_k - 1; with ``scales_optimizer="model"``
    (default) it is an ``nn.Parameter`` (give ``method.parameters()`` to the optimizer), with
    ``"own"`` an Adam of its own trains it at ``scales_lr`` (the main study's code; see
    :class:`IMTLL`). The reported weights are IMTL-G's alpha on the gradients of the scaled
    losses (as in the original); the effective weight of the raw loss L_k in the shared
    update is alpha_k e^{s_k}, reported as ``info["loss_scale_k"]`` = e^{s_k}.

    Scale (MEAN): alpha sums to 1 (the loss scales e^{s_k} come on top).
    """

    display_name = "IMTL"

    def __init__(
        self,
        n_tasks: int,
        eps: float = 0.0,
        system: str = "paper",
        scales_optimizer: str = "model",
        scales_lr: float | None = None,
        space: str | None = None,
    ) -> None:
        super().__init__(n_tasks, eps, system, space)
        loss_scales(self, n_tasks, scales_optimizer)
        self.scales_optimizer = scales_optimizer
        self.scales_lr = scales_lr
        self._scales_adam = ScalesAdam(scales_lr)

    def transform_losses(self, losses: Tensor) -> Tensor:
        if self.scales_optimizer == "model":
            return imtl_l_terms(self.s, losses)[0]
        transformed = imtl_l_terms(self.s, losses)[0]
        self._scales_adam.step(self.s, losses)
        return transformed

    def get_extra_state(self) -> dict[str, Any]:
        return {**super().get_extra_state(), "scales_adam": self._scales_adam.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        self._scales_adam.load_state_dict(state.get("scales_adam"))

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        result = super().weigh(gram, losses, dtype_eps)
        scales = torch.exp(self.s.detach()).tolist()
        info = {**result.info, **{f"loss_scale_{k}": v for k, v in enumerate(scales)}}
        return GramWeights(result.weights, info, result.failure)
