"""The training engine: one run = (problem, tasks, method, optimizer, schedule, seed, device).

Per epoch: train over shuffled batches (the capabilities a method declares served
generically, see :mod:`smto.capabilities`: validation batches for Auto-Lambda, per-task head
inputs for RotoGrad, the post-step forward for FAMO, the epoch end for DWA), evaluate
validation, keep the model of the best validation epoch (and evaluate test there), step the
scheduler, checkpoint, and write the record. A killed run resumes from its last checkpoint
with exactly the numbers it would have had; a non-finite loss, objective term or task
gradient ends the run as "diverged" at the step it happened.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import smto
from smto import registry
from smto._optional import require
from smto.capabilities import (
    EpochEnd,
    HeadTargets,
    ValidationStep,
    head_inputs_of,
    optimizer_groups,
)
from smto.errors import ConfigError, DataError, RunStateError
from smto.method import Method, RunContext
from smto.models.base import SharedEncoderModel
from smto.optim import MTLIO, PerTaskAdam, SignSGD
from smto.problems import Batch, Problem, create_problem, problem_options
from smto.problems.delta_m import delta_m, delta_m_score
from smto.train.checkpoint import load_checkpoint, save_checkpoint
from smto.train.compiled import compile_model
from smto.train.config import RunConfig, check_device
from smto.train.evaluate import evaluate_split
from smto.train.lock import RunLock
from smto.train.probes import GradientProbe, ProbeSpec
from smto.train.records import BEST_MODEL, CHECKPOINT, RECORD, RunRecord, atomic_write, load_run
from smto.train.step import Diverged, training_step

EpochCallback = Callable[[RunRecord], None]
FINISHED = ("completed", "diverged", "pruned")
"""Statuses of runs that are not resumed."""


class Pruned(Exception):
    """Raised by an ``on_epoch_end`` callback to stop a run for good (e.g. an Optuna pruner):
    the run ends with status "pruned" and is not resumed."""


def run_dir(config: RunConfig, root: str | os.PathLike[str]) -> Path:
    """The directory of ``config``'s run under ``root``."""
    return Path(root) / config.run_id()


def train(
    config: RunConfig,
    root: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    problem: Problem | None = None,
    progress: bool = False,
    on_epoch_end: EpochCallback | None = None,
    wait: bool = False,
    rebuild_record: bool = False,
) -> RunRecord:
    """Trains (or resumes, or just returns) the run of ``config`` under ``root``.

    A finished run (completed, diverged or pruned) is returned as recorded; an unfinished
    one resumes from its last checkpoint, and one whose checkpoint holds every epoch is
    finished from it. ``problem`` reuses an already loaded problem (it must match the
    configuration); otherwise it is built with ``data_dir``. ``on_epoch_end`` is called with
    the record after each epoch (an exception there stops the run, which stays resumable;
    :class:`Pruned` stops it for good).

    One process trains in a run directory at a time: another one gets a
    :class:`smto.errors.RunStateError` naming it, or with ``wait`` waits for it. A corrupt
    ``record.json`` is an error that says whether the checkpoint can rebuild it;
    ``rebuild_record`` does so (the corrupt file is kept beside it). The root, the device
    (unless the run is finished) and the problem are checked before the run directory is
    created.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"the run root {root} is a file, not a directory: name a directory")
    directory = run_dir(config, root)
    existing = _finished_record(directory, config, rebuild_record, locked=False)
    if existing is not None:
        return existing  # also on a machine without the run's device
    check_device(config.device)
    problem = _problem_for(config, problem, data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    with RunLock(directory, wait=wait):
        existing = _finished_record(directory, config, rebuild_record, locked=True)
        if existing is not None:
            return existing
        run = _Run(config, problem, directory)
        return run.execute(progress=progress, on_epoch_end=on_epoch_end)


def _problem_for(
    config: RunConfig, problem: Problem | None, data_dir: str | os.PathLike[str] | None
) -> Problem:
    """The given problem, checked against the configuration, or the configured one built."""
    if problem is None:
        options = dict(config.problem_options)
        if "data_dir" in problem_options(config.problem):
            options["data_dir"] = data_dir
        return create_problem(config.problem, config.tasks, **options)
    if problem.name != config.problem or "_".join(problem.tasks) != config.tasks:
        raise ConfigError(
            f"the given problem ({problem.name}, {'_'.join(problem.tasks)}) does not match the "
            f"configuration ({config.problem}, {config.tasks})"
        )
    return problem


def _finished_record(
    directory: Path, config: RunConfig, rebuild: bool, locked: bool
) -> RunRecord | None:
    """The record of a finished run in ``directory``; None when there is none yet or the run
    is unfinished (the checkpoint then resumes it, or finishes it when it holds every epoch).
    A corrupt record is set aside for rebuilding only while the run directory is ``locked``."""
    path = directory / RECORD
    if not path.exists():
        return None
    try:
        record = load_run(directory)
    except DataError as error:
        if not (directory / CHECKPOINT).exists():
            raise RunStateError(
                f"{error}; there is no checkpoint to rebuild it from: delete {directory} to "
                "train the run again"
            ) from None
        if not rebuild:
            raise RunStateError(
                f"{error}; the checkpoint {directory / CHECKPOINT} holds the record as of its "
                "last epoch: rebuild it from there with --rebuild-record (the corrupt file is "
                "kept as record.json.corrupt)"
            ) from None
        if locked:
            os.replace(path, path.with_name(RECORD + ".corrupt"))
        return None
    if not config.same_run(record.config):
        raise RunStateError(
            f"{directory} holds the record of run {record.run_id}, whose configuration differs "
            f"from that of run {config.run_id()}: nothing was changed; use another directory"
        )
    return record if record.status in FINISHED else None


class _DivergedAt(Diverged):
    """:class:`Diverged` at the ``step``-th batch of an epoch."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


