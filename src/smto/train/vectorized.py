"""Many runs in one model: S runs of one method and problem trained as one vectorized model.

Runs that differ only in their seed, learning rate, dropout or weight decay (:data:`VARYING`)
share each step's forward and backward passes. Every run is still an engine run (the
engine's ``_Run``: its own model built under its own seed, method, optimizer, scheduler,
data generator, random state, record and checkpoints, in its own run directory); only the
computation is shared. Each step the runs' parameters are stacked and the model is evaluated
once with ``torch.func.functional_call`` under ``torch.func.vmap``, on a batch of S batches
(each run's own data order). The gradients flow back through the stack into each run's own
parameters, so the optimizer step, the method's state (FAMO's logits, UW's log-variances, a
Gram method's failure counter) and the checkpoint are exactly those of the separate run;
the numbers agree with the engine's to float rounding.

* Dropout: each dropout module of the stacked model multiplies by a mask drawn, as the
  engine's dropout draws it, from the run's own torch random state, in the order the
  forward pass calls the modules; a random method (RLW, PCGrad, ...) draws from the same
  state, swapped in around its calls.
* Loss-based methods: one backward pass of the sum of the runs' objectives (run s's
  parameters receive run s's gradient: the runs are independent).
* Gradient methods: one backward pass per task of the sum over runs of that task's loss
  gives every run's task-k gradient (each head once, the encoder K times, as the engine);
  each run's method then combines its own K x N matrix (its own Gram matrix and solve).
* A run that diverges is recorded as diverged at its step and leaves the stack; the others
  go on.

Methods that need more of the loop than the above (RotoGrad's per-task head inputs,
Auto-Lambda's validation step), per-task optimizers (per-task Adam, MTL-IO), gradient
probes, dropout on CUDA (its masks come from the device's generator) and models that the
stacking cannot serve (buffers such as batch-norm statistics, other dropout kinds, inputs
that are not tensors) fall back to separate runs with a :class:`NotVectorized` warning that
says why (:func:`vectorize_blocker`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.graph import GradientEdge
from torch.func import functional_call, vmap

from smto import registry
from smto.capabilities import EpochEnd, HeadInputs, PostStep, ValidationStep
from smto.errors import ConfigError, NonFiniteError, check_finite, check_rows
from smto.jacobian import TaskGradients, accumulate_flat, accumulate_grad, task_roots
from smto.method import GradientMethod, LossMethod, Space
from smto.problems import Problem
from smto.train.config import RunConfig, check_device
from smto.train.engine import (
    EpochCallback,
    Pruned,
    _EpochSums,
    _finished_record,
    _problem_for,
    _progress_bar,
    _Run,
    run_dir,
    train,
)
from smto.train.lock import RunLock
from smto.train.records import RunRecord

VARYING: tuple[str, ...] = ("seed", "lr", "dropout", "weight_decay")
"""The configuration fields in which vectorized runs may differ."""

_DROPOUTS: dict[type, bool] = {nn.Dropout: False, nn.Dropout2d: True}
"""The dropout modules the stacked model serves, and whether each drops whole channels."""


class NotVectorized(UserWarning):
    """Runs asked to train together were trained one after the other; the message says why."""


def group_key(config: RunConfig) -> tuple[Any, ...]:
    """What runs trained together must share: the configuration without :data:`VARYING`
    (a hashable key, e.g. to group a sweep's waiting trials)."""
    fields = dataclasses.asdict(config)
    return tuple((name, repr(fields[name])) for name in sorted(fields) if name not in VARYING)


def check_group(configs: Sequence[RunConfig]) -> None:
    """Raises a :class:`ConfigError` unless the configurations are distinct runs that differ
    only in :data:`VARYING`."""
    if not configs:
        raise ConfigError("vectorized training needs at least one run configuration")
    ids = [c.run_id() for c in configs]
    if len(set(ids)) != len(ids):
        raise ConfigError("the runs to train together must be distinct; a run is listed twice")
    first = dataclasses.asdict(configs[0])
    for config in configs[1:]:
        other = dataclasses.asdict(config)
        differ = sorted(k for k in first if k not in VARYING and first[k] != other[k])
        if differ:
            raise ConfigError(
                f"runs trained together may differ only in {', '.join(VARYING)}; these differ "
                f"in {', '.join(differ)}: train them in separate groups"
            )


def vectorize_blocker(configs: Sequence[RunConfig], problem: Problem) -> str | None:
    """Why these runs cannot be trained as one vectorized model (None: they can)."""
    config = configs[0]
    method = registry.create(config.method, problem.n_tasks, **config.method_params)
    name = method.display_name
    if isinstance(method, HeadInputs):
        return f"{name} feeds each head its own input (a module between encoder and heads)"
    if not isinstance(method, (LossMethod, GradientMethod)):
        return f"{name} is neither loss- nor gradient-based"
    if isinstance(method, ValidationStep):
        return f"{name} takes a validation step of its own before each training step"
    if config.optimizer in ("per_task_adam", "mtl_io"):
        return f"the {config.optimizer} optimizer steps per task"
    if config.probes is not None:
        return "gradient probes observe one model"
    if config.compile:
        return "torch.compile compiles one model, not the stacked call"
    if torch.device(config.device).type != "cpu" and any(c.dropout > 0 for c in configs):
        return "dropout on an accelerator draws its masks from the device's generator"
    model = problem.make_model(max(c.dropout for c in configs))
    buffers = [n for n, _ in model.named_buffers()]
    if buffers:
        return f"the model has buffers ({', '.join(buffers[:3])}), which stacking does not carry"
    others = [n for n, m in model.named_modules() if _is_other_dropout(m)]
    if others:
        return f"the model has dropout modules other than Dropout and Dropout2d ({others[0]})"
    batch = next(problem.batches("val", 2))
    if not isinstance(batch.inputs, Tensor):
        return f"the problem's inputs are {type(batch.inputs).__name__}, not a tensor"
    stacked = _StackedModel(model)
    try:
        stacked.discover([model], batch.inputs.unsqueeze(0))
    except (RuntimeError, ValueError, NotImplementedError) as error:
        return f"the model does not run under vmap ({str(error).splitlines()[0][:200]})"
    return None


def train_vectorized(
    configs: Sequence[RunConfig],
    root: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    problem: Problem | None = None,
    progress: bool = False,
    on_epoch_end: EpochCallback | None = None,
    wait: bool = False,
) -> list[RunRecord]:
    """Trains (or resumes, or returns) the runs of ``configs`` together; their records, in
    order, each exactly as :func:`smto.train.train` would have written it.

    The configurations must differ only in :data:`VARYING` (else a :class:`ConfigError`).
    Finished runs are returned as recorded; the others train as one vectorized model, or,
    when :func:`vectorize_blocker` names a reason, one after the other with a
    :class:`NotVectorized` warning. ``on_epoch_end`` is called with each run's record after
    each of its epochs (:class:`smto.train.Pruned` prunes that run only).
    """
    configs = list(configs)
    check_group(configs)
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"the run root {root} is a file, not a directory: name a directory")
    records: dict[str, RunRecord] = {}
    pending: list[RunConfig] = []
    for config in configs:
        existing = _finished_record(run_dir(config, root), config, False, locked=False)
        if existing is None:
            pending.append(config)
        else:
            records[config.run_id()] = existing
    if pending:
        check_device(pending[0].device)
        problem = _problem_for(pending[0], problem, data_dir)
        reason = vectorize_blocker(pending, problem) if len(pending) > 1 else "one run"
        if reason is not None:
            if len(pending) > 1:
                warnings.warn(
                    f"training {len(pending)} runs of {pending[0].method} one after the other, "
                    f"not vectorized: {reason}",
                    NotVectorized,
                    stacklevel=2,
                )
            for config in pending:
                records[config.run_id()] = train(
                    config, root, problem=problem, progress=progress,
                    on_epoch_end=on_epoch_end, wait=wait,
                )  # fmt: skip
        else:
            for record in _train_group(pending, root, problem, progress, on_epoch_end, wait):
                records[record.run_id] = record
    return [records[c.run_id()] for c in configs]


