"""signSGD with momentum ("Signum").

Bernstein, Wang, Azizzadenesheli and Anandkumar, "signSGD: Compressed Optimisation for
Non-Convex Problems", ICML 2018 (arXiv 1802.04434), Algorithm "Signum". Elich et al.
("Examining Common Paradigms in Multi-Task Learning") use it because the sign of a single
task's gradient does not depend on that task's loss scale, so the heads' updates are
invariant to loss weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class SignSGD(torch.optim.Optimizer):
    """Signum: ``m <- momentum * m + (1 - momentum) * g``, ``p <- p - lr * sign(m)``.

    The momentum follows the paper (``m_0 = 0`` and the ``(1 - momentum)`` damping).
    Because ``m`` then equals ``(1 - momentum)`` times the undamped sum
    ``sum_i momentum^(t-i) g_i`` and the sign ignores positive factors, the update is the
    same as with torch-SGD-style momentum ``m <- momentum * m + g``; it differs from
    implementations that start the buffer at ``g_1`` instead of ``(1 - momentum) g_1``.
    ``momentum=0`` is plain signSGD: ``p <- p - lr * sign(g)``. ``sign(0) = 0``.

    Weight decay is decoupled by default (``p <- (1 - lr * weight_decay) p`` before the sign
    step, as in AdamW): it then does not depend on the gradients' scale, so the heads keep
    their exact loss-scale invariance. ``decoupled_weight_decay=False`` gives the coupled L2
    of the reference Signum implementations (``g <- g + weight_decay * p`` before the
    momentum).

    Args:
        params: parameters or parameter groups.
        lr: the step size of every coordinate.
        momentum: the momentum constant beta in [0, 1).
        weight_decay: weight decay factor (>= 0).
        decoupled_weight_decay: decoupled (default) or coupled L2 weight decay.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = True,
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            decoupled_weight_decay=bool(decoupled_weight_decay),
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Performs one optimization step (``closure`` re-evaluates the loss, optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("SignSGD does not support sparse gradients")
                params.append(p)
                grads.append(p.grad)
            if not params:
                continue
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            if wd != 0.0:
                if group["decoupled_weight_decay"]:
                    torch._foreach_mul_(params, 1.0 - lr * wd)
                else:
                    grads = torch._foreach_add(grads, params, alpha=wd)
            if momentum != 0.0:
                bufs = []
                for p in params:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(
                            p, memory_format=torch.preserve_format
                        )
                    bufs.append(state["momentum_buffer"])
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads, alpha=1.0 - momentum)
                directions = torch._foreach_sign(bufs)
            else:
                directions = torch._foreach_sign(grads)
            torch._foreach_add_(params, directions, alpha=-lr)
        return loss
