"""Scale-invariant loss: the mean of the log task losses.

Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022 (arXiv 2202.01017), where
it is the "SI" baseline; used as such by Gama & Grassi 2025 (arXiv 2505.10347).
"""

from __future__ import annotations

from torch import Tensor

from smto.method import LossMethod, Scale


class SI(LossMethod):
    """Minimizes (1/K) sum_k log L_k, so each task's gradient is divided by K L_k.

    Multiplying a loss by a constant adds a constant to the objective: the update does not
    depend on the scale of any loss. The losses must be positive (log 0 is -inf).

    Scale (CUSTOM): weight 1/(K L_k), i.e. the mean over tasks of grad L_k / L_k
    (the mean of the gradients of log L_k).
    """

    display_name = "SI"
    scale = Scale.CUSTOM

    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        weights = 1.0 / (self.n_tasks * losses.detach())
        return losses.log() / self.n_tasks, weights