def _train_group(
    configs: list[RunConfig],
    root: Path,
    problem: Problem,
    progress: bool,
    on_epoch_end: EpochCallback | None,
    wait: bool,
) -> list[RunRecord]:
    with ExitStack() as locks:
        members: list[_Member] = []
        done: list[RunRecord] = []
        for config in configs:
            directory = run_dir(config, root)
            directory.mkdir(parents=True, exist_ok=True)
            locks.enter_context(RunLock(directory, wait=wait))
            existing = _finished_record(directory, config, False, locked=True)
            if existing is not None:  # finished by another process meanwhile
                done.append(existing)
            else:
                members.append(_Member(config, problem, directory))
        group = _Group(members, problem)
        return done + group.execute(progress, on_epoch_end)


class _Member(_Run):
    """One run of a group: the engine's run, with its torch random state kept aside (it is
    swapped in around the run's random draws) and its evaluation served by the group."""

    def __init__(self, config: RunConfig, problem: Problem, directory: Path) -> None:
        super().__init__(config, problem, directory)
        self.rng_state = torch.get_rng_state()  # after its seed, its init and its checkpoint
        self.group: _Group | None = None
        self.active = True

    @contextmanager
    def own_rng(self) -> Iterator[None]:
        """Torch's global generator holds this run's state inside the block."""
        torch.set_rng_state(self.rng_state)
        try:
            yield
        finally:
            self.rng_state = torch.get_rng_state()

    def _evaluate(self, split: str) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        assert self.group is not None
        return self.group.evaluated(split, self)

    def _save_checkpoint(self, epochs_done: int) -> None:
        with self.own_rng():
            super()._save_checkpoint(epochs_done)


