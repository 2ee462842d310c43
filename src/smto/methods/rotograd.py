"""RotoGrad: per-task rotations of the shared representation, and gradient scaling.

Javaloy, Valera, "RotoGrad: Gradient Homogenization in Multitask Learning", ICLR 2022
(arXiv 2103.02631). Reference code: github.com/adrianjav/rotograd (``rotograd`` 0.1.5+,
class ``RotoGrad``), as the main study uses it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from smto.capabilities import HeadInputs
from smto.errors import check_rows
from smto.jacobian import accumulate_grad, other_leaves
from smto.method import Method, RunContext, Scale, Space, StepResult

TINY = 1e-15
"""The original's floor on gradient norms and on the sum of convergence ratios."""

INITS: tuple[str, ...] = ("haar", "identity")
MAX_ROTATED_FEATURES = 512
"""The default feature size from a run: the whole representation, capped as in the study."""


def haar_rotations(n_matrices: int, size: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``n_matrices`` rotations drawn uniformly (Haar measure on SO(size)) from torch's global
    RNG: the QR factor of a Gaussian matrix with the signs of R's diagonal moved into Q and
    the first column flipped where the determinant is negative (geotorch's sampler)."""
    q, r = torch.linalg.qr(torch.randn(n_matrices, size, size, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    flip = torch.where(torch.linalg.det(q) < 0, -1.0, 1.0)
    q[..., 0] = q[..., 0] * flip.unsqueeze(-1)
    return q


def rotate(z: Tensor, rotation: Tensor) -> Tensor:
    """Rotates the first ``n`` entries of dimension 1 of ``z`` by the n x n ``rotation``
    (at every position of the dimensions after it); the other entries pass unchanged."""
    n = rotation.shape[0]
    low = torch.einsum("ij,bj...->bi...", rotation, z[:, :n])
    return low if n == z.shape[1] else torch.cat([low, z[:, n:]], dim=1)


def unrotate(grads: Tensor, rotations: Tensor) -> Tensor:
    """Applies R_k^T to the first ``n`` entries of dimension 2 of the stacked (K, B, C, ...)
    ``grads``: the gradients at the rotated inputs mapped back to the representation."""
    n = rotations.shape[-1]
    low = torch.einsum("kji,kbj...->kbi...", rotations, grads[:, :, :n])
    return low if n == grads.shape[2] else torch.cat([low, grads[:, :, n:]], dim=2)


class RotoGrad(Method, HeadInputs):
    """Each head k sees ``R_k z``; rotations align the task gradients, the encoder gets the
    task gradients rescaled to a common norm.

    Forward: :meth:`head_inputs` gives head k the representation with its first
    ``feature_size`` entries along dimension 1 rotated by ``R_k`` (detached: the task losses
    never train the rotations). For a (B, D) representation these are the first
    ``feature_size`` features; for a convolutional (B, C, H, W) map, the first
    ``feature_size`` channels at every pixel (the study's ``post_shape = (H, W)``).

    Backward, with ``h_k`` the gradient of L_k at head k's input and
    ``g_k = R_k^T h_k`` the task gradient at the representation z (norms are over the whole
    batch tensor):

    * heads: their own task gradient (the plain backward of each L_k);
    * rotations (RotateOnly part): the reference ``v = |mean_k g_k| * mean_k g_k / |g_k|``
      (the mean of the unit task gradients, on the scale of the mean gradient; detached) and
      the rotation loss ``sum_k mean_b |R_k v_b - h_k,b|^2``, whose gradient is the only one
      the rotation parameters receive. Minimizing it over R_k turns ``R_k^T h_k`` towards v.
    * encoder (``scale_gradients=True``, RotoGrad proper): ``z`` receives
      ``sum_k (C / |g_k|) g_k`` with ``C = sum_k alpha_k |g_k|``, ``alpha = r / sum r`` and
      ``r_k = |g_k| / |g_k^0|`` (the norm relative to the norm at step 0, re-taken at step
      ``burn_in_period``): every task gradient is rescaled to the common norm C, which
      leans towards the tasks that converge slowest. With ``scale_gradients=False``
      (the original's ``RotateOnly``) z receives ``sum_k g_k``.

    Reported weights: ``C / |g_k|`` (1 for every task with ``scale_gradients=False``); the
    update of z, and so of the shared parameters, is exactly ``sum_k weights_k g_k``.
    ``info["rotation_loss"]`` is the rotation loss of the step (summed over tasks).
    Scale (CUSTOM): every task gradient gets norm C, a convex combination of the current
    norms; the weights sum to K when all norms are equal.

    Parametrization (geotorch's ``orthogonal(..., triv="expm")``, which the original uses):
    ``R_k = B_k expm(A_k - A_k^T)`` with ``A_k`` the strictly lower triangle of the
    unconstrained parameter ``rotation_params[k]`` (init 0) and ``B_k`` a fixed base
    (buffer). ``rotation_init="haar"`` (default) draws each B_k uniformly from SO(n) with
    torch's global RNG, as geotorch does when the parametrization is registered (the
    original's ``torch.eye`` initial value is overwritten by that sample);
    ``"identity"`` starts from R_k = I. ``rotation_params`` is an ``nn.Parameter``:
    :meth:`parameter_groups` gives it learning rate ``lr_relation x lr`` and no weight decay
    (the study's Adam for RotoGrad had none).

    Use: ``model(inputs, head_inputs=method.head_inputs)``, then
    ``method.backward(losses, features=z)`` with the same forward's representation.

    Not reproduced: the original's ``normalize_losses`` option (off in the study: dividing
    the losses by their initial values), ``RotoGradNorm`` and a ``backbone_loss``.

    Args:
        n_tasks: the number of tasks.
        feature_size: how many entries of dimension 1 of the representation are rotated
            (the study: 50 on Multi-MNIST, 512 on Cityscapes, 64 on QM9). Checked against
            the representation by :meth:`head_inputs` (a clear ValueError if larger).
        lr_relation: the rotations' learning rate as a multiple of the model's (study grid
            {5, 1, 0.5, 0.1}).
        burn_in_period: the step at which the reference norms |g_k^0| are re-taken (the
            original's default 20).
        scale_gradients: True for RotoGrad, False for the original's ``RotateOnly``.
        rotation_init: ``"haar"`` (as the original) or ``"identity"``.
    """

    display_name = "RotoGrad"
    scale = Scale.CUSTOM
    space = Space.FEATURES

    @classmethod
    def defaults_from(cls, context: RunContext) -> dict[str, Any]:
        """The feature size: the run's representation size, at most 512 (the study)."""
        if context.representation_size is None:
            return {}
        return {"feature_size": min(context.representation_size, MAX_ROTATED_FEATURES)}

    def __init__(
        self,
        n_tasks: int,
        feature_size: int = 50,
        lr_relation: float = 1.0,
        burn_in_period: int = 20,
        scale_gradients: bool = True,
        rotation_init: str = "haar",
    ) -> None:
        super().__init__(n_tasks)
        if not isinstance(feature_size, int) or isinstance(feature_size, bool) or feature_size < 1:
            raise ValueError(f"feature_size must be an integer >= 1, got {feature_size!r}")
        if (
            not isinstance(lr_relation, (int, float))
            or isinstance(lr_relation, bool)
            or not math.isfinite(lr_relation)
            or lr_relation <= 0
        ):
            raise ValueError(f"lr_relation must be a finite number > 0, got {lr_relation!r}")
        if (
            not isinstance(burn_in_period, int)
            or isinstance(burn_in_period, bool)
            or burn_in_period < 0
        ):
            raise ValueError(f"burn_in_period must be an integer >= 0, got {burn_in_period!r}")
        if not isinstance(scale_gradients, bool):
            raise ValueError(f"scale_gradients must be True or False, got {scale_gradients!r}")
        if rotation_init not in INITS:
            raise ValueError(f"rotation_init must be one of {INITS}, got {rotation_init!r}")
        self.feature_size = feature_size
        self.lr_relation = float(lr_relation)
        self.burn_in_period = burn_in_period
        self.scale_gradients = scale_gradients
        self.rotation_init = rotation_init
        self.rotation_params = nn.Parameter(torch.zeros(n_tasks, feature_size, feature_size))
        base = (
            haar_rotations(n_tasks, feature_size).to(torch.get_default_dtype())
            if rotation_init == "haar"
            else torch.eye(feature_size).expand(n_tasks, -1, -1).clone()
        )
        self.register_buffer("base", base)
        self.register_buffer("initial_norms", torch.ones(n_tasks))
        self.steps = 0
        self._forward: tuple[Tensor, list[Tensor], Tensor, Tensor] | None = None

    def rotations(self) -> Tensor:
        """The K rotation matrices (K, n, n), with their graph to ``rotation_params``."""
        lower = torch.tril(self.rotation_params, diagonal=-1)
        return self.base @ torch.linalg.matrix_exp(lower - lower.transpose(-2, -1))

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        return [
            {"params": [self.rotation_params], "lr": lr * self.lr_relation, "weight_decay": 0.0}
        ]

    def head_inputs(self, features: Tensor) -> list[Tensor]:
        """Head k's input: the representation with its first ``feature_size`` entries of
        dimension 1 rotated by R_k (detached)."""
        if features.dim() < 2 or features.shape[1] < self.feature_size:
            raise ValueError(
                f"RotoGrad(feature_size={self.feature_size}) rotates the first "
                f"{self.feature_size} entries of dimension 1 of the representation, but the "
                f"representation has shape {tuple(features.shape)}: choose feature_size <= "
                f"{features.shape[1] if features.dim() >= 2 else 0}"
            )
        training = torch.is_grad_enabled() and features.requires_grad
        with torch.set_grad_enabled(training):
            with_graph = self.rotations()  # the one matrix_exp of the step
        rotations = with_graph.detach().to(device=features.device, dtype=features.dtype)
        rotated = [rotate(features, rotations[k]) for k in range(self.n_tasks)]
        if training:
            self._forward = (features, rotated, rotations, with_graph)
        return rotated

    def backward(
        self,
        losses: Tensor,
        shared_params: Iterable[Tensor] | None = None,
        features: Tensor | None = None,
    ) -> StepResult:
        """Heads get their task gradients, the rotations the rotation loss's gradient and
        the representation the (rescaled) sum of the task gradients (see the class)."""
        self._check_losses(losses)
        cached = self._forward
        if features is None or cached is None or cached[0] is not features:
            raise ValueError(
                "RotoGrad needs the representation of the forward pass whose head inputs "
                "came from method.head_inputs: run model(inputs, head_inputs=method.head_inputs)"
                " and pass its representation as features"
            )
        self._forward = None
        _, rotated, rotations, with_graph = cached
        k = self.n_tasks
        others = other_leaves(losses, exclude=(features,), boundary=features)
        grads = torch.autograd.grad(losses.sum(), [*rotated, *others], allow_unused=True)
        if any(g is None for g in grads[:k]):
            raise ValueError(
                "a task loss does not depend on its head's input from method.head_inputs: "
                "head k must take head_inputs(z)[k]"
            )
        at_heads = torch.stack(grads[:k])
        check_rows("gradient", at_heads.flatten(1))
        accumulate_grad(
            others, [torch.zeros_like(p) if g is None else g for p, g in zip(others, grads[k:])]
        )
        task_grads = unrotate(at_heads, rotations)
        norms = torch.linalg.vector_norm(task_grads.flatten(1), dim=1)
        safe = norms.clamp_min(TINY)
        shape = (k,) + (1,) * (task_grads.dim() - 1)
        mean_norm = torch.linalg.vector_norm(task_grads.mean(dim=0))
        reference = (task_grads * (mean_norm / safe).view(shape)).mean(dim=0)
        rotation_loss = self._rotation_backward(with_graph, reference, at_heads)

        if self.scale_gradients:
            if self.steps == 0 or self.steps == self.burn_in_period:
                self.initial_norms.copy_(safe.detach())
            ratios = safe / self.initial_norms.to(safe)
            alphas = ratios / ratios.sum().clamp_min(TINY)
            weights = (alphas * safe).sum() / safe
        else:
            weights = torch.ones_like(norms)
        self.steps += 1
        features.backward(torch.tensordot(weights, task_grads, 1))
        return self._report(weights, {"rotation_loss": rotation_loss})

    def _rotation_backward(self, rotations: Tensor, reference: Tensor, at_heads: Tensor) -> float:
        """Accumulates the gradient of sum_k mean_b |R_k v_b - h_k,b|^2 into the rotation
        parameters (through ``rotations``, the forward's matrices with their graph) and
        returns that loss."""
        n = self.feature_size
        param = self.rotation_params
        v = reference.detach().to(device=param.device, dtype=param.dtype)
        h = at_heads.detach().to(device=param.device, dtype=param.dtype)
        batch = h.shape[1]
        with torch.enable_grad():
            rotated = torch.einsum("kij,bj...->kbi...", rotations, v[:, :n])
            loss = (rotated - h[:, :, :n]).pow(2).sum() / batch
            (grad,) = torch.autograd.grad(loss, param)
        accumulate_grad([param], [grad])
        rest = (v[:, n:].unsqueeze(0) - h[:, :, n:]).pow(2).sum() / batch
        return float(loss.detach() + rest)

    def get_extra_state(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