@dataclass
class _EpochSums:
    """Per-epoch sums kept on the device (no per-step host synchronization)."""

    losses: Tensor
    weights: Tensor
    steps: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    info_steps: dict[str, int] = field(default_factory=dict)
    probes: dict[str, Any] | None = None

    def add_info(self, info: dict[str, Any]) -> None:
        """Adds one step's method diagnostics (``StepResult.info``: floats or 0-d tensors)."""
        for key, value in info.items():
            value = value.detach() if isinstance(value, Tensor) else float(value)
            self.info[key] = self.info[key] + value if key in self.info else value
            self.info_steps[key] = self.info_steps.get(key, 0) + 1

    def info_means(self) -> dict[str, float]:
        """Each diagnostic's mean over the steps that reported it."""
        return {key: float(total) / self.info_steps[key] for key, total in self.info.items()}


class _Run:
    def __init__(self, config: RunConfig, problem: Problem, directory: Path) -> None:
        self.config = config
        self.device = torch.device(config.device)
        self.problem = problem.resident(self.device)  # on an accelerator: the data moved once
        self.directory = directory
        torch.manual_seed(config.seed)
        self.model: SharedEncoderModel = problem.make_model(config.dropout).to(self.device)
        self.method: Method = _make_method(config, problem, self.model).to(self.device)
        if isinstance(self.method, HeadTargets):
            heads = [self.model.heads[t] for t in problem.tasks]
            self.method.bind_heads(heads, problem.loss_types())
        self.optimizer = _make_optimizer(config, self.model, self.method)
        if config.compile:
            compile_model(self.model)
        self.scheduler = _make_scheduler(config, self.optimizer)
        self.data_generator = torch.Generator().manual_seed(config.seed)
        self.shared = list(self.model.shared_parameters())
        self.per_task = config.optimizer == "per_task_adam"
        spec = ProbeSpec.from_config(config.probes)
        self.probe = (
            None if spec is None else GradientProbe(spec, self.model, problem.losses, config.seed)
        )
        self.record = RunRecord(
            run_id=config.run_id(),
            config=config.to_dict(),
            smto_version=smto.__version__,
            selection=_selection(config),
        )
        self.start_epoch = 0
        self._load_checkpoint()

    # -- the loop -----------------------------------------------------------------------

    def execute(self, progress: bool, on_epoch_end: EpochCallback | None) -> RunRecord:
        if self.start_epoch >= self.config.epochs:
            # The checkpoint holds every epoch (killed before the last record.json write, or
            # record.json lost): the record is the checkpoint's, and the run is done.
            self.record.status = "completed"
            self.record.save(self.directory)
            return self.record
        bar = _progress_bar(self.config.epochs, self.start_epoch) if progress else None
        self.record.status = "running"
        try:
            for epoch in range(self.start_epoch, self.config.epochs):
                started = time.perf_counter()
                try:
                    sums = self._train_epoch(epoch)
                except _DivergedAt as error:
                    self._finish("diverged", str(error), epoch, error.step)
                    break
                train_seconds = time.perf_counter() - started
                entry = self._evaluate_epoch(epoch, sums)
                entry["train_seconds"] = train_seconds
                entry["seconds"] = time.perf_counter() - started
                self.record.seconds += entry["seconds"]
                self.record.history.append(entry)
                absurd = self._beyond_divergence_bound(entry)
                if absurd is not None:
                    self._finish("diverged", f"epoch {epoch}: {absurd}", epoch)
                    break
                self._step_scheduler(entry)
                self.record.solver_failures = int(getattr(self.method, "solver_failures", 0))
                if epoch + 1 == self.config.epochs:
                    self.record.status = "completed"
                self._save_checkpoint(epoch + 1)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(_summary(entry), refresh=True)
                if on_epoch_end is not None:
                    on_epoch_end(self.record)
        except Pruned as reason:
            self._finish("pruned", str(reason) or "pruned by the epoch callback")
        except KeyboardInterrupt as stop:
            self._finish("interrupted", f"{stop or 'stopped by the user'} (resumable)")
            raise
        except Exception as error:
            self._finish("failed", f"{type(error).__name__}: {error}")
            raise
        finally:
            if bar is not None:
                bar.close()
        return self.record

    def _train_epoch(self, epoch: int) -> _EpochSums:
        model, method, problem = self.model, self.method, self.problem
        model.train()
        k = problem.n_tasks
        sums = _EpochSums(torch.zeros(k, device=self.device), torch.zeros(k, device=self.device))
        validation = self._validation_cycle(epoch) if isinstance(method, ValidationStep) else None
        batches = problem.batches("train", self.config.batch_size, self.data_generator)
        for step, batch in enumerate(batches):
            batch = batch.to(self.device)
            if self.probe is not None and self.probe.due(step):
                self.probe.observe(epoch, step, batch.inputs, batch.targets)
            val = next(validation) if validation is not None else None
            try:
                losses, result = training_step(
                    model,
                    method,
                    self.optimizer,
                    problem.losses,
                    batch.inputs,
                    batch.targets,
                    self.shared,
                    per_task_grads=self.per_task,
                    validation=None if val is None else (val.inputs, val.targets),
                    task_names=problem.tasks,
                )
            except Diverged as error:
                raise _DivergedAt(f"epoch {epoch}, step {step}: {error}", step) from None
            sums.losses += losses
            sums.weights += result.weights.to(sums.weights.dtype)
            sums.add_info(result.info)
            sums.steps += 1
        if isinstance(method, EpochEnd):
            method.end_epoch()
        if self.probe is not None:
            sums.probes = self.probe.end_epoch()
        return sums

    def _validation_cycle(self, epoch: int) -> Iterator[Batch]:
        """Validation batches for Auto-Lambda: shuffled, cycled, restarted each epoch from a
        generator seeded by (seed, epoch), so a resumed run draws the same ones."""
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        while True:
            for batch in self.problem.batches("val", self.config.eval_batch_size, generator):
                yield batch.to(self.device)

    def _evaluate(self, split: str) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
        """The metrics and mean losses of a split (eval mode, no gradients)."""
        return evaluate_split(
            self.model,
            self.problem,
            split,
            self.config.eval_batch_size,
            self.device,
            head_inputs=head_inputs_of(self.method),
        )

    def _evaluate_epoch(self, epoch: int, sums: _EpochSums) -> dict[str, Any]:
        tasks = self.problem.tasks
        steps = max(sums.steps, 1)
        val, val_loss = self._evaluate("val")
        score = self._score(val, val_loss)
        entry: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": dict(zip(tasks, (sums.losses / steps).tolist())),
            "weights": dict(zip(tasks, (sums.weights / steps).tolist())),
            "info": sums.info_means(),
            "val": val,
            "val_loss": val_loss,
            "score": score,
            "lr": self.optimizer.param_groups[0]["lr"],
            "test": None,
        }
        if sums.probes is not None:
            entry["probes"] = sums.probes
        best = self.record.best_score
        improved = best is None or (
            math.isfinite(score) and (not math.isfinite(best) or score > best)
        )
        metric_improved = self._improved_metrics(val) if self.problem.n_tasks == 1 else []
        if improved or metric_improved:
            entry["test"], _ = self._evaluate("test")
        if improved:
            self.record.best_epoch, self.record.best_score = epoch, score
            self.record.best_val, self.record.best_test = val, entry["test"]
            _atomic_torch_save(self.model.state_dict(), self.directory / BEST_MODEL)
        for task, name in metric_improved:
            self.record.best_by_metric[f"{task}/{name}"] = {
                "epoch": epoch,
                "val": val[task][name],
                "test": entry["test"][task][name],
            }
        return entry

    def _improved_metrics(self, val: dict[str, dict[str, float]]) -> list[tuple[str, str]]:
        """The (task, metric) pairs whose validation value beats their best so far: a
        single-task run keeps the best epoch of each metric separately (PROTOCOL.md)."""
        improved = []
        for task, metrics in self.problem.metrics().items():
            for metric in metrics:
                value = val[task][metric.name]
                best = self.record.best_by_metric.get(f"{task}/{metric.name}")
                if not math.isfinite(value):
                    continue
                if best is None or (
                    value > best["val"] if metric.higher_is_better else value < best["val"]
                ):
                    improved.append((task, metric.name))
        return improved

    def _score(self, val: dict[str, dict[str, float]], val_loss: dict[str, float]) -> float:
        """Higher is better: validation Delta_m (negated under Elich et al.'s convention, where
        lower is better), or minus the mean validation loss."""
        if self.config.reference:
            convention = self.config.delta_m_convention
            value = delta_m(val, self.config.reference, self.problem.metrics(), convention)
            return delta_m_score(value, convention)
        return -sum(val_loss.values()) / len(val_loss)

    def _beyond_divergence_bound(self, entry: dict[str, Any]) -> str | None:
        """Why the epoch's losses are absurd, relative to the first epoch's
        (``config.divergence_factor``), or None."""
        factor = self.config.divergence_factor
        if factor is None or entry is self.record.history[0]:
            return None
        first = self.record.history[0]
        for kind in ("train_loss", "val_loss"):
            for task, value in entry[kind].items():
                bound = factor * abs(first[kind][task])
                if value > bound:
                    return (
                        f"the mean {kind.replace('_', ' ')} of {task} is {value:.4g}, more than "
                        f"divergence_factor = {factor:g} times its first epoch's "
                        f"({first[kind][task]:.4g})"
                    )
        return None

    def _step_scheduler(self, entry: dict[str, Any]) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(sum(entry["val_loss"].values()) / len(entry["val_loss"]))
        elif self.scheduler is not None:
            self.scheduler.step()

    def _finish(
        self,
        status: str,
        reason: str,
        diverged_epoch: int | None = None,
        diverged_step: int | None = None,
    ) -> None:
        self.record.status = status
        self.record.reason = reason
        self.record.diverged_epoch = diverged_epoch
        self.record.diverged_step = diverged_step
        self.record.save(self.directory)

    # -- checkpoints ----------------------------------------------------------------------

    def _save_checkpoint(self, epochs_done: int) -> None:
        state = {
            "epochs_done": epochs_done,
            "model": self.model.state_dict(),
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "data": self.data_generator.get_state(),
            },
            # The record as of this checkpoint: a kill between the two writes below cannot
            # leave a resumed run with a history or best epoch of another epoch.
            "record": copy.deepcopy(self.record.to_dict()),
        }
        path = self.directory / CHECKPOINT
        save_checkpoint(path, state, self.config)
        self.record.save(self.directory)

    def _load_checkpoint(self) -> None:
        path = self.directory / CHECKPOINT
        if not path.exists():
            return
        state = load_checkpoint(path, self.config)
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.data_generator.set_state(state["rng"]["data"])
        self.record = RunRecord.from_dict(state["record"])
        self.start_epoch = state["epochs_done"]