class _Calls:
    """The dropout calls of a forward pass (module path, mask shape), while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self.calls: list[tuple[str, tuple[int, ...]]] = []


class _GivenMask(nn.Module):
    """Stands for a dropout module in the stacked model: multiplies by the mask it is given
    (an empty mask: the identity, as dropout in eval mode)."""

    def __init__(self, path: str, feature: bool, recorder: _Calls) -> None:
        super().__init__()
        self.path, self.feature, self.recorder = path, feature, recorder
        self.register_buffer("mask", torch.empty(0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.feature and x.dim() != 4:
            raise ValueError(f"Dropout2d at {self.path} got a {x.dim()}-D input, not (N, C, H, W)")
        if self.recorder.active:
            feature = tuple(x.shape[:2]) + (1,) * (x.dim() - 2)
            self.recorder.calls.append((self.path, feature if self.feature else tuple(x.shape)))
        return x if self.mask.numel() == 0 else x * self.mask


class _StackedModel:
    """A copy of one run's model whose dropout modules take given masks, evaluated for S
    runs at once on their stacked parameters (``functional_call`` under ``vmap``)."""

    def __init__(self, model: nn.Module) -> None:
        self.template = copy.deepcopy(model)
        self.recorder = _Calls()
        self.paths: list[str] = []
        for path, module in list(self.template.named_modules()):
            if type(module) in _DROPOUTS:
                parent, _, leaf = path.rpartition(".")
                owner = self.template.get_submodule(parent) if parent else self.template
                setattr(owner, leaf, _GivenMask(path, _DROPOUTS[type(module)], self.recorder))
                self.paths.append(path)
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes: dict[tuple[int, ...], list[tuple[str, tuple[int, ...]]]] = {}

    def discover(self, models: Sequence[nn.Module], inputs: Tensor) -> list[tuple[str, Any]]:
        """The dropout calls of a forward pass on ``inputs`` (S stacked batches), in order,
        with each mask's shape; cached by the inputs' shape."""
        key = tuple(inputs.shape)
        if key not in self.shapes:
            self.recorder.calls, self.recorder.active = [], True
            try:
                with torch.no_grad():
                    self.forward(self.parameters(models, detach=True), {}, inputs)
            finally:
                self.recorder.active = False
            calls = self.recorder.calls
            paths = [p for p, _ in calls]
            if len(set(paths)) != len(paths):
                raise ValueError("a dropout module is called twice in one forward pass")
            self.shapes[key] = calls
        return self.shapes[key]

    def parameters(self, models: Sequence[nn.Module], detach: bool = False) -> dict[str, Tensor]:
        """The runs' parameters stacked by name (dimension 0: the run)."""
        per_run = [dict(m.named_parameters()) for m in models]
        return {
            n: torch.stack([p[n].detach() if detach else p[n] for p in per_run]) for n in self.names
        }

    def forward(
        self, params: dict[str, Tensor], masks: dict[str, Tensor], inputs: Tensor, shared=False
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The representations (S, ...) and head outputs by task (S, ...); ``shared``: the
        same ``inputs`` for every run (not stacked)."""

        def one(p: dict[str, Tensor], m: dict[str, Tensor], x: Tensor):
            return functional_call(self.template, {**p, **m}, (x,))

        in_dims = (0, 0, None if shared else 0)
        return vmap(one, in_dims=in_dims)(params, masks, inputs)

    def masks(self, members: Sequence[_Member], inputs: Tensor) -> dict[str, Tensor]:
        """Each run's dropout masks for one forward pass, drawn from its own random state in
        the order of the calls, as ``torch.nn.functional.dropout`` draws them."""
        calls = self.discover([m.model for m in members], inputs)
        if not calls:
            return {}
        rates = [dict(m.model.named_modules()) for m in members]
        if all(float(modules[p].p) == 0 for modules in rates for p, _ in calls):
            return {}  # no run drops anything: dropout is the identity, and draws nothing
        per_run: dict[str, list[Tensor]] = {path: [] for path, _ in calls}
        for member, modules in zip(members, rates):
            with member.own_rng():
                for path, shape in calls:
                    p = float(modules[path].p)
                    mask = torch.ones(shape, dtype=inputs.dtype, device=inputs.device)
                    if p > 0:
                        mask = torch.empty_like(mask).bernoulli_(1 - p).div_(1 - p)
                    per_run[path].append(mask)
        return {f"{path}.mask": torch.stack(masks) for path, masks in per_run.items()}


class _Group:
    """S runs trained in lockstep: one stacked forward and backward pass per step."""

    def __init__(self, members: list[_Member], problem: Problem) -> None:
        self.members = members
        self.problem = problem
        self.config = members[0].config if members else None
        self.stacked = _StackedModel(members[0].model) if members else None
        self.device = members[0].device if members else torch.device("cpu")
        self.cache: dict[str, dict[int, Any]] = {}
        for member in members:
            member.group = self

    # -- the loop -----------------------------------------------------------------------

    def execute(self, progress: bool, on_epoch_end: EpochCallback | None) -> list[RunRecord]:
        if not self.members:
            return []
        epochs = self.config.epochs
        for member in self.members:
            if member.start_epoch >= epochs:
                member.record.status = "completed"
                member.record.save(member.directory)
                member.active = False
            else:
                member.record.status = "running"
        start = min((m.start_epoch for m in self.members if m.active), default=epochs)
        bar = _progress_bar(epochs, start) if progress else None
        try:
            for epoch in range(start, epochs):
                running = [m for m in self.members if m.active and m.start_epoch <= epoch]
                if not running:
                    continue
                self._epoch(epoch, running, on_epoch_end)
                if bar is not None:
                    bar.update(1)
        except KeyboardInterrupt as stop:
            for member in self._running():
                member._finish("interrupted", f"{stop or 'stopped by the user'} (resumable)")
            raise
        except Exception as error:
            for member in self._running():
                member._finish("failed", f"{type(error).__name__}: {error}")
            raise
        finally:
            if bar is not None:
                bar.close()
        return [m.record for m in self.members]

    def _running(self) -> list[_Member]:
        return [m for m in self.members if m.active]

    def _epoch(self, epoch: int, running: list[_Member], on_epoch_end: EpochCallback | None):
        """One epoch of the engine's ``execute`` loop for each running member."""
        started = time.perf_counter()
        sums = self._train_epoch(epoch, running)
        alive = [m for m in running if m.active]
        train_share = (time.perf_counter() - started) / max(len(alive), 1)
        self.cache = {}
        started = time.perf_counter()
        self._evaluate_all("val", alive)
        val_share = (time.perf_counter() - started) / max(len(alive), 1)
        for member in alive:
            own = time.perf_counter()
            entry = member._evaluate_epoch(epoch, sums[id(member)])
            entry["train_seconds"] = train_share
            entry["seconds"] = train_share + val_share + time.perf_counter() - own
            member.record.seconds += entry["seconds"]
            member.record.history.append(entry)
            absurd = member._beyond_divergence_bound(entry)
            if absurd is not None:
                member._finish("diverged", f"epoch {epoch}: {absurd}", epoch)
                member.active = False
                continue
            member._step_scheduler(entry)
            member.record.solver_failures = int(getattr(member.method, "solver_failures", 0))
            if epoch + 1 == member.config.epochs:
                member.record.status = "completed"
                member.active = False
            member._save_checkpoint(epoch + 1)
            if on_epoch_end is not None:
                try:
                    on_epoch_end(member.record)
                except Pruned as reason:
                    member._finish("pruned", str(reason) or "pruned by the epoch callback")
                    member.active = False
        self.cache = {}

    # -- training -----------------------------------------------------------------------

    def _train_epoch(self, epoch: int, running: list[_Member]) -> dict[int, _EpochSums]:
        k = self.problem.n_tasks
        sums: dict[int, _EpochSums] = {}
        for member in running:
            member.model.train()
            zeros = torch.zeros(k, device=self.device)
            sums[id(member)] = _EpochSums(zeros, zeros.clone())
        streams = [
            self.problem.batches("train", self.config.batch_size, m.data_generator) for m in running
        ]
        for step, batches in enumerate(zip(*streams)):
            alive = [(m, b.to(self.device)) for m, b in zip(running, batches) if m.active]
            if not alive:
                continue
            results = self._step(epoch, step, alive)
            for member, (losses, result) in results.items():
                total = sums[member]
                total.losses += losses
                total.weights += result.weights.to(total.weights.dtype)
                total.add_info(result.info)
                total.steps += 1
        for member in running:
            if member.active and isinstance(member.method, EpochEnd):
                member.method.end_epoch()
        return sums

    def _diverge(self, member: _Member, epoch: int, step: int, error: NonFiniteError) -> None:
        message = f"epoch {epoch}, step {step}: {error.describe(self.problem.tasks)}"
        member._finish("diverged", message, epoch, step)
        member.active = False

    def _step(self, epoch: int, step: int, alive: list[tuple[_Member, Any]]) -> dict[int, Any]:
        """One training step of every alive run; returns (losses, StepResult) by member id.
        A run whose loss, objective term or gradient is not finite is finished as diverged."""
        members = [m for m, _ in alive]
        inputs = torch.stack([b.inputs for _, b in alive])
        targets = [b.targets for _, b in alive]
        for member in members:
            member.optimizer.zero_grad(set_to_none=True)
        masks = self.stacked.masks(members, inputs)
        params = self.stacked.parameters([m.model for m in members])
        features, outputs = self.stacked.forward(params, masks, inputs)
        # unbind: one backward node for the S slices (indexing would give each its own
        # full-size zeros in the backward pass, S^2 work)
        per_run = {t: o.unbind(0) for t, o in outputs.items()}
        losses = [
            self.problem.losses({t: o[s] for t, o in per_run.items()}, targets[s])
            for s in range(len(members))
        ]
        if isinstance(members[0].method, LossMethod):
            results = self._loss_backward(epoch, step, members, losses, features)
        else:
            results = self._gradient_backward(epoch, step, members, losses, features)
        stepped = [(s, m) for s, m in enumerate(members) if id(m) in results]
        for _, member in stepped:
            member.optimizer.step()
        if stepped and isinstance(members[0].method, PostStep):
            runs = [m for _, m in stepped]
            batch = inputs[[s for s, _ in stepped]]
            with torch.inference_mode():
                masks = self.stacked.masks(runs, batch)
                params = self.stacked.parameters([m.model for m in runs], detach=True)
                _, after = self.stacked.forward(params, masks, batch)
                new = [
                    self.problem.losses({t: o[j] for t, o in after.items()}, targets[s])
                    for j, (s, _) in enumerate(stepped)
                ]
            for (_, member), losses_after in zip(stepped, new):
                with member.own_rng():
                    member.method.post_step(losses_after)
        return {id(m): (losses[s].detach(), results[id(m)]) for s, m in stepped}

    def _loss_backward(
        self, epoch: int, step: int, members: list[_Member], losses: list[Tensor], features
    ) -> dict[int, Any]:
        """LossMethod.backward for every run: one backward pass of the sum of objectives."""
        objective: Tensor | None = None
        weights: dict[int, Tensor] = {}
        for member, loss in zip(members, losses):
            method = member.method
            try:
                method._check_losses(loss)
                with member.own_rng():
                    terms, weight = method.terms(loss)
                check_finite("objective term", terms.detach())
            except NonFiniteError as error:
                self._diverge(member, epoch, step, error)
                continue
            weights[id(member)] = weight
            objective = terms.sum() if objective is None else objective + terms.sum()
        if objective is None:
            return {}
        objective.backward(retain_graph=True)  # kept only to name a task on the error path
        kept = [(s, m) for s, m in enumerate(members) if id(m) in weights]
        grads = [
            [p.grad for p in m.model.shared_parameters() if p.grad is not None] for _, m in kept
        ]
        norms = torch._foreach_norm([g for run in grads for g in run])  # one fused pass
        totals, start = [], 0
        for run in grads:
            totals.append(torch.stack(norms[start : start + len(run)]).sum() if run else None)
            start += len(run)
        present = [t for t in totals if t is not None]
        flags = torch.isfinite(torch.stack(present)).tolist() if present else []
        finite = [True if t is None else flags.pop(0) for t in totals]
        results: dict[int, Any] = {}
        for (s, member), ok in zip(kept, finite):
            if not ok:
                try:
                    rows = self._task_gradients([member], [losses[s]], features[s : s + 1])
                    check_rows("gradient", rows[0].matrix)
                    raise NonFiniteError(
                        "gradient of the combined objective", list(range(self.problem.n_tasks))
                    )
                except NonFiniteError as error:
                    self._diverge(member, epoch, step, error)
                continue
            results[id(member)] = member.method._report(weights[id(member)])
        return results

    def _gradient_backward(
        self, epoch: int, step: int, members: list[_Member], losses: list[Tensor], features
    ) -> dict[int, Any]:
        """GradientMethod.backward for every run: K backward passes give every run's K task
        gradients; each run's method combines its own matrix."""
        prepared = []
        for s, (member, loss) in enumerate(zip(members, losses)):
            try:
                member.method._check_losses(loss)
                with member.own_rng():
                    prepared.append((s, member, *member.method._transformed(loss)))
            except NonFiniteError as error:
                self._diverge(member, epoch, step, error)
        if not prepared:
            return {}
        method = members[0].method
        runs = [m for _, m, *_ in prepared]
        grads = self._task_gradients(
            runs, [losses[s] for s, *_ in prepared], features, [sc for *_, sc, _ in prepared],
            [s for s, *_ in prepared], retain=method.space is Space.FEATURES,
        )  # fmt: skip
        results: dict[int, Any] = {}
        directions: list[Tensor] = []
        for (s, member, values, _, own), task_grads in zip(prepared, grads):
            method = member.method
            try:
                with member.own_rng():
                    agg = method.combine(task_grads, values, features[s])
            except NonFiniteError as error:
                self._diverge(member, epoch, step, error)
                directions.append(torch.zeros_like(features[s]))
                continue
            if method.space is Space.PARAMS:
                accumulate_flat(list(member.model.shared_parameters()), agg.direction)
            else:
                directions.append(agg.direction.view_as(features[s]))
            if method.heads == "weighted":
                heads = agg.weights if agg.head_weights is None else agg.head_weights
                task_grads.accumulate_others(heads)
            else:
                task_grads.accumulate_others()
            if own is not None:
                accumulate_grad(*own)
            results[id(member)] = method._report(agg.weights, agg.info)
        if method.space is Space.FEATURES and results:
            full = torch.zeros_like(features)
            for (s, *_), direction in zip(prepared, directions):
                full[s] = direction
            features.backward(full)
        return results

    def _task_gradients(
        self,
        runs: list[_Member],
        losses: list[Tensor],
        features: Tensor,
        scales: list[Tensor | None] | None = None,
        rows: list[int] | None = None,
        retain: bool = True,
    ) -> list[TaskGradients]:
        """Each run's per-task gradients (of its shared parameters, or of its slice of the
        representation for ``space="features"``, and of its other leaves): for each task one
        backward pass of the runs' task-k losses (their autograd edges in the stack), each
        run's parameters receiving their own run's gradient."""
        method = runs[0].method
        rows = list(range(len(runs))) if rows is None else rows
        roots = [task_roots(loss) for loss in losses]
        if any(r is None for r in roots):
            raise RuntimeError("the problem's losses are not a torch.stack of the task losses")
        on_features = isinstance(method, GradientMethod) and method.space is Space.FEATURES
        shared = [list(m.model.shared_parameters()) for m in runs]
        owner = {id(p): j for j, m in enumerate(runs) for p in m.model.parameters()}
        shared_ids = {id(p) for params in shared for p in params}
        k = self.problem.n_tasks
        per_task: list[tuple[list[Tensor], list[Tensor], list[Tensor]]] = []
        for t in range(k):
            edges = [r[t] for r in roots]
            leaves = _leaves(edges, features.grad_fn, exclude=shared_ids | {id(features)})
            leaves = [leaf for leaf in leaves if id(leaf) in owner]
            inputs = [features] if on_features else [p for params in shared for p in params]
            ones = [
                torch.ones((), dtype=loss.dtype, device=loss.device)
                if scales is None or scales[j] is None
                else scales[j][t]
                for j, loss in enumerate(losses)
            ]
            grads = torch.autograd.grad(
                edges,
                [*inputs, *leaves],
                grad_outputs=ones,
                retain_graph=retain or t < k - 1,
                allow_unused=True,
                materialize_grads=True,
            )
            per_task.append((list(grads[: len(inputs)]), leaves, list(grads[len(inputs) :])))
        result = []
        for j in range(len(runs)):
            if on_features:
                shared_grads = [torch.stack([g[0][rows[j]] for g, _, _ in per_task])]
            else:
                n = len(shared[j])
                offset = sum(len(p) for p in shared[:j])
                shared_grads = [
                    torch.stack([g[offset + i] for g, _, _ in per_task]) for i in range(n)
                ]
            mine: dict[int, Tensor] = {}
            for _, leaves, _ in per_task:
                for leaf in leaves:
                    if owner[id(leaf)] == j:
                        mine.setdefault(id(leaf), leaf)
            params = list(mine.values())
            position = {id(p): i for i, p in enumerate(params)}
            other: list[list[Tensor | None]] = []
            for _, leaves, leaf_grads in per_task:
                row: list[Tensor | None] = [None] * len(params)
                for leaf, g in zip(leaves, leaf_grads):
                    if owner[id(leaf)] == j:
                        row[position[id(leaf)]] = g
                other.append(row)
            result.append(TaskGradients(shared_grads, params, other))
        return result

    # -- evaluation ---------------------------------------------------------------------

    def evaluated(self, split: str, member: _Member) -> tuple[dict, dict]:
        """A member's metrics and mean losses of a split this epoch; the first request of a
        split evaluates every alive member at once."""
        if split not in self.cache:
            self._evaluate_all(split, [m for m in self.members if m.active])
        return self.cache[split][id(member)]

    def _evaluate_all(self, split: str, members: list[_Member]) -> None:
        """The engine's ``_evaluate`` for every member, on one stacked forward per batch."""
        problem, tasks = self.problem, self.problem.tasks
        meters = [problem.new_meter() for _ in members]
        sums = [torch.zeros(problem.n_tasks, device=self.device) for _ in members]
        count = 0
        for member in members:
            member.model.eval()
        with torch.no_grad():
            params = self.stacked.parameters([m.model for m in members], detach=True)
            for batch in problem.batches(split, self.config.eval_batch_size):
                batch = batch.to(self.device)
                _, outputs = self.stacked.forward(params, {}, batch.inputs, shared=True)
                for s in range(len(members)):
                    mine = {t: o[s] for t, o in outputs.items()}
                    sums[s] += problem.losses(mine, batch.targets) * batch.size
                    meters[s].update(mine, batch)
                count += batch.size
        self.cache[split] = {
            id(m): (meter.compute(), dict(zip(tasks, (total / max(count, 1)).tolist())))
            for m, meter, total in zip(members, meters, sums)
        }


def _leaves(edges: Sequence[GradientEdge], stop: Any, exclude: set[int]) -> list[Tensor]:
    """The leaves reachable from any of ``edges`` without passing ``stop``, but ``exclude``."""
    found: list[Tensor] = []
    seen: set[int] = set()
    stack = [e.node for e in edges]
    while stack:
        node = stack.pop()
        if node is None or node is stop or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None:
            if id(variable) not in exclude:
                found.append(variable)
            continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def _is_other_dropout(module: nn.Module) -> bool:
    return "Dropout" in type(module).__name__ and type(module) not in _DROPOUTS
