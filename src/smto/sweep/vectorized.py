"""A worker's vectorized trials: up to S waiting trials that differ only in seed, lr, dropout
or weight decay, claimed together and trained as one model
(:func:`smto.train.vectorized.train_vectorized`).

Each trial keeps its own heartbeat, progress and outcome, exactly as
:func:`smto.sweep.execute.execute` records a single one; the runs (and so the results) are
those of separate runs. A claimed trial that does not fit the group goes back to the queue.
Only queued (grid) trials are grouped: a TPE search's trials are asked one at a time.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from smto.errors import SmtoError
from smto.sweep.execute import (
    Heartbeat,
    ProblemCache,
    TrialLost,
    finish_trial,
    slot_mismatch,
    tell,
)
from smto.sweep.storage import require_optuna
from smto.sweep.trials import claim, mark_duplicate, owner
from smto.train import RunConfig, RunRecord, run_dir
from smto.train.vectorized import group_key, train_vectorized

if TYPE_CHECKING:
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

AUTO_MEMORY_SHARE = 0.25
"""The share of the available memory an automatically sized group may take."""
AUTO_MAX_RUNS = 16
"""The largest group an automatic size gives."""


def claim_partners(
    storage: RDBStorage, study_id: int, first: FrozenTrial, limit: int
) -> list[FrozenTrial]:
    """Claims up to ``limit - 1`` more waiting trials of the study that can train together
    with ``first`` (same :func:`smto.train.vectorized.group_key`); the first waiting trial
    that cannot goes back to the queue and ends the claiming."""
    optuna = require_optuna()
    key = _key(first)
    if key is None:
        return []
    partners: list[FrozenTrial] = []
    while len(partners) < limit - 1:
        trial = claim(storage, study_id)
        if trial is None:
            break
        first_owner = owner(storage, study_id, trial.user_attrs["slot"])
        if first_owner is None:  # taken for dead already
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        if first_owner != trial.number:
            mark_duplicate(storage, trial_id, first_owner)
            continue
        if _key(trial) != key:
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.WAITING)
            break
        partners.append(trial)
    return partners


def _key(trial: FrozenTrial) -> tuple | None:
    """The trial's group key; None when its configuration does not read back (executing it
    alone reports why)."""
    try:
        return group_key(RunConfig.from_dict(trial.user_attrs["config"]))
    except (SmtoError, KeyError, TypeError, ValueError):
        return None


def execute_group(
    storage: RDBStorage,
    study_id: int,
    trials: list[FrozenTrial],
    root: Path,
    heartbeat_interval: int,
    problems: ProblemCache,
) -> list[str]:
    """Runs the claimed ``trials`` as one vectorized model under ``root`` and records each
    one's outcome as :func:`smto.sweep.execute.execute` does; returns their statuses."""
    optuna = require_optuna()
    running = optuna.trial.TrialState.RUNNING
    ids = [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials]
    outcomes: dict[int, str] = {}
    configs: list[RunConfig] = []
    trial_of: dict[str, int] = {}
    for trial, trial_id in zip(trials, ids):
        config = RunConfig.from_dict(trial.user_attrs["config"])
        reason = slot_mismatch(config, trial)
        if reason is not None:
            attrs = {"status": "failed", "reason": reason}
            state = optuna.trial.TrialState.FAIL
            outcomes[trial_id] = finish_trial(storage, trial_id, state, attrs, None)
            continue
        configs.append(config)
        trial_of[config.run_id()] = trial_id
    if not configs:
        return [outcomes[i] for i in ids]

    def on_epoch_end(record: RunRecord) -> None:
        trial_id = trial_of[record.run_id]
        if storage.get_trial(trial_id).state != running:
            raise TrialLost(f"trial {trial_id} is no longer running under this worker")
        progress = {"epochs": len(record.history), "seconds": record.seconds}
        storage.set_trial_user_attr(trial_id, "progress", progress)

    group = list(trial_of.values())
    try:
        with ExitStack() as beats:
            for config, trial_id in zip(configs, group):
                storage.set_trial_user_attr(trial_id, "run_dir", str(run_dir(config, root)))
                storage.set_trial_user_attr(trial_id, "vectorized_with", len(configs))
                storage.set_trial_user_attr(trial_id, "vectorized_group", trials[0].number)
                beats.enter_context(Heartbeat(storage, trial_id, heartbeat_interval))
            records = train_vectorized(
                configs, root, problem=problems.get(configs[0]), on_epoch_end=on_epoch_end,
                wait=True,
            )  # fmt: skip
    except TrialLost:
        # the others stop beating: taken for dead, they are re-queued and resume
        return [outcomes.get(i, "lost") for i in ids]
    except KeyboardInterrupt:
        for trial_id in group:
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.WAITING)
        raise
    except Exception as error:
        attrs = {"status": "failed", "reason": f"{type(error).__name__}: {error}"}
        for trial_id in group:
            state = optuna.trial.TrialState.FAIL
            outcomes[trial_id] = finish_trial(storage, trial_id, state, dict(attrs), None)
        return [outcomes[i] for i in ids]
    for record in records:
        trial_id = trial_of[record.run_id]
        outcomes[trial_id] = tell(storage, trial_id, record)
    return [outcomes[i] for i in ids]


def auto_group_size(config: RunConfig, problems: ProblemCache) -> int:
    """How many runs of ``config``'s kind to train together: as many as fit in
    :data:`AUTO_MEMORY_SHARE` of the available memory (the device's, or the host's), each
    costing its parameters six times (weights, gradients, Adam's two moments, the stacked
    copy and its gradient) and the activations one forward pass saves for backward at the
    run's batch size; at most :data:`AUTO_MAX_RUNS`, at least 1."""
    import torch

    problem = problems.get(config)
    model = problem.make_model(config.dropout)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    batch = next(problem.batches("train", config.batch_size))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _, outputs = model(batch.inputs)
        problem.losses(outputs, batch.targets)
    per_run = 6 * weights + saved
    available = _available_memory(torch.device(config.device))
    return max(1, min(AUTO_MAX_RUNS, int(AUTO_MEMORY_SHARE * available // max(per_run, 1))))


def _available_memory(device) -> int:
    """Free bytes on a CUDA device, else the host's MemAvailable (Linux), else 4 GiB."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 1024**3
