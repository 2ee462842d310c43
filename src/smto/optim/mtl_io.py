"""MTL-IO: one SGD (+ momentum) optimizer per task, stepped task by task.

Pascal, Michiardi, Bost, Huet and Zuluaga, "Improved optimization strategies for deep
Multi-Task Networks", arXiv 2109.11678 (2021): instead of one step on the summed objective,
each batch takes K steps in turn, step k on task k's loss alone at the parameters the
previous steps left, and "IO" (individual optimizers) gives each task its own optimizer
state. Their release (``one_optim_per_task=True``, ``per_batch_step=False``) builds K torch
optimizers over all parameters and, per batch and task k in order, runs a forward pass,
``loss_k.backward()`` and ``optimizer[k].step()``. Elich et al. ("Examining Common Paradigms
in Multi-Task Learning", Tables A4-A7) run it with SGD + momentum.

The alternation is what makes it differ from equal weighting: SGD's momentum is linear, so K
per-task buffers fed with gradients taken at one point sum to the one buffer of the summed
gradient, and a simultaneous per-task-state variant would be plain SGD on the sum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class MTLIO(torch.optim.Optimizer):
    """SGD with momentum with one momentum buffer per task and parameter, one task a step.

    ``step(task=k)`` updates every parameter that has a gradient (task k's, from
    ``loss_k.backward()``: the shared parameters and head k) with task k's own buffer, as
    torch's SGD does (dampening 0, coupled L2 weight decay, optionally Nesterov)::

        g = p.grad + weight_decay * p
        b_k = g (first step of task k on p), else momentum * b_k + g
        p <- p - lr * (g + momentum * b_k if nesterov else b_k)

    Every parameter's state holds K buffers (``state[p]["momentum_buffer"]`` of shape
    (K, *p.shape), row k started on task k's first step); a shared parameter uses all K, a
    head only its own task's (the others never get a gradient). With ``momentum=0`` no
    buffer is kept. ``n_tasks=1`` is ``torch.optim.SGD``.
    ``step()`` without a task is refused: the trainer must step task by task
    (:func:`smto.train.step.training_step` does, one forward pass per task).

    Args:
        params: parameters or parameter groups.
        n_tasks: K.
        lr: learning rate.
        momentum: the momentum factor in [0, 1).
        weight_decay: L2 weight decay added to each task's gradient (>= 0), as each of the
            release's per-task torch optimizers does.
        nesterov: Nesterov momentum (needs momentum > 0).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        n_tasks: int,
        lr: float = 1e-2,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if not isinstance(n_tasks, int) or isinstance(n_tasks, bool) or n_tasks < 1:
            raise ValueError(f"n_tasks must be an integer >= 1, got {n_tasks!r}")
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if nesterov and momentum == 0.0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.n_tasks = n_tasks
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(
        self, closure: Callable[[], float] | None = None, *, task: int | None = None
    ) -> float | None:
        """One SGD step from the parameters' current gradients with task ``task``'s state
        (required: MTL-IO steps one task at a time)."""
        if task is None:
            raise RuntimeError(
                "MTL-IO steps one task at a time: for each task k, back-propagate task k's "
                "loss and call step(task=k) (smto.train.step.training_step does this)"
            )
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < self.n_tasks:
            raise ValueError(f"task must be an integer in [0, {self.n_tasks}), got {task!r}")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("MTL-IO does not support sparse gradients")
                g = p.grad if wd == 0.0 else p.grad.add(p, alpha=wd)
                if momentum != 0.0:
                    g = self._momentum(p, g, task, momentum, group["nesterov"])
                p.add_(g, alpha=-lr)
        return loss

    def _momentum(self, p: Tensor, g: Tensor, task: int, momentum: float, nesterov: bool) -> Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros(
                (self.n_tasks, *p.shape), dtype=p.dtype, device=p.device
            )
            state["started"] = torch.zeros(self.n_tasks, dtype=torch.bool)
        buffer = state["momentum_buffer"][task]
        if bool(state["started"][task]):
            buffer.mul_(momentum).add_(g)
        else:
            buffer.copy_(g)
            state["started"][task] = True
        return g.add(buffer, alpha=momentum) if nesterov else buffer
