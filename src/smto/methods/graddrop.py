"""GradDrop: gradient sign dropout.

Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov, "Just Pick a Sign: Optimizing Deep
Multitask Models with Gradient Sign Dropout", NeurIPS 2020 (arXiv 2010.06808).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from smto.jacobian import TaskGradients
from smto.method import Aggregation, GradientMethod, Scale, Space

EPS = 1e-7
"""The original's epsilon (sign purity denominator, "small activation" threshold)."""


class GradDrop(GradientMethod):
    """Keeps, per coordinate, only the task gradients of one randomly chosen sign.

    With the sign purity ``P = 0.5 (1 + k sum_i g_i / (sum_i |g_i| + 1e-7))`` (``k = 1``:
    the paper's equation (1)) and one uniform draw ``U`` per coordinate, task i keeps its
    positive components where ``U < P`` and its negative ones elsewhere:
    ``M_i = [U < P] [g_i > 0] + [U >= P] [g_i < 0]``. The update
    ``sum_i (leak + (1 - leak) M_i) g_i`` is rescaled to the norm of the summed gradient
    ``|sum_i g_i|`` (``Scale.SUM``); where all task gradients agree in sign it is exactly that
    sum.

    ``k`` and the leak: the study's table lists GradDrop's parameters as "k: 1.0, p: 0.5".
    Its code (adapted from lingvo's ``graddrop.py``) has ``k`` as lingvo's
    ``keep_prob_function_scale``, the slope of the linear keep function above (not a leak),
    ``p`` only for a "random" variant that is off, and all leaks 0 ("pure GradDrop",
    Algorithm 1 of the paper). The paper's leak ``l_i`` (1 passes task i's gradient through
    unchanged) is ``leak`` here, one value for all tasks, default 0. A leak of 1 would make
    the method plain summation.

    On the representation (``space="features"``, the default) with ``marginalize=True``
    (default; the paper's Section 3.2, lingvo's and the study's defaults), the purity is
    computed per feature from the gradients multiplied by the sign of the representation and
    summed over the batch (dimension 0), and one draw per feature decides for the whole
    batch. Otherwise (``space="params"``, ``marginalize=False``, or :meth:`aggregate` called
    without a representation) the purity and the draws are per coordinate of the K x N
    matrix, as in torchjd.

    The update is not a linear combination of the task gradients with fixed weights: the
    reported weights are the least-squares coefficients ``w = (G G^T)^+ G d`` of the direction
    ``d`` on the task gradients (``w @ G`` is the projection of ``d`` on their span).
    Reporting them costs one K x N matrix product and a K x K pseudo-inverse per step:
    about 0.2 ms on 2 CPU cores for K <= 4 and N = 12,800 (a LeNet batch of 256 x 50
    features), 0.6 % of a LeNet step and 2 % of the heavy-heads benchmark step.
    Randomness: torch's global RNG on the gradients' device.

    The purity's epsilon is absolute, as in the original and PROTOCOL.md: where the summed
    absolute gradients of a coordinate are not much larger than 1e-7, the purity tends to
    0.5 even if all signs agree, and the update is no longer the plain sum there.

    Differences from the original: the rescaling divides by ``|transformed|`` (zero if that
    is zero) instead of ``|transformed| + 1e-7``, so that sign-agreeing gradients give their
    sum exactly; the purity's epsilon is written as in PROTOCOL.md
    (``sum / (sum|g| + 1e-7)`` rather than lingvo's ``sum / (2 sum|g| + 1e-7)``).

    Args:
        n_tasks: the number of tasks.
        k: slope of the keep function, > 0 (1: the paper).
        leak: the fraction of each task gradient that always passes, in [0, 1].
        marginalize: on the representation, decide per feature from batch-summed,
            input-sign-corrected gradients (see above).
        space: ``"features"`` (default) or ``"params"``.
    """

    display_name = "GradDrop"
    scale = Scale.SUM
    default_space = Space.FEATURES

    def __init__(
        self,
        n_tasks: int,
        k: float = 1.0,
        leak: float = 0.0,
        marginalize: bool = True,
        space: str | None = None,
    ) -> None:
        super().__init__(n_tasks, space)
        if not isinstance(k, (int, float)) or not math.isfinite(k) or k <= 0:
            raise ValueError(f"k must be a finite number > 0, got {k!r}")
        if not isinstance(leak, (int, float)) or not 0.0 <= leak <= 1.0:
            raise ValueError(f"leak must be a number in [0, 1], got {leak!r}")
        if not isinstance(marginalize, bool):
            raise ValueError(f"marginalize must be True or False, got {marginalize!r}")
        self.k = float(k)
        self.leak = float(leak)
        self.marginalize = marginalize

    def combine(self, grads: TaskGradients, losses: Tensor, features: Tensor | None) -> Aggregation:
        """On the representation with ``marginalize=True``, the aggregation sees the
        representation's values (see the class); otherwise :meth:`aggregate`'s."""
        use = self.marginalize and self.space is Space.FEATURES and features is not None
        return self.aggregate(grads.matrix, losses, features.detach() if use else None)

    def aggregate(
        self, matrix: Tensor, losses: Tensor, representation: Tensor | None = None
    ) -> Aggregation:
        """GradDrop's update of the K x N ``matrix``; with ``representation`` (the values of
        the representation whose per-task gradients the rows are, N entries), the
        marginalized variant of the paper's Section 3.2."""
        self._check_rows(matrix)
        k = matrix.shape[0]
        rep = representation
        if rep is not None and rep.dim() >= 1 and rep.numel() == matrix.shape[1]:
            grads = matrix.reshape(k, rep.shape[0], -1)
            flat = rep.reshape(rep.shape[0], -1).to(matrix.dtype)
            sign = flat / (flat + (flat.abs() <= EPS).to(flat.dtype)).abs()
            signal = (grads * sign).sum(dim=1)
            masks = self._masks(signal).unsqueeze(1)
        else:
            grads = matrix
            masks = self._masks(matrix)
        keep = masks.to(matrix.dtype)
        if self.leak > 0.0:
            keep = self.leak + (1.0 - self.leak) * keep
        transformed = (grads * keep).sum(dim=0).reshape(-1)
        total_norm = matrix.sum(dim=0).norm()
        transformed_norm = transformed.norm()
        factor = torch.where(
            transformed_norm > 0,
            total_norm / transformed_norm.clamp_min(torch.finfo(matrix.dtype).tiny),
            torch.zeros_like(total_norm),
        )
        direction = transformed * factor
        return Aggregation(direction, _lstsq_weights(matrix, direction))

    def _masks(self, signal: Tensor) -> Tensor:
        """Boolean masks (K, F): which components of each task's signal are kept."""
        purity = 0.5 * (1.0 + self.k * signal.sum(dim=0) / (signal.abs().sum(dim=0) + EPS))
        positive = torch.rand(purity.shape, dtype=signal.dtype, device=signal.device) < purity
        return torch.where(positive, signal > 0, signal < 0) | (signal == 0)


def _lstsq_weights(matrix: Tensor, direction: Tensor) -> Tensor:
    """Least-squares coefficients w of ``direction`` on the rows: ``(G G^T)^+ G d``."""
    gram = (matrix @ matrix.T).to(torch.float64)
    rhs = (matrix @ direction).to(torch.float64)
    rtol = gram.shape[0] * torch.finfo(matrix.dtype).eps
    weights = torch.linalg.pinv(gram, rtol=rtol, hermitian=True) @ rhs
    return weights.to(matrix.dtype)
