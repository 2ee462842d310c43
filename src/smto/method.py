"""The one interface every multi-task optimization method implements.

A method turns per-task losses (loss-based methods), or per-task gradients of the shared
parameters or of the shared representation (gradient-based methods), into the update written
into ``.grad``, and reports the per-task weights it used.

In a training loop::

    method = smto.create("nash_mtl", n_tasks=2)
    ...
    losses = torch.stack([loss_1, loss_2])
    optimizer.zero_grad()
    result = method.backward(losses, shared_params=model.encoder.parameters(), features=z)
    optimizer.step()

Parameters that are neither shared nor the representation (the heads, a method's own
learnable parameters) receive the plain sum of their task gradients; they are found on the
autograd graph, so the caller never lists them.

A method is a ``torch.nn.Module``: its own trainable parameters (UW's log-variances, IMTL-L's
scales) are ``method.parameters()`` (give them to the optimizer), its state (FAMO's logits,
DWA's history, Nash-MTL's previous solution, ...) is in ``method.state_dict()``, and
``method.to(device)`` moves it.
"""

from __future__ import annotations

import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from smto.errors import NonFiniteError, check_finite, check_rows
from smto.jacobian import (
    GradientEngine,
    TaskGradients,
    accumulate_flat,
    accumulate_grad,
    check_losses,
    other_leaves,
)
from smto.solvers import SolverWarning

HEADS: tuple[str, ...] = ("sum", "weighted")
"""What the heads of a gradient method receive: the plain sum of their task gradients, or
the sum weighted by the method's weights."""


class Space(str, Enum):
    """What a method works on."""

    LOSSES = "losses"
    """The task losses only: the method builds one objective and backpropagates it."""
    PARAMS = "params"
    """Per-task gradients of the shared parameters (the K x P Jacobian)."""
    FEATURES = "features"
    """Per-task gradients of the shared representation (the "UB" mode of MGDA-UB)."""


class Scale(str, Enum):
    """The scale convention of a method's update relative to the task gradients.

    It matters with SGD (not with Adam, which is invariant to a global scale).
    """

    MEAN = "mean"
    """Weights sum to 1 (the update is on the scale of the mean task gradient)."""
    SUM = "sum"
    """Weights sum to K (the update is on the scale of the summed task gradients)."""
    CUSTOM = "custom"
    """Neither; the method's docstring says what the scale is."""


@dataclass(frozen=True)
class StepResult:
    """What a method reports for one step.

    ``weights`` (shape K, detached) are the effective task weights: the update of the shared
    parameters is ``sum_k weights[k] * g_k`` for methods whose update is a combination of the
    task gradients (for the others, each method documents what it reports).
    ``info`` holds scalar diagnostics (solver iterations, convergence flags, ...).
    """

    weights: Tensor
    info: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Aggregation:
    """The result of combining a K x N gradient matrix: an update direction and weights.

    ``head_weights`` are the weights the heads get with ``heads="weighted"`` (default:
    ``weights``).
    """

    direction: Tensor
    weights: Tensor
    info: dict[str, float] = field(default_factory=dict)
    head_weights: Tensor | None = None


@dataclass(frozen=True)
class GramWeights:
    """What a :class:`GramMethod` computes from the Gram matrix: the (K,) float64 weights of
    the update ``weights @ G``, diagnostics, and, where the solve failed, why (the base
    class counts and warns)."""

    weights: Tensor
    info: dict[str, float] = field(default_factory=dict)
    failure: str | None = None
    head_weights: Tensor | None = None


@dataclass(frozen=True)
class RunContext:
    """What a trainer knows about its run, from which some methods derive defaults
    (:meth:`Method.defaults_from`): the tasks' loss types (``"classification"``,
    ``"segmentation"``, ``"l1"``, ``"mse"``), the size of dimension 1 of the representation,
    the initial learning rate and the weight decay."""

    loss_types: tuple[str, ...] | None = None
    representation_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None


