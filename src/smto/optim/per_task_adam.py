"""Adam with one state per task for the shared parameters (AdaTask).

Yang, Pan, Wang, Yu, Shen, Chen, Xiao, Jiang and Guo, "AdaTask: A Task-Aware Adaptive
Learning Rate Approach to Multi-Task Learning", AAAI 2023 (arXiv 2211.15055). Elich et al.
("Examining Common Paradigms in Multi-Task Learning", App. A1.3) show that it makes every
parameter's update invariant to per-task loss scales (plain Adam is invariant on the heads
only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

_MISSING_TASK_GRADS = (
    "PerTaskAdam: a parameter of a per_task group has a gradient but no per-task gradients "
    "(param.task_grads). Compute them with a loss-based method: "
    "method.backward(losses, shared_params, features, per_task_grads=True), where "
    "shared_params are exactly the parameters of the per_task groups"
)


class PerTaskAdam(torch.optim.Optimizer):
    """Adam with a separate first and second moment per task on the shared parameters.

    For a parameter of a group with ``"per_task": True`` and per-task gradients
    ``g_1..g_K`` (read from ``param.task_grads``, shape ``(K, *param.shape)``), each task
    keeps its own ``m_k, v_k`` and the update is
    ``-lr * sum_k m_hat_k / (sqrt(v_hat_k) + eps)`` (bias-corrected as in torch's Adam). The
    other groups (the heads, which get a single task's gradient) are plain Adam on
    ``param.grad``. With ``n_tasks=1`` this is exactly ``torch.optim.Adam`` (``AdamW`` when
    ``weight_decay > 0``).

    The per-task gradients come from
    ``method.backward(losses, shared_params, features, per_task_grads=True)`` of any
    loss-based method (they are the gradients of the method's per-task terms); a per-task
    parameter with a gradient but no ``task_grads`` raises an error. Per-task parameters
    use ``task_grads`` only, not ``param.grad`` (so clipping ``param.grad`` does not affect
    them). :meth:`step` and :meth:`zero_grad` delete ``task_grads`` from the parameters so
    that stale per-task gradients are never reused.

    Weight decay is decoupled (AdamW: ``p <- (1 - lr * weight_decay) p``) for all groups: a
    coupled L2 term is not a task and has no natural split among the K per-task states,
    and the decoupled decay keeps the loss-scale invariance. (The AdaTask release ignores
    its ``weight_decay`` argument.) The shared parameters' state takes K times Adam's
    memory, and a step costs about K times an Adam step on them.

    Example::

        optimizer = PerTaskAdam(
            [{"params": model.encoder.parameters(), "per_task": True},
             {"params": model.heads.parameters()}],
            n_tasks=K, lr=1e-3,
        )
        optimizer.zero_grad()
        method.backward(losses, model.encoder.parameters(), z, per_task_grads=True)
        optimizer.step()

    Args:
        params: parameters or parameter groups; a group with ``"per_task": True`` holds
            shared parameters (default ``False``: plain Adam).
        n_tasks: K, the number of tasks (the first dimension of ``task_grads``).
        lr: learning rate.
        betas: Adam's (beta1, beta2), each in [0, 1).
        eps: added to sqrt(v_hat) (>= 0).
        weight_decay: decoupled weight decay factor (>= 0).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        n_tasks: int,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if not isinstance(n_tasks, int) or isinstance(n_tasks, bool) or n_tasks < 1:
            raise ValueError(f"n_tasks must be an integer >= 1, got {n_tasks!r}")
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.n_tasks = n_tasks
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, per_task=False
        )
        super().__init__(params, defaults)

    def _collect(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor]]:
        """The parameters to update in ``group`` and the gradients each is updated from."""
        params: list[Tensor] = []
        grads: list[Tensor] = []
        for p in group["params"]:
            if group["per_task"]:
                g = getattr(p, "task_grads", None)
                if g is None:
                    if p.grad is None:
                        continue
                    raise RuntimeError(_MISSING_TASK_GRADS)
                if g.shape != (self.n_tasks, *p.shape):
                    raise RuntimeError(
                        f"PerTaskAdam was built for n_tasks={self.n_tasks}: task_grads must "
                        f"have shape {(self.n_tasks, *p.shape)}, got {tuple(g.shape)}"
                    )
            else:
                g = p.grad
                if g is None:
                    continue
            if g.is_sparse:
                raise RuntimeError("PerTaskAdam does not support sparse gradients")
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(g, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(g, memory_format=torch.preserve_format)
            elif state["exp_avg"].shape != g.shape:
                raise RuntimeError(
                    f"PerTaskAdam state of shape {tuple(state['exp_avg'].shape)} does not match "
                    f"the gradient of shape {tuple(g.shape)} (n_tasks or per_task changed?)"
                )
            params.append(p)
            grads.append(g)
        return params, grads

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Performs one optimization step (``closure`` re-evaluates the loss, optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        try:
            collected = [(group, *self._collect(group)) for group in self.param_groups]
            for group, params, grads in collected:
                if params:
                    self._update(group, params, grads)
        finally:
            self._drop_task_grads()
        return loss

    def _update(self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]) -> None:
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        states = [self.state[p] for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        for s in states:
            s["step"] += 1
        step_sizes = [-lr / (1 - beta1 ** s["step"]) for s in states]
        bias_correction2_sqrts = [(1 - beta2 ** s["step"]) ** 0.5 for s in states]

        if wd != 0.0:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, bias_correction2_sqrts)
        torch._foreach_add_(denoms, eps)
        if not group["per_task"]:
            torch._foreach_addcdiv_(params, exp_avgs, denoms, step_sizes)
            return
        for k in range(self.n_tasks):
            torch._foreach_addcdiv_(
                params, [m[k] for m in exp_avgs], [d[k] for d in denoms], step_sizes
            )

    def _drop_task_grads(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if hasattr(p, "task_grads"):
                    del p.task_grads

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clears ``.grad`` as usual and deletes any ``task_grads`` of the parameters."""
        super().zero_grad(set_to_none=set_to_none)
        self._drop_task_grads()
