"""Gradient probes during training: how far task gradients agree, between tasks and between
samples, on the shared parameters.

Two analyses, each at its own interval of iterations within an epoch (iterations 0,
``every``, 2 ``every``, ...), summarized per epoch into the run record:

* **The main study's metric** (its Fig. 3a and 7; PROTOCOL.md "Evaluation"): the mean over
  the K tasks of cos(g_k, mean_j g_j), g_k the gradient of task k's batch loss; every 100
  iterations by default, averaged per epoch.
* **Elich et al.'s pairs** (Sec. 4.2, Fig. 4, App. A5): the cosine similarity, the magnitude
  similarity 2|g||g'| / (|g|^2 + |g'|^2), the ratio of conflicting parameters (opposite
  signs) and the raw scalar product (Fig. A7), over *inter-task* pairs (two tasks, one sample)
  and *inter-sample* pairs (two samples, one task), of per-sample per-task gradients on at
  most 8 samples and 8 tasks drawn at random; the cosine also over conflicting (cos < 0) and
  supporting (cos >= 0) pairs apart (Fig. A6); and the same metrics between averaged
  gradients (Fig. A5: each task's gradient averaged over the drawn samples, each sample's
  averaged over the drawn tasks). Every 5 iterations by default; per epoch the mean, the std
  (over all pairs of the epoch, ddof 0) and the 2.5 / 97.5 percentiles (numpy's linear rule).

A probe never changes the training: it reads the model's parameters and writes no ``.grad``;
its subsets are drawn from a generator of its own (seeded by the run's seed, the epoch and
the iteration, so a resumed run probes the same samples); its Dropout masks come from the
global generator inside :func:`torch.random.fork_rng` seeded the same way, so the training's
random streams are where they were; BatchNorm statistics are never updated (see
:func:`per_sample_task_gradients` and :func:`batch_task_gradients`). A seeded run's losses and
metrics are therefore bitwise those of the same run unprobed.

The per-sample gradients are ``torch.func``'s: ``vmap`` over samples of ``jacrev`` of the
sample's K losses (a functional call of the model), computed on the drawn subset only. The
pair measures come from the Gram matrix of the drawn gradients and the counts of opposite
signs, summed over parameter blocks and column chunks, so the memory is one copy of the S T
gradients. The probe sees the model's plain forward: a method's head inputs (RotoGrad's
rotations) are not applied.
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from smto.errors import ConfigError, NonFiniteError, SmtoError
from smto.jacobian import GradientEngine
from smto.models.base import SharedEncoderModel

LossFn = Callable[[Mapping[str, Tensor], Any], Tensor]
"""Maps the heads' outputs and a batch's targets to the (K,) task losses (``Problem.losses``)."""

FAMILIES = ("inter_task", "inter_sample")
"""Elich et al.'s two families of pairs: two tasks of one sample, two samples of one task."""
PAIR_METRICS = ("cosine", "magnitude", "conflict_ratio", "dot")
"""What each pair of gradients gives: cosine, magnitude similarity, ratio of parameters of
opposite signs, scalar product."""
PERCENTILES = (2.5, 97.5)
SUMMARY_KEYS = ("mean", "std", "p2_5", "p97_5")
"""The per-epoch summary of a metric's values (``p2_5``: the 2.5th percentile)."""
_CHUNK_ELEMENTS = 2**24
"""Gradient entries per chunk of the Gram and sign products (64 MiB in float32)."""


