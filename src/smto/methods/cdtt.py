"""CDTT: the EDM direction pulled towards the tasks whose gradients stop shrinking.

Nakamura, Wolf, Grassi, "Leveraging convergence behavior to balance conflicting tasks in
multi-task learning", Neurocomputing 2022 (arXiv 2204.06698). Original code:
github.com/tiemink/MTL_TaskTensioner (``GradHistory``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from scipy.optimize import nnls
from torch import Tensor

from smto.method import GramWeights, Scale
from smto.methods.edm import EDM, edm_weights, min_norm_failure

_E = math.e


def tensions(ratio: Tensor, losses: Tensor, alpha: float) -> Tensor:
    """tension_i = max(0, alpha / (1 + exp(-x_i e + e)) + 1 - alpha), x_i = ratio_i + log10 L_i.

    A loss <= 0 is taken as the limit L -> 0+ (tension 1 - alpha, or 0 for alpha >= 1).
    """
    x = ratio + torch.log10(losses.clamp_min(1e-300))
    return (alpha / (1.0 + torch.exp(_E - x * _E)) + 1.0 - alpha).clamp_min(0.0)


def tensioned_coefficients(gram: Tensor, base: Tensor, tension: Tensor) -> tuple[Tensor, int, bool]:
    """The coefficients of v = d + sum_i tension_i unit(g_i - d), corrected so that no g_i is
    more than 90 degrees away from v, with d = sum_i base_i g_i (all in float64, K x K).

    Correction, first as in the original (one pass over the tasks in order): where
    g_i . v < 0, v is replaced by the point where the line from g_i through v crosses g_i's
    orthogonal hyperplane, v <- (1 - s) g_i + s v with s = |g_i|^2 / (|g_i|^2 - g_i . v)
    (the original's tan(angle) |g_i| w_unit). A later task's correction can undo an earlier
    one (the original then keeps a direction opposing a task); where that happens, v is
    projected onto the cone {x : g_i . x >= 0 for all i} (:func:`project_onto_cone`).
    Returns (coefficients, number of single-task corrections, whether the cone projection
    was needed).
    """
    k = gram.shape[0]
    eye = torch.eye(k, dtype=gram.dtype, device=gram.device)
    diffs = eye - base.unsqueeze(0)
    lengths = torch.einsum("ij,jk,ik->i", diffs, gram, diffs).clamp_min(0.0).sqrt()
    scale = float(gram.diagonal().clamp_min(0.0).max().sqrt())
    active = (tension > 0) & (lengths > 1e-12 * max(scale, 1e-300))
    factors = torch.where(active, tension / lengths.clamp_min(1e-300), torch.zeros_like(tension))
    v = base + factors @ diffs
    norms_sq = gram.diagonal().clamp_min(0.0)
    corrections = 0
    for i in range(k):
        projection = float(gram[i] @ v)
        if _opposes(gram, v, i, projection):
            s = float(norms_sq[i]) / (float(norms_sq[i]) - projection)
            v = s * v
            v[i] += 1.0 - s
            corrections += 1
    if corrections > 0 and any(_opposes(gram, v, i, float(gram[i] @ v)) for i in range(k)):
        return project_onto_cone(gram, v), corrections, True
    return v, corrections, False


def _opposes(gram: Tensor, v: Tensor, i: int, projection: float) -> bool:
    size = math.sqrt(max(float(v @ gram @ v), 0.0) * max(float(gram[i, i]), 0.0))
    return projection < -1e-9 * size


def project_onto_cone(gram: Tensor, coefficients: Tensor) -> Tensor:
    """The Euclidean projection of x = G^T c onto {x : G x >= 0}, as coefficients.

    The projection is x + G^T mu with mu >= 0 minimizing |G^T (c + mu)| (the dual problem),
    a non-negative least-squares problem in R mu with A = R^T R (K x K). Where the cone
    meets the span of the gradients only at 0 (no direction in it opposes no task), the
    projection is 0, returned as zero coefficients (not rounding noise).
    """
    lam, vec = torch.linalg.eigh(gram)
    r = (lam.clamp_min(0.0).sqrt().unsqueeze(1) * vec.T).numpy()
    mu, _ = nnls(r, -(r @ coefficients.numpy()), maxiter=50 * gram.shape[0])
    projected = coefficients + torch.from_numpy(mu).to(coefficients)
    # |G^T c| below 1e-7 |c|_1 max|g_i| is cancellation noise (of a float32 Gram matrix).
    noise = 1e-7 * float(projected.abs().sum()) * float(gram.diagonal().clamp_min(0).max().sqrt())
    if float(projected @ gram @ projected) <= noise**2:
        return torch.zeros_like(projected)
    return projected


class CDTT(EDM):
    """CDTT: the EDM direction d (:class:`EDM`) plus "task tensioners".

    Each step records the norm of every task gradient in a sliding window of the last
    ``window`` steps. From the step where a window was already full at the previous step
    (step ``window + 1``: the original compares the window with the same window one step
    earlier, overlapping in ``window - 1`` norms), x_i = sum(window_i) / sum(previous
    window_i) + log10(L_i) and tension_i = max(0, alpha / (1 + exp(-x_i e + e)) + 1 - alpha)
    (:func:`tensions`); the update is v = d + sum_i tension_i unit(g_i - d), corrected where
    a task gradient is more than 90 degrees from it (:func:`tensioned_coefficients`). During
    the first ``window`` steps the update is EDM's d. A previous window summing to 0 (zero
    gradients) gives ratio 1.

    The tensions pull towards tasks whose gradient norms grow (ratio > 1) or whose losses are
    large; alpha in [0, 1] sets the range (1 - alpha, 1) of a tension (the study's grid is
    {0.2, 0.4, ..., 1.0}; the default 0.3 is the authors' released configuration); alpha > 1
    lets small x give no tension at all.

    Deviation: the original corrects task by task in one pass, and a later correction can
    leave an earlier task more than 90 degrees away (the original keeps that direction;
    frequent with K >= 3 small, conflicting gradients). Here, and only there, the result of
    that pass is projected onto the cone {x : g_i . x >= 0 for all i}
    (``info["cone_projection"] = 1``), so the update never opposes a task gradient; otherwise
    the result is the original's. Should the projection fail (non-negative least squares
    not converging), the step uses d, counts ``solver_failures`` and warns
    (:class:`smto.solvers.SolverWarning`), with ``info["tension_fallback"] = 1``.

    A step where a task gradient is exactly zero is skipped, as in the original: a zero
    shared update (weights 0, ``info["skipped"] = 1``; the heads still get their gradients)
    and the window is not touched.

    Reported weights: v = sum_k weights_k g_k exactly (the tension and correction are tracked
    as coefficients). The window is in ``state_dict()``.

    Scale (CUSTOM): d is a weighted mean (weights sum to 1), but each tension adds a vector
    of norm tension_i <= 1 in absolute units, whatever the gradients' magnitude: for small
    gradients the tension dominates, for large ones it is negligible.
    """

    display_name = "CDTT"
    scale = Scale.CUSTOM

    def __init__(
        self, n_tasks: int, alpha: float = 0.3, window: int = 10, space: str | None = None
    ) -> None:
        super().__init__(n_tasks, space)
        if (
            not isinstance(alpha, (int, float))
            or isinstance(alpha, bool)
            or not math.isfinite(alpha)
            or alpha < 0
        ):
            raise ValueError(
                f"alpha must be a finite number >= 0 (study grid 0.2..1.0), got {alpha!r}"
            )
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        self.alpha = float(alpha)
        self.window = window
        self._norms = torch.zeros(n_tasks, window, dtype=torch.float64)
        self._steps = 0
        self._previous: Tensor | None = None

    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        base, norms, info = edm_weights(gram)
        k = self.n_tasks
        out: dict[str, float] = {"solver_iterations": info["solver_iterations"], "skipped": 0.0}
        if bool((norms == 0).any()):
            # As the original: a task with a zero gradient skips the step (zero shared
            # update) and leaves the window untouched.
            out.update({f"tension_{i}": 0.0 for i in range(k)})
            out.update({"skipped": 1.0, "corrections": 0.0, "cone_projection": 0.0})
            out["tension_fallback"] = 0.0
            return GramWeights(torch.zeros(k, dtype=torch.float64), out)
        failure = min_norm_failure(info)
        self._norms[:, self._steps % self.window] = norms
        self._steps += 1
        coefficients = base
        tension = torch.zeros(k, dtype=torch.float64)
        corrections, projected, fallback = 0, False, False
        if self._steps >= self.window:
            current = self._norms.sum(dim=1)
            if self._previous is not None:
                previous = self._previous
                ratio = torch.where(
                    previous > 0, current / previous.clamp_min(1e-300), torch.ones_like(current)
                )
                tension = tensions(ratio, losses, self.alpha)
                try:
                    coefficients, corrections, projected = tensioned_coefficients(
                        gram, base, tension
                    )
                except RuntimeError:  # NNLS iteration limit: keep EDM's direction
                    fallback = True
                    failure = (
                        "projecting the tensioned direction onto the cone of non-opposing "
                        "directions failed; using EDM's direction this step"
                    )
            self._previous = current
        out.update({f"tension_{i}": t for i, t in enumerate(tension.tolist())})
        out["corrections"] = float(corrections)
        out["cone_projection"] = float(projected)
        out["tension_fallback"] = float(fallback)
        return GramWeights(coefficients, out, failure)

    def get_extra_state(self) -> dict[str, Any]:
        return {
            **super().get_extra_state(),
            "norms": self._norms.clone(),
            "steps": self._steps,
            "previous": None if self._previous is None else self._previous.clone(),
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        norms = state["norms"]
        if tuple(norms.shape) != (self.n_tasks, self.window):
            raise ValueError(
                f"CDTT state holds a window of shape {tuple(norms.shape)}, this instance "
                f"needs ({self.n_tasks}, {self.window}) (n_tasks, window)"
            )
        super().set_extra_state(state)
        self._norms = norms.to("cpu", torch.float64).clone()
        self._steps = int(state["steps"])
        previous = state["previous"]
        self._previous = None if previous is None else previous.to("cpu", torch.float64).clone()
