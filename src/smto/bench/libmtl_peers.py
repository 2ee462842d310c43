"""LibMTL's weighting of the same method, as a peer in the step benchmark.

LibMTL (Lin & Zhang, "LibMTL: A Python Library for Multi-Task Learning", JMLR 2023) is pinned
at 1.1.5, the only release on PyPI; its weightings are ``AbsWeighting`` subclasses whose
``backward(losses, **kwargs)`` computes the task gradients itself (one backward pass per task),
writes the update into the shared parameters' ``.grad`` and returns the weights. A peer drives
one of them inside smto's step (same model, batch, heads and optimizer), so its time is
LibMTL's whole backward: its Jacobian and its aggregation.

Three things are needed to run 1.1.5 with today's torch, each as LibMTL's own trainer would:

* ``import LibMTL`` imports its ResNets, which need ``torchvision.models.utils`` (gone since
  torchvision 0.13), and LibMTL declares ``torchvision`` (whose PyPI wheels do not load
  against the CPU torch): it is installed with ``--no-deps`` and :func:`weighting_module`
  loads ``LibMTL.weighting`` (torch, numpy and scipy only) with the package's
  ``__init__`` skipped;
* LibMTL zeroes the shared gradients between tasks with ``encoder.zero_grad()``, which set
  them to zero in the torch 1.x it was written for (to ``None`` today, after which its
  ``param.grad.data = ...`` fails): the peer zeroes them in place;
* the trainer's attributes: ``task_num``, ``device``, ``rep_grad``, ``epoch`` and
  ``train_loss_buffer`` (each epoch's mean losses, kept by :meth:`LibmtlPeer.end_epoch`).

Representation-space weightings (``rep_grad=True``: GradDrop, MGDA-UB, IMTL on the
representation, as smto runs them) get per-task detached copies of the representation as
their heads' inputs, which is what LibMTL's architectures do (``_prepare_rep``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from smto.capabilities import EpochEnd, HeadInputs
from smto.errors import MissingExtraError
from smto.method import Method, Scale, StepResult

LIBMTL_VERSION = "1.1.5"
"""The LibMTL release the peers are written for (the only one on PyPI)."""


@dataclass(frozen=True)
class LibmtlWeighting:
    """LibMTL's class of a method, the keyword arguments that give smto's defaults, whether it
    works on the representation (``rep_grad``) or on the losses alone, and the task counts it
    runs at."""

    cls: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    rep_grad: bool = False
    task_counts: tuple[int, ...] | None = None
    loss_based: bool = False

    @property
    def space(self) -> str:
        """What the weighting works on, as smto's ``Space`` names it."""
        return "features" if self.rep_grad else "losses" if self.loss_based else "params"


LIBMTL: dict[str, LibmtlWeighting] = {
    "unit_scal": LibmtlWeighting("EW", loss_based=True),
    "gls": LibmtlWeighting("GLS", loss_based=True),
    "rlw_normal": LibmtlWeighting("RLW", {"dist": "Normal"}, loss_based=True),
    "rlw_dirichlet": LibmtlWeighting("RLW", {"dist": "Dirichlet"}, loss_based=True),
    "uw": LibmtlWeighting("UW", loss_based=True),
    "dwa": LibmtlWeighting("DWA", {"T": 2.0}, loss_based=True),
    "gradnorm": LibmtlWeighting("GradNorm", {"alpha": 1.5}),
    "mgda": LibmtlWeighting("MGDA", {"mgda_gn": "loss+"}),
    "mgda_ub": LibmtlWeighting("MGDA", {"mgda_gn": "loss+"}, rep_grad=True),
    "pcgrad": LibmtlWeighting("PCGrad"),
    "gradvac": LibmtlWeighting("GradVac", {"beta": 0.5}),
    "imtl": LibmtlWeighting("IMTL", rep_grad=True),
    "graddrop": LibmtlWeighting("GradDrop", {"leak": 0.0}, rep_grad=True),
    # 1.1.5's objective reshapes the weights to (1, 3): it runs at three tasks only.
    "cagrad": LibmtlWeighting("CAGrad", {"calpha": 0.5, "rescale": 1}, task_counts=(3,)),
}
"""smto's name -> LibMTL 1.1.5's weighting with smto's defaults. EW sums the losses where
Unit. Scal. averages them; the others' conventions are smto's (docs/differences.md)."""


def has_libmtl_peer(name: str, n_tasks: int) -> bool:
    """Whether LibMTL 1.1.5 has method ``name`` and runs it at ``n_tasks`` tasks."""
    spec = LIBMTL.get(name)
    return spec is not None and (spec.task_counts is None or n_tasks in spec.task_counts)