@dataclass(frozen=True)
class ProbeSpec:
    """What a run probes (``RunConfig.probes``, a dict of these fields; ``{}`` is every
    default). An interval of None turns that analysis off."""

    cosine_every: int | None = 100
    """The main study's cosine to the mean gradient, every this many iterations."""
    pairs_every: int | None = 5
    """Elich et al.'s inter-task and inter-sample pairs, every this many iterations."""
    samples: int = 8
    """At most this many samples of the batch are drawn for the pairs."""
    tasks: int = 8
    """At most this many tasks are drawn for the pairs."""
    chunk_size: int | None = None
    """Samples per vmapped call (None: all at once). On the CPU a small value can be much
    faster for convolutional encoders: ResNet-18 (CelebA), 8 samples x 4 tasks, 32 s at once
    and 5 s one at a time; the LeNet 9 ms at once and 49 ms one at a time."""

    def __post_init__(self) -> None:
        for name in ("cosine_every", "pairs_every", "samples", "tasks", "chunk_size"):
            value = getattr(self, name)
            optional = name.endswith("_every") or name == "chunk_size"
            if (value is None and optional) or (_is_int(value) and value >= 1):
                continue
            allowed = "an integer >= 1" + (" or None" if optional else "")
            raise ConfigError(f"probes: {name} must be {allowed}, got {value!r}")
        if self.cosine_every is None and self.pairs_every is None:
            raise ConfigError(
                "probes: cosine_every and pairs_every are both None, so nothing would be "
                "probed; turn one on or set probes=None"
            )
        if self.pairs_every is not None and self.samples < 2 and self.tasks < 2:
            raise ConfigError("probes: pairs need samples >= 2 or tasks >= 2")

    @classmethod
    def from_config(cls, value: Any) -> ProbeSpec | None:
        """The spec of a run configuration's ``probes`` (None: no probe)."""
        if value is None:
            return None
        names = [f.name for f in fields(cls)]
        if not isinstance(value, Mapping):
            raise ConfigError(f"probes must be None or a dict with keys {names}, got {value!r}")
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ConfigError(f"unknown probes key(s) {unknown}; valid: {names}")
        return cls(**value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- the measures ------------------------------------------------------------------------


def pair_metrics(first: Tensor, second: Tensor) -> dict[str, Tensor]:
    """The measures of each pair of rows of two (P, N) gradient matrices, each (P,).

    ``cosine`` (0 where a gradient is zero), ``magnitude`` 2|g||g'| / (|g|^2 + |g'|^2)
    (Yu et al.'s, as Elich et al. eq. 5; 1 for two zero gradients), ``conflict_ratio`` the
    share of the N parameters where the two have opposite signs (a zero conflicts with
    nothing), ``dot`` the scalar product. Computed as the probe computes them, from the Gram
    matrix and the counts of opposite signs (:func:`gram_and_conflicts`).
    """
    count = first.shape[0]
    gram, conflicts = gram_and_conflicts([torch.cat([first, second])])
    index = torch.arange(count)
    return _measures(gram, conflicts, first.shape[1], index, index + count)


def gram_and_conflicts(blocks: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
    """The R x R Gram matrix of R gradients and the R x R counts of parameters where two of
    them have opposite signs (float64), from the gradients' parameter blocks, each (R, n_i).

    Both add up over blocks and over column chunks, so no (pair, parameter) tensor is ever
    made: the memory is a few times one block's chunk, whatever the number of pairs.
    """
    gram = conflicts = None
    for block in blocks:
        if gram is None:
            rows, device = block.shape[0], block.device
            gram = torch.zeros(rows, rows, dtype=torch.float64, device=device)
            conflicts = torch.zeros(rows, rows, dtype=torch.float64, device=device)
        for chunk in block.split(max(1, _CHUNK_ELEMENTS // max(rows, 1)), dim=1):
            gram += (chunk @ chunk.T).double()
            positive, negative = (chunk > 0).to(chunk.dtype), (chunk < 0).to(chunk.dtype)
            cross = (positive @ negative.T).double()  # exact: counts below 2^24 per chunk
            conflicts += cross + cross.T
    if gram is None:
        raise ValueError("gram_and_conflicts needs at least one block")
    return gram, conflicts


def _measures(
    gram: Tensor, conflicts: Tensor, n_params: int, first: Tensor, second: Tensor
) -> dict[str, Tensor]:
    """:func:`pair_metrics` of the rows ``first[i]`` and ``second[i]`` of a Gram matrix."""
    dot = gram[first, second]
    square_a, square_b = gram[first, first], gram[second, second]
    product = (square_a * square_b).sqrt()
    cosine = torch.where(product > 0, dot / product.clamp_min(1e-300), 0.0)
    squares = square_a + square_b
    magnitude = torch.where(squares > 0, 2 * product / squares.clamp_min(1e-300), 1.0)
    conflict = conflicts[first, second] / n_params
    return {"cosine": cosine, "magnitude": magnitude, "conflict_ratio": conflict, "dot": dot}


def cosine_to_mean(task_grads: Tensor) -> Tensor:
    """The main study's metric of one step: the mean over tasks of cos(g_k, mean_j g_j) for
    the (K, N) task gradients (0-d), from their Gram matrix."""
    gram = torch.zeros(task_grads.shape[0], task_grads.shape[0], dtype=torch.float64)
    width = max(1, _CHUNK_ELEMENTS // task_grads.shape[0])
    for chunk in task_grads.split(width, dim=1):
        gram += (chunk @ chunk.T).double().cpu()
    to_mean = gram.mean(dim=1)  # g_k . mean
    product = (gram.diagonal() * gram.mean()).sqrt()  # |g_k| |mean|
    return torch.where(product > 0, to_mean / product.clamp_min(1e-300), 0.0).mean()


def pair_index(n_samples: int, n_tasks: int, family: str) -> tuple[Tensor, Tensor]:
    """The (sample, task) of the first and the second gradient of every pair of ``family``,
    each a (P, 2) integer tensor: ``inter_task`` pairs two distinct tasks of one sample
    (P = S K(K-1)/2), ``inter_sample`` two distinct samples of one task (P = K S(S-1)/2)."""
    if family == "inter_task":
        rows = [
            ((s, a), (s, b))
            for s in range(n_samples)
            for a, b in itertools.combinations(range(n_tasks), 2)
        ]
    elif family == "inter_sample":
        rows = [
            ((a, t), (b, t))
            for t in range(n_tasks)
            for a, b in itertools.combinations(range(n_samples), 2)
        ]
    else:
        raise ConfigError(f"unknown family of pairs {family!r}; valid: {', '.join(FAMILIES)}")
    if not rows:
        empty = torch.zeros(0, 2, dtype=torch.long)
        return empty, empty.clone()
    first, second = zip(*rows)
    return torch.tensor(first, dtype=torch.long), torch.tensor(second, dtype=torch.long)


def step_pairs(grads: Tensor | Sequence[Tensor]) -> dict[str, dict[str, Tensor]]:
    """Every pair measure of one probed step, from the (S, T, N) per-sample per-task gradients
    (or their parameter blocks, each (S, T, n_i)).

    Keys: each family with :data:`PAIR_METRICS` plus ``cosine_conflicting`` and
    ``cosine_supporting`` (the cosine of the pairs with cos < 0 and with cos >= 0: Fig. A6),
    and ``<family>_averaged`` (Fig. A5): the pairs of the task gradients averaged over the
    samples (inter-task), and of the sample gradients averaged over the tasks (inter-sample).
    Values are 1-d tensors (one entry per pair).
    """
    blocks = [grads] if isinstance(grads, Tensor) else list(grads)
    n_samples, n_tasks = blocks[0].shape[:2]
    n_params = sum(block.shape[2] for block in blocks)
    # Rows: each (sample, task) at s T + t, then each task averaged over the samples, then
    # each sample averaged over the tasks.
    rows = (
        torch.cat([b.reshape(n_samples * n_tasks, -1), b.mean(dim=0), b.mean(dim=1)])
        for b in blocks
    )  # made one block at a time
    gram, conflicts = gram_and_conflicts(rows)
    out: dict[str, dict[str, Tensor]] = {}
    for family in FAMILIES:
        first, second = pair_index(n_samples, n_tasks, family)
        a, b = first[:, 0] * n_tasks + first[:, 1], second[:, 0] * n_tasks + second[:, 1]
        values = _measures(gram, conflicts, n_params, a.to(gram.device), b.to(gram.device))
        cosine = values["cosine"]
        values["cosine_conflicting"] = cosine[cosine < 0]
        values["cosine_supporting"] = cosine[cosine >= 0]
        out[family] = values
    averaged = {
        "inter_task": (n_samples * n_tasks, n_tasks),
        "inter_sample": (n_samples * n_tasks + n_tasks, n_samples),
    }
    for family, (start, count) in averaged.items():
        pairs = list(itertools.combinations(range(start, start + count), 2))
        a = torch.tensor([p[0] for p in pairs], dtype=torch.long, device=gram.device)
        b = torch.tensor([p[1] for p in pairs], dtype=torch.long, device=gram.device)
        out[f"{family}_averaged"] = _measures(gram, conflicts, n_params, a, b)
    return out


def summarize(values: Sequence[float] | np.ndarray | Tensor) -> dict[str, float]:
    """The mean, std (ddof 0) and 2.5 / 97.5 percentiles of ``values``; NaN when empty."""
    array = np.asarray(values.cpu() if isinstance(values, Tensor) else values, dtype=np.float64)
    if array.size == 0:
        return dict.fromkeys(SUMMARY_KEYS, float("nan"))
    low, high = np.percentile(array, PERCENTILES)
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "p2_5": float(low),
        "p97_5": float(high),
    }


# -- the gradients -----------------------------------------------------------------------


def shared_names(model: SharedEncoderModel) -> list[str]:
    """The names (in ``model.named_parameters()``) of the shared parameters, in their order."""
    ids = {id(p) for p in model.shared_parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]


@contextmanager
def _batch_norm_running_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers in eval mode (their running statistics, not updated) for the block;
    every other module keeps its mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [m.training for m in norms]
    try:
        for m in norms:
            m.training = False
        yield
    finally:
        for m, mode in zip(norms, modes):
            m.training = mode


def per_sample_task_gradients(
    model: SharedEncoderModel,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Mapping[str, Tensor],
    tasks: Sequence[int] | Tensor,
) -> Tensor:
    """The (S, T, N) gradients of each sample's loss of each task in ``tasks`` (indices into
    the K losses) with respect to the shared parameters (flattened, concatenated): the
    blocks of :func:`per_sample_task_blocks` side by side."""
    return torch.cat(per_sample_task_blocks(model, loss_fn, inputs, targets, tasks), dim=2)


def per_sample_task_blocks(
    model: SharedEncoderModel,
    loss_fn: LossFn,
    inputs: Tensor,
    targets: Mapping[str, Tensor],
    tasks: Sequence[int] | Tensor,
    chunk_size: int | None = None,
) -> list[Tensor]:
    """The per-sample per-task gradients of each shared parameter, (S, T, n_i) each, in the
    order of :func:`shared_names` (one copy of the S T gradients, never two).

    ``torch.func.vmap`` over the S samples (``chunk_size`` at a time) of ``jacrev`` of one
    sample's losses (the sample as a batch of one, through a functional call of the model).
    BatchNorm uses its running statistics (a single sample's statistics are not the
    batch's, and vmap cannot update buffers); Dropout stays as the model's mode has it, with
    its masks drawn independently per sample. When an operation of the model or the losses
    has no vmap rule (e.g. a loss over a data-dependent selection), the samples are taken
    one after the other instead, with a warning.
    """
    names = shared_names(model)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    shared = {n: state.pop(n).detach() for n in names}
    frozen = {n: t.detach() for n, t in state.items()}
    index = torch.as_tensor(tasks, dtype=torch.long, device=_device(inputs))

    def sample_losses(params: dict[str, Tensor], x: Tensor, y: dict[str, Tensor]) -> Tensor:
        batch_targets = {k: v.unsqueeze(0) for k, v in y.items()}
        _, outputs = functional_call(model, {**params, **frozen}, (x.unsqueeze(0),))
        return loss_fn(outputs, batch_targets)[index]

    per_sample = jacrev(sample_losses)
    targets = dict(targets)
    with _batch_norm_running_stats(model):
        try:
            jac = vmap(
                per_sample, in_dims=(None, 0, 0), randomness="different", chunk_size=chunk_size
            )(shared, inputs, targets)
        except RuntimeError as error:
            warnings.warn(
                f"the probe's per-sample gradients cannot be vmapped ({error}); they are "
                "taken one sample at a time",
                stacklevel=2,
            )
            rows = [
                per_sample(shared, inputs[i], {k: v[i] for k, v in targets.items()})
                for i in range(inputs.shape[0])
            ]
            jac = {n: torch.stack([r[n] for r in rows]) for n in names}
    n_samples = inputs.shape[0]
    return [jac.pop(n).reshape(n_samples, len(index), -1) for n in names]


def batch_task_gradients(
    model: SharedEncoderModel, loss_fn: LossFn, inputs: Any, targets: Any
) -> Tensor:
    """The (K, N) gradients of the K batch losses with respect to the shared parameters: the
    task gradients the training step's method sees, from a forward of its own.

    BatchNorm normalizes with the batch's statistics as in training, but its running
    statistics are updated on copies that are then dropped. Taken with the engine's
    per-task Jacobian (:class:`smto.jacobian.GradientEngine`); no ``.grad`` is written.
    """
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    features, outputs = functional_call(model, buffers, (inputs,), strict=False)
    losses = loss_fn(outputs, targets)
    shared = list(model.shared_parameters())
    return GradientEngine().task_gradients(losses, shared, features).matrix.detach()


def _device(inputs: Any) -> torch.device:
    return inputs.device if isinstance(inputs, Tensor) else torch.device("cpu")


# -- the probe of a run ------------------------------------------------------------------


class GradientProbe:
    """Probes a run's steps and gives each epoch's summary (``history[i]["probes"]``).

    The engine calls :meth:`observe` before each training step and :meth:`end_epoch` after
    the epoch's last one. The summary: ``cosine_to_mean`` (the main study's metric, the
    mean over its probed steps), for each family of :func:`step_pairs` a summary
    (:func:`summarize`) of each measure plus ``conflicting_share`` (the share of pairs with
    cos < 0), ``steps`` (probed steps of each analysis) and ``seconds`` (the time spent
    probing: the probe's cost).
    """

    def __init__(self, spec: ProbeSpec, model: SharedEncoderModel, loss_fn: LossFn, seed: int):
        self.spec = spec
        self.model = model
        self.loss_fn = loss_fn
        self.seed = seed
        self._reset()

    def _reset(self) -> None:
        self._cosines: list[float] = []
        self._pairs: dict[str, dict[str, list[Tensor]]] = {}
        self._pair_steps = 0
        self._seconds = 0.0

    def due(self, step: int) -> bool:
        """Whether iteration ``step`` of an epoch is probed."""
        intervals = (self.spec.cosine_every, self.spec.pairs_every)
        return any(every is not None and step % every == 0 for every in intervals)

    def observe(self, epoch: int, step: int, inputs: Any, targets: Any) -> None:
        """Probes iteration ``step`` of ``epoch`` on its batch, at the current parameters.

        A non-finite loss or gradient is skipped here: the training step reports it.
        """
        cosine_every, pairs_every = self.spec.cosine_every, self.spec.pairs_every
        started = time.perf_counter()
        device = next(self.model.parameters()).device
        devices = [device.index or 0] if device.type == "cuda" else []
        probe_seed = (self.seed * 1_000_003 + epoch * 10_007 + step) % (2**63)
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(probe_seed)
            try:
                if cosine_every is not None and step % cosine_every == 0:
                    grads = batch_task_gradients(self.model, self.loss_fn, inputs, targets)
                    self._cosines.append(float(cosine_to_mean(grads)))
                if pairs_every is not None and step % pairs_every == 0:
                    self._observe_pairs(inputs, targets, probe_seed)
            except NonFiniteError:
                pass
        self._seconds += time.perf_counter() - started

    def _observe_pairs(self, inputs: Any, targets: Mapping[str, Tensor], seed: int) -> None:
        if not isinstance(inputs, Tensor):
            raise SmtoError(
                f"the probe's inter-sample pairs need a batch of tensor inputs; this problem "
                f"gives {type(inputs).__name__}: probe the cosine only "
                "(probes={'pairs_every': None})"
            )
        generator = torch.Generator().manual_seed(seed)
        n_tasks = len(self.model.heads)
        samples = torch.randperm(inputs.shape[0], generator=generator)[: self.spec.samples]
        tasks = torch.randperm(n_tasks, generator=generator)[: self.spec.tasks].sort().values
        samples = samples.sort().values.to(inputs.device)
        subset = {k: v[samples] for k, v in targets.items()}
        blocks = per_sample_task_blocks(
            self.model, self.loss_fn, inputs[samples], subset, tasks, self.spec.chunk_size
        )
        if not all(torch.isfinite(block).all() for block in blocks):
            raise NonFiniteError("non-finite per-sample gradient")
        self._pair_steps += 1
        for family, values in step_pairs(blocks).items():
            kept = self._pairs.setdefault(family, {})
            for name, value in values.items():
                kept.setdefault(name, []).append(value.detach().cpu())

    def end_epoch(self) -> dict[str, Any]:
        """The epoch's summary; the probe starts the next epoch afresh."""
        summary: dict[str, Any] = {}
        if self.spec.cosine_every is not None:
            summary["cosine_to_mean"] = (
                float(np.mean(self._cosines)) if self._cosines else float("nan")
            )
        for family, values in self._pairs.items():
            pooled = {name: torch.cat(parts) for name, parts in values.items()}
            summary[family] = {name: summarize(v) for name, v in pooled.items()}
            if "cosine_conflicting" in pooled:
                total = len(pooled["cosine"])
                share = len(pooled["cosine_conflicting"]) / total if total else float("nan")
                summary[family]["conflicting_share"] = share
        summary["steps"] = {"cosine": len(self._cosines), "pairs": self._pair_steps}
        summary["seconds"] = self._seconds
        self._reset()
        return summary