def _selection(config: RunConfig) -> str:
    """What picks the best epoch: "delta_m" (the study's), "-delta_m_elich" (minus Elich et
    al.'s, so that higher is better) or "mean_val_loss" without a reference."""
    if not config.reference:
        return "mean_val_loss"
    return "-delta_m_elich" if config.delta_m_convention == "elich" else "delta_m"


def _make_method(config: RunConfig, problem: Problem, model: SharedEncoderModel) -> Method:
    """The configured method, with the run's context (loss types, representation size,
    learning rate, weight decay) for the defaults a method derives from it."""
    context = RunContext(
        loss_types=tuple(problem.loss_types()),
        representation_size=_representation_size(problem, model),
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    return registry.create(config.method, problem.n_tasks, context=context, **config.method_params)


def _representation_size(problem: Problem, model: SharedEncoderModel) -> int:
    """Dimension 1 of the encoder's output on one validation sample (eval mode, no grad)."""
    batch = next(problem.batches("val", 1))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        size = model.encoder(batch.to(device).inputs).shape[1]
    model.train(was_training)
    return int(size)


def _make_optimizer(
    config: RunConfig, model: SharedEncoderModel, method: Method
) -> torch.optim.Optimizer:
    """The model's parameters (shared, then heads) and the method's own groups."""
    shared_ids = {id(p) for p in model.shared_parameters()}
    groups: list[dict[str, Any]] = [
        {
            "params": list(model.shared_parameters()),
            "per_task": config.optimizer == "per_task_adam",
        },
        {"params": [p for p in model.parameters() if id(p) not in shared_ids]},
    ]
    for group in optimizer_groups(method, config.lr):
        groups.append({**group, "weight_decay": 0.0})
    wd, lr = config.weight_decay, config.lr
    if config.optimizer == "adam":
        for group in groups:
            group.pop("per_task", None)
        return torch.optim.Adam(groups, lr=lr, weight_decay=wd)
    if config.optimizer == "sgd":
        for group in groups:
            group.pop("per_task", None)
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, weight_decay=wd)
    if config.optimizer == "signsgd":
        for group in groups:
            group.pop("per_task", None)
        return SignSGD(groups, lr=lr, momentum=config.momentum, weight_decay=wd)
    if config.optimizer == "mtl_io":
        for group in groups:
            group.pop("per_task", None)
        return MTLIO(
            groups, n_tasks=method.n_tasks, lr=lr, momentum=config.momentum, weight_decay=wd
        )
    return PerTaskAdam(groups, n_tasks=method.n_tasks, lr=lr, weight_decay=wd)


def _make_scheduler(config: RunConfig, optimizer: torch.optim.Optimizer):
    if config.scheduler == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.gamma)
    if config.scheduler == "step":
        factor = 0.5 if config.step_factor is None else config.step_factor
        return torch.optim.lr_scheduler.StepLR(optimizer, config.step_size, gamma=factor)
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            factor=config.plateau_factor,
            patience=config.plateau_patience,
            min_lr=config.min_lr,
        )
    return None


def _atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda handle: torch.save(obj, handle))


def _progress_bar(total: int, done: int) -> Any:
    tqdm = require("tqdm.auto", "bench", "the training progress bar").tqdm
    return tqdm(total=total, initial=done, unit="epoch", dynamic_ncols=True)


def _summary(entry: dict[str, Any]) -> str:
    losses = " ".join(f"{t}:{v:.3g}" for t, v in entry["train_loss"].items())
    val = " ".join(
        f"{t}.{m}:{v:.4g}" for t, metrics in entry["val"].items() for m, v in metrics.items()
    )
    return f"loss {losses} | val {val}"