def weighting_module() -> types.ModuleType:
    """``LibMTL.weighting``, imported without LibMTL's top-level ``__init__`` (see the module's
    docstring); a :class:`~smto.errors.MissingExtraError` when LibMTL is not installed."""
    if "LibMTL.weighting" in sys.modules:
        return sys.modules["LibMTL.weighting"]
    spec = importlib.util.find_spec("LibMTL")
    if spec is None or spec.submodule_search_locations is None:
        raise MissingExtraError(
            f"the LibMTL peers of bench step need LibMTL: pip install --no-deps "
            f"LibMTL=={LIBMTL_VERSION} (its declared torchvision is not needed)",
            name="LibMTL",
        )
    if "LibMTL" not in sys.modules:
        package = types.ModuleType("LibMTL")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["LibMTL"] = package
    return importlib.import_module("LibMTL.weighting")


def _driven(cls: type, n_tasks: int, rep_grad: bool) -> nn.Module:
    """An instance of LibMTL's weighting ``cls`` with the attributes LibMTL's trainer gives
    its model, the shared parameters set per step."""

    class Driven(cls):  # type: ignore[misc, valid-type]
        def get_share_params(self) -> list[Tensor]:
            return self.shared

        def zero_grad_share_params(self) -> None:
            for param in self.shared:
                if param.grad is not None:
                    param.grad.zero_()

    weighting = Driven()
    weighting.task_num = n_tasks
    weighting.task_name = [f"task{k}" for k in range(n_tasks)]
    weighting.device = torch.device("cpu")
    weighting.rep_grad = rep_grad
    weighting.epoch = 0
    weighting.train_loss_buffer = np.zeros((n_tasks, 0))
    weighting.shared = []
    weighting.rep_tasks = {}
    weighting.init_param()
    return weighting


class LibmtlPeer(Method, EpochEnd):
    """LibMTL's weighting of method ``name`` (:data:`LIBMTL`), run on smto's step."""

    scale = Scale.CUSTOM

    def __init__(self, n_tasks: int, name: str) -> None:
        super().__init__(n_tasks)
        if not has_libmtl_peer(name, n_tasks):
            raise ValueError(f"LibMTL {LIBMTL_VERSION} has no {name!r} at {n_tasks} tasks")
        self.spec = LIBMTL[name]
        cls = getattr(weighting_module(), self.spec.cls)
        self.weighting = _driven(cls, n_tasks, self.spec.rep_grad)
        self.display_name = f"LibMTL {self.spec.cls}"
        self._loss_sum: Tensor | None = None
        self._n_batches = 0

    def backward(
        self,
        losses: Tensor,
        shared_params: Iterable[Tensor] | None = None,
        features: Tensor | None = None,
    ) -> StepResult:
        """LibMTL's ``backward(losses, **kwargs)`` on the shared parameters (or, for
        ``rep_grad`` weightings, on ``features``, which the heads saw as per-task copies)."""
        self._check_losses(losses)
        if shared_params is None:
            raise ValueError(f"{self.display_name} needs the shared parameters")
        self.weighting.shared = list(shared_params)
        self.weighting.device = losses.device
        if self.spec.rep_grad:
            if features is None:
                raise ValueError(f"{self.display_name} needs the representation")
            self.weighting.rep = features
        detached = losses.detach()
        self._loss_sum = detached if self._loss_sum is None else self._loss_sum + detached
        self._n_batches += 1
        weights = self.weighting.backward(losses, **self.spec.kwargs)
        if weights is None:  # GradDrop reports none
            weights = np.full(self.n_tasks, np.nan)
        return self._report(torch.as_tensor(np.asarray(weights, dtype=np.float64)))

    def end_epoch(self) -> None:
        """Appends the epoch's mean losses to LibMTL's ``train_loss_buffer``, then counts the
        epoch, as LibMTL's trainer does."""
        if self._loss_sum is None:
            return
        mean = (self._loss_sum / self._n_batches).cpu().numpy()[:, None]
        buffer = self.weighting.train_loss_buffer
        self.weighting.train_loss_buffer = np.concatenate([buffer, mean], axis=1)
        self.weighting.epoch += 1
        self._loss_sum, self._n_batches = None, 0


class LibmtlRepPeer(LibmtlPeer, HeadInputs):
    """A ``rep_grad`` weighting: head k takes its own detached copy of the representation,
    whose gradient LibMTL reads as task k's."""

    def head_inputs(self, features: Tensor) -> list[Tensor]:
        """Per-task leaf copies of the representation (LibMTL's ``_prepare_rep``)."""
        copies = [features.detach().clone().requires_grad_(True) for _ in range(self.n_tasks)]
        self.weighting.rep_tasks = dict(zip(self.weighting.task_name, copies, strict=True))
        return copies

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """LibMTL's own parameters (IMTL's loss scales) at the model's learning rate."""
        params = list(self.parameters())
        return [{"params": params, "lr": lr}] if params else []


def libmtl_peer(n_tasks: int, name: str) -> LibmtlPeer:
    """The peer of method ``name``: :class:`LibmtlRepPeer` for representation weightings."""
    spec = LIBMTL.get(name)
    cls = LibmtlRepPeer if spec is not None and spec.rep_grad else LibmtlPeer
    return cls(n_tasks, name)