class Method(nn.Module, ABC):
    """Base class of every method. Subclass :class:`LossMethod` or :class:`GradientMethod`.

    The contract is :meth:`backward`; the few methods that need more of a training loop
    declare it with a capability of :mod:`smto.capabilities`.
    """

    display_name: ClassVar[str]
    """The name used in the papers' tables (e.g. "Nash-MTL")."""
    scale: ClassVar[Scale]
    """The scale convention of the update (see :class:`Scale`)."""
    space: Space
    """What the method works on (see :class:`Space`)."""
    min_tasks: ClassVar[int] = 1
    """The smallest number of tasks the method is defined for."""

    def __init__(self, n_tasks: int) -> None:
        super().__init__()
        if not isinstance(n_tasks, int) or isinstance(n_tasks, bool) or n_tasks < self.min_tasks:
            raise ValueError(
                f"{type(self).__name__} needs n_tasks to be an integer >= {self.min_tasks}, "
                f"got {n_tasks!r}"
            )
        self.n_tasks = n_tasks
        self.engine = GradientEngine()
        self.last_weights: Tensor | None = None

    @abstractmethod
    def backward(
        self,
        losses: Tensor,
        shared_params: Iterable[Tensor] | None = None,
        features: Tensor | None = None,
    ) -> StepResult:
        """Writes the method's update into ``.grad`` and returns the weights it used.

        Args:
            losses: shape (K,), one loss per task, with their graph.
            shared_params: the shared encoder's parameters (needed by methods working on
                the shared parameters, and by per-task optimizers).
            features: the shared representation the heads take as input (needed by methods
                working on the representation).
        """

    @classmethod
    def defaults_from(cls, context: RunContext) -> dict[str, Any]:
        """Hyperparameter defaults this method derives from the run (UW's loss types,
        RotoGrad's feature size, ...); the registry applies them below the caller's values.
        None by default."""
        return {}

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor arguments of this method (each is kept as an attribute)."""
        names = [
            n
            for n in inspect.signature(type(self).__init__).parameters
            if n not in ("self", "n_tasks")
        ]
        values = {n: getattr(self, n) for n in names if hasattr(self, n)}
        return {n: v.value if isinstance(v, Enum) else v for n, v in values.items()}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())

    def _check_losses(self, losses: Tensor) -> None:
        """Shape, graph and finiteness (:class:`smto.errors.NonFiniteError`) of the losses."""
        check_losses(losses)
        if losses.shape[0] != self.n_tasks:
            raise ValueError(
                f"{self.display_name} was built for {self.n_tasks} tasks, got {losses.shape[0]} "
                "losses"
            )
        check_finite("loss", losses.detach())

    def _report(self, weights: Tensor, info: dict[str, float] | None = None) -> StepResult:
        self.last_weights = weights.detach().clone()
        return StepResult(self.last_weights, info or {})


class LossMethod(Method):
    """A method that builds one objective from the task losses: sum_k terms_k.

    Subclasses implement :meth:`terms`, an elementwise function of the losses (term k
    depends on L_k only, and on the method's own parameters). With ``per_task_grads=True``
    the shared parameters also receive their per-task gradients in ``param.task_grads``
    (shape (K, *param.shape)), which per-task optimizers (:class:`smto.optim.PerTaskAdam`)
    use.

    Non-finite losses, objective terms or gradients of the shared parameters raise
    :class:`smto.errors.NonFiniteError` naming the task(s).
    """

    space = Space.LOSSES

    @abstractmethod
    def terms(self, losses: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the per-task terms of the objective (shape K, with graph) and the
        effective weights d objective / d L_k (shape K)."""

    def backward(
        self,
        losses: Tensor,
        shared_params: Iterable[Tensor] | None = None,
        features: Tensor | None = None,
        per_task_grads: bool = False,
    ) -> StepResult:
        self._check_losses(losses)
        shared = None if shared_params is None else list(shared_params)
        if not per_task_grads:
            terms, weights = self.terms(losses)
            check_finite("objective term", terms.detach())
            # The graph is kept (it is released with the losses) only to name the task on the
            # error path of the gradient check.
            terms.sum().backward(retain_graph=shared is not None)
            if shared is not None:
                self._check_shared_grads(losses, shared, features)
            return self._report(weights)
        if shared is None:
            raise ValueError("per_task_grads=True needs shared_params")
        leaf = losses.detach().clone().requires_grad_(True)
        terms, weights = self.terms(leaf)
        check_finite("objective term", terms.detach())
        own = other_leaves(terms, exclude=[leaf])
        derivatives = torch.autograd.grad(terms.sum(), [leaf, *own], allow_unused=True)
        grads = self.engine.task_gradients(losses, shared, features, scales=derivatives[0])
        check_rows("gradient", grads.matrix)
        for p, g in zip(shared, grads.shared_grads):
            p.task_grads = g
        accumulate_grad(shared, [g.sum(dim=0) for g in grads.shared_grads])
        grads.accumulate_others()
        accumulate_grad(*_used(own, derivatives[1:]))
        return self._report(weights)

    def _check_shared_grads(
        self, losses: Tensor, shared: list[Tensor], features: Tensor | None
    ) -> None:
        grads = [p.grad for p in shared if p.grad is not None]
        if not grads:
            return
        total = torch.stack(torch._foreach_norm(grads)).sum()  # one fused pass
        if bool(torch.isfinite(total)):
            return
        check_rows("gradient", self.engine.task_gradients(losses, shared, features).matrix)
        raise NonFiniteError("gradient of the combined objective", list(range(self.n_tasks)))


class GradientMethod(Method):
    """A method that combines the K task gradients into one update.

    Subclasses implement :meth:`aggregate` on the K x N gradient matrix (or, for most,
    :class:`GramMethod`'s ``weigh`` on its Gram matrix); it works on the shared parameters
    (``space="params"``) or the shared representation (``space="features"``). Everything
    else (the heads, a method's own parameters) gets the plain sum of the task gradients, or
    with ``heads="weighted"`` their sum weighted by the method's weights. Each head is
    traversed once per step when the losses are a ``torch.stack`` of the task losses and the
    representation is passed (see :meth:`smto.jacobian.GradientEngine.task_gradients`).
    """

    default_space: ClassVar[Space] = Space.PARAMS

    def __init__(self, n_tasks: int, space: str | None = None, heads: str = "sum") -> None:
        super().__init__(n_tasks)
        chosen = self.default_space if space is None else space
        try:
            self.space = Space(chosen)
        except ValueError:
            raise ValueError(f"space must be 'params' or 'features', got {chosen!r}") from None
        if self.space is Space.LOSSES:
            raise ValueError("a gradient method works on 'params' or 'features', not 'losses'")
        if heads not in HEADS:
            raise ValueError(f"heads must be one of {HEADS}, got {heads!r}")
        self.heads = heads

    @abstractmethod
    def aggregate(self, matrix: Tensor, losses: Tensor) -> Aggregation:
        """Combines the K x N task gradient matrix into an update of length N.

        ``losses`` (shape K, detached) are the task losses of this step.
        """

    def combine(self, grads: TaskGradients, losses: Tensor, features: Tensor | None) -> Aggregation:
        """The step's aggregation: :meth:`aggregate` of the task-gradient matrix. Methods
        that also need the representation's values (GradDrop) override this."""
        return self.aggregate(grads.matrix, losses)

    def transform_losses(self, losses: Tensor) -> Tensor:
        """An elementwise map of the losses applied before their gradients are taken
        (identity; IMTL scales them). It is called on a detached copy: task k's gradient is
        that of L_k times the derivative dT_k / dL_k."""
        return losses

    def backward(
        self,
        losses: Tensor,
        shared_params: Iterable[Tensor] | None = None,
        features: Tensor | None = None,
    ) -> StepResult:
        self._check_losses(losses)
        values, scales, own = self._transformed(losses)
        if self.space is Space.PARAMS:
            if shared_params is None:
                raise ValueError(
                    f"{self.display_name} works on the shared parameters: pass shared_params"
                )
            shared = list(shared_params)
            grads = self.engine.task_gradients(losses, shared, features, scales=scales)
            agg = self.combine(grads, values, features)
            accumulate_flat(shared, agg.direction)
        else:
            if features is None or features.grad_fn is None:
                raise ValueError(
                    f"{self.display_name} works on the shared representation: pass features, "
                    "the encoder's output tensor (with its graph) that the heads take as input"
                )
            grads = self.engine.task_gradients(losses, [features], features, scales=scales)
            agg = self.combine(grads, values, features)
            features.backward(agg.direction.view_as(features))
        if self.heads == "weighted":
            grads.accumulate_others(agg.weights if agg.head_weights is None else agg.head_weights)
        else:
            grads.accumulate_others()
        if own is not None:
            accumulate_grad(*own)
        return self._report(agg.weights, agg.info)

    def _transformed(
        self, losses: Tensor
    ) -> tuple[Tensor, Tensor | None, tuple[list[Tensor], list[Tensor]] | None]:
        """The transformed loss values, dT_k / dL_k, and the gradients of the method's own
        parameters in sum_k T_k (``None`` twice without a transform)."""
        if type(self).transform_losses is GradientMethod.transform_losses:
            return losses.detach(), None, None
        leaf = losses.detach().clone().requires_grad_(True)
        transformed = self.transform_losses(leaf)
        check_finite("transformed loss", transformed.detach())
        own = other_leaves(transformed, exclude=[leaf])
        derivatives = torch.autograd.grad(transformed.sum(), [leaf, *own], allow_unused=True)
        return transformed.detach(), derivatives[0], _used(own, derivatives[1:])

    @staticmethod
    def _check_rows(matrix: Tensor) -> None:
        """Raises :class:`smto.errors.NonFiniteError` naming the tasks whose gradient (a row)
        is not finite."""
        check_rows("gradient", matrix)


class GramMethod(GradientMethod):
    """A gradient method whose weights depend only on the K x K Gram matrix G G^T (and the
    losses): MGDA, PCGrad, CAGrad, IMTL-G, EDM, CDTT, Nash-MTL, Aligned-MTL.

    Subclasses implement :meth:`weigh` on the float64 CPU Gram matrix. The base class does
    the round trip once: the Gram matrix on the gradients' device, its finiteness
    (:class:`smto.errors.NonFiniteError` naming the task), the transfer, ``weights @ G``,
    and, where ``weigh`` reports a failure, ``info["converged"] = 0``, the count
    ``solver_failures`` (in the state dict) and a :class:`smto.solvers.SolverWarning`.
    """

    def __init__(self, n_tasks: int, space: str | None = None, heads: str = "sum") -> None:
        super().__init__(n_tasks, space, heads)
        self.solver_failures = 0

    @abstractmethod
    def weigh(self, gram: Tensor, losses: Tensor, dtype_eps: float) -> GramWeights:
        """The weights from the K x K Gram matrix and the (K,) losses, both float64 on the
        CPU; ``dtype_eps`` is the machine epsilon of the gradients' dtype (the Gram
        matrix's rounding, for rank decisions)."""

    def aggregate(self, matrix: Tensor, losses: Tensor) -> Aggregation:
        gram = matrix @ matrix.T
        if not bool(torch.isfinite(gram.diagonal()).all()):
            check_rows("gradient", matrix)
            check_finite("squared gradient norm (overflow)", gram.diagonal())
        result = self.weigh(
            gram.to(device="cpu", dtype=torch.float64),
            losses.detach().to(device="cpu", dtype=torch.float64),
            torch.finfo(matrix.dtype).eps,
        )
        info = {"converged": float(result.failure is None), **result.info}
        if result.failure is not None:
            self.solver_failures += 1
            warnings.warn(f"{self.display_name}: {result.failure}", SolverWarning, stacklevel=4)
        weights = result.weights.to(device=matrix.device, dtype=matrix.dtype)
        heads = result.head_weights
        return Aggregation(
            weights @ matrix,
            weights,
            info,
            None if heads is None else heads.to(device=matrix.device, dtype=matrix.dtype),
        )

    def get_extra_state(self) -> dict[str, Any]:
        return {"solver_failures": self.solver_failures}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.solver_failures = int(state["solver_failures"])


def _used(
    params: list[Tensor], grads: tuple[Tensor | None, ...] | list[Tensor | None]
) -> tuple[list[Tensor], list[Tensor]]:
    pairs = [(p, g) for p, g in zip(params, grads) if g is not None]
    return [p for p, _ in pairs], [g for _, g in pairs]
