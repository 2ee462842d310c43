"""``torch.compile`` for a run's model (``RunConfig.compile``): where it serves, and how.

Measured on a 2-core CPU (Multi-MNIST CL_RR, the LeNet, batch 256, one torch thread): Unit.
Scal.'s step 55 -> 49 ms, an engine epoch 5-8 % shorter (the evaluation is compiled too),
after about 10 s of compiling in the first epoch; the numbers agree with the eager run's to
float tolerance, not bitwise (fused kernels round differently).

Gradient-combining methods are refused: the per-task gradient engine walks the autograd
graph (:func:`smto.jacobian.task_roots`, :func:`smto.jacobian.other_leaves`) to tell the
shared part from the heads, and a compiled model is one node there, so the split is lost
(MGDA's weights were 0.5 / 0.5 from the first step). Compiling the encoder and each head on
their own keeps the split, but measured no faster (MGDA: 78 ms a step either way). Methods
that call the model with other parameters or inputs (Auto-Lambda's validation step,
RotoGrad's head inputs, BayesAgg-MTL's head targets), per-task Adam and MTL-IO are refused
as not measured.
"""

from __future__ import annotations

import torch
from torch import nn

from smto.capabilities import HeadInputs, HeadTargets, ValidationStep
from smto.method import LossMethod, Method

SERVED_OPTIMIZERS = ("adam", "sgd", "signsgd")


def compile_refusal(method: Method, optimizer: str) -> str | None:
    """Why ``method`` with ``optimizer`` cannot train a compiled model, or None."""
    if not isinstance(method, LossMethod):
        return (
            "it combines per-task gradients, found by walking the autograd graph, which a "
            "compiled model hides"
        )
    for capability in (ValidationStep, HeadInputs, HeadTargets):
        if isinstance(method, capability):
            return f"it calls the model in its own way ({capability.__name__})"
    if optimizer not in SERVED_OPTIMIZERS:
        return f"the {optimizer} optimizer is not served (only {', '.join(SERVED_OPTIMIZERS)})"
    return None


def compile_model(model: nn.Module) -> None:
    """Compiles ``model``'s calls in place (compiling happens at the first forward of each
    mode and batch shape). Donated buffers are turned off, process-wide: a loss-based
    method's backward keeps the graph for its gradient check's error path, which they forbid."""
    torch._functorch.config.donated_buffer = False
    model.compile()
