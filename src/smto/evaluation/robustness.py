"""Are multi-task features more robust to corrupted images than single-task ones?

Elich et al. 2024, "Examining Common Paradigms in Multi-Task Learning", App. A6. For each
saved best model (multi-task and single-task runs of an image problem):

1. freeze the backbone (the shared encoder, in eval mode: its BatchNorm statistics stay);
2. fine-tune the heads on the training split, each image corrupted by an ImageNet-C
   corruption and severity drawn at random for it
   (:func:`~smto.data.corruptions.corrupt_randomly`: seeded, one copy of the split, cached);
3. evaluate on the test split corrupted by every corruption at every severity
   (:func:`~smto.data.corruptions.corrupt_split`, seeded and cached);
4. score with their Eq. 26: per task metric, the relative change of the corrupted score
   against the model's clean test score, r = (M_corrupted - M_clean) / M_clean, averaged over
   corruptions, severities and seeds, and then ``s (r_MTL - r_STL)`` with s = +1 where a
   higher value is better and -1 otherwise: positive where the multi-task model lost less
   than the single-task one.

Our copy of the paper lost Eq. 26's symbols; the rule above is the one its text states
("the relative performance when each model is faced with corrupted data", "the difference of
relative performances of the MTL compared to the STL model", positive "if the MTL model was
able to handle data corruption better"). The clean score is the run's own clean test result
at its best epoch. Details the paper leaves open, and what smto does:

* the heads start from the trained ones and are fine-tuned with the run's optimizer family
  (Adam for Adam and per-task Adam, SGD with the run's momentum for SGD, signSGD) at the
  run's initial learning rate and weight decay, on the plain sum of the task losses: with the
  backbone frozen each head sees only its own loss, so the method plays no part;
* the corrupted training split is drawn once (not per epoch), which keeps fine-tuning as
  cheap as training on clean data once the copy is cached;
* no other augmentation during fine-tuning.

The results of each run are written into its run directory (``robustness-<key>.json``, and
the fine-tuned model beside it), so a killed command resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from smto import registry
from smto._optional import require
from smto.capabilities import HeadInputs
from smto.data import corruptions as imagenet_c
from smto.data import paths
from smto.errors import ConfigError, NonFiniteError
from smto.evaluation.reference_values import Reference
from smto.evaluation.selection import configuration_key, group_runs, select_configurations
from smto.models.base import SharedEncoderModel
from smto.optim import SignSGD
from smto.problems import Metric, Problem, create_problem, problem_options
from smto.problems.images import ImageProblem
from smto.report.tables import Table
from smto.train import RunConfig
from smto.train.evaluate import Metrics, evaluate_split
from smto.train.records import BEST_MODEL, atomic_write, atomic_write_text, load_run

pd = require("pandas", "bench", "smto.evaluation.robustness")

FORMAT_VERSION = 1
"""Of the result files (and of what they hold)."""
MEAN = "mean"


@dataclass(frozen=True)
class RobustnessSettings:
    """What a robustness evaluation does; every run of one evaluation uses the same."""

    corruptions: tuple[str, ...] = imagenet_c.CORRUPTIONS
    """The corruptions of the fine-tuning data and of the test sets (ImageNet-C's 15)."""
    severities: tuple[int, ...] = imagenet_c.SEVERITIES
    epochs: int = 10
    """Fine-tuning epochs of the heads."""
    lr: float | None = None
    """The heads' learning rate; None: the run's (initial) learning rate."""
    seed: int = 0
    """Of the corruptions (the batch order is the run's seed)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "corruptions", tuple(self.corruptions))
        object.__setattr__(self, "severities", tuple(int(s) for s in self.severities))
        imagenet_c.random_choices(0, self.corruptions, self.severities, self.seed)
        if len(set(self.corruptions)) != len(self.corruptions) or len(set(self.severities)) != len(
            self.severities
        ):
            raise ConfigError("corruptions and severities must not repeat")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(f"epochs must be an integer >= 0, got {self.epochs!r}")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"lr must be a number > 0 or None (the run's), got {self.lr!r}")

    def key(self) -> str:
        """A short id of these settings: the name of their result files in a run directory."""
        text = json.dumps({**asdict(self), "version": FORMAT_VERSION}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass
class RunRobustness:
    """One run's scores: clean, after fine-tuning on clean test, and per corrupted test set."""

    run_id: str
    config: dict
    clean: Metrics
    """The run's clean test metrics at its best epoch (before fine-tuning)."""
    status: str = "running"
    """"running" (resumable), "completed" or "diverged" (a non-finite fine-tuning loss)."""
    reason: str | None = None
    finetuned_clean: Metrics | None = None
    """The fine-tuned model on the clean test set."""
    corrupted: dict[str, dict[str, Metrics]] = field(default_factory=dict)
    """By corruption, then severity (as a string, JSON's keys), the test metrics."""
    settings: dict = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return self.config["tasks"].split("_")

    @property
    def method(self) -> str:
        return self.config["method"]

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=1, allow_nan=True))

    @classmethod
    def load(cls, path: Path) -> RunRobustness:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise ConfigError(
                f"the robustness result {path} is unreadable ({error}); delete it to recompute"
            ) from None


def result_path(directory: Path, settings: RobustnessSettings) -> Path:
    """Where a run's results under ``settings`` are kept."""
    return Path(directory) / f"robustness-{settings.key()}.json"


def unevaluable(directory: Path) -> str | None:
    """Why the run in ``directory`` cannot be evaluated (not completed, no saved best model,
    a method feeding the heads through its own modules), or None."""
    record = load_run(directory)
    if record.status != "completed":
        return f"run {record.run_id} is {record.status}, not completed"
    if not (directory / BEST_MODEL).is_file():
        return f"run {record.run_id} has no saved best model ({BEST_MODEL})"
    if record.best_test is None:
        return f"run {record.run_id} has no test result at a best epoch"
    if issubclass(registry.spec(record.config["method"]).cls, HeadInputs):
        return (
            f"run {record.run_id}: {record.config['method']} feeds the heads through its own "
            "modules (not in the saved model), so its heads cannot be fine-tuned alone"
        )
    return None


def _problem(config: RunConfig, data_dir: str | None) -> Problem:
    options = dict(config.problem_options)
    if "data_dir" in problem_options(config.problem):
        options["data_dir"] = data_dir
    problem = create_problem(config.problem, config.tasks, **options)
    if not isinstance(problem, ImageProblem):
        raise ConfigError(
            f"robustness corrupts input images: {config.problem!r} is not an image problem "
            "(cityscapes, nyuv2 and celeba are)"
        )
    return problem


def _head_optimizer(config: RunConfig, model: SharedEncoderModel, lr: float):
    """The run's optimizer family over the heads (module docstring)."""
    params = list(model.heads.parameters())
    wd = config.weight_decay
    if config.optimizer in ("adam", "per_task_adam"):
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if config.optimizer in ("sgd", "mtl_io"):
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=wd)
    if config.optimizer == "signsgd":
        return SignSGD(params, lr=lr, momentum=config.momentum, weight_decay=wd)
    raise ConfigError(f"no head fine-tuning for optimizer {config.optimizer!r}")


def finetune_heads(
    model: SharedEncoderModel,
    problem: Problem,
    config: RunConfig,
    epochs: int,
    lr: float,
    device: torch.device | str,
) -> list[float]:
    """Trains the heads of ``model`` on ``problem``'s training split with the backbone frozen
    (no gradient, eval mode); returns the mean summed loss of each epoch. A non-finite loss
    raises NonFiniteError."""
    for param in model.encoder.parameters():
        param.requires_grad_(False)
    optimizer = _head_optimizer(config, model, lr)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    for epoch in range(epochs):
        model.encoder.eval()
        model.heads.train()
        total, count = torch.zeros((), device=device), 0
        for batch in problem.batches("train", config.batch_size, generator):
            batch = batch.to(device)
            with torch.no_grad():
                features = model.encoder(batch.inputs)
            outputs = {name: head(features) for name, head in model.heads.items()}
            loss = problem.losses(outputs, batch.targets).sum()
            if not torch.isfinite(loss):
                raise NonFiniteError(f"non-finite fine-tuning loss at epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * batch.size
            count += batch.size
        history.append(float(total) / max(count, 1))
    return history


def evaluate_run(
    directory: str | Path,
    settings: RobustnessSettings,
    data_dir: str | None = None,
    device: str = "cpu",
    cache: Path | None = None,
) -> RunRobustness:
    """One run's robustness (module docstring), resumed from its result file where one exists.

    ``cache``: where corrupted splits are kept (default ``<cache dir>/corruptions``)."""
    directory = Path(directory)
    reason = unevaluable(directory)
    if reason is not None:
        raise ConfigError(reason)
    record = load_run(directory)
    config = RunConfig(**record.config)
    path = result_path(directory, settings)
    result = RunRobustness.load(path) if path.is_file() else None
    if result is not None and result.status in ("completed", "diverged"):
        return result
    if result is None:
        result = RunRobustness(
            record.run_id, record.config, record.best_test, settings=asdict(settings)
        )
    cache = Path(cache) if cache is not None else paths.cache_dir(None, data_dir) / "corruptions"
    problem = _problem(config, data_dir)
    model = problem.make_model(config.dropout).to(device)
    tuned = directory / f"robustness-{settings.key()}-model.pt"
    if tuned.is_file():
        model.load_state_dict(torch.load(tuned, map_location=device, weights_only=True))
    else:
        model.load_state_dict(
            torch.load(directory / BEST_MODEL, map_location=device, weights_only=True)
        )
        train_images = imagenet_c.corrupt_randomly(
            problem.split_images("train"),
            settings.corruptions,
            settings.severities,
            settings.seed,
            cache,
        )
        try:
            finetune_heads(
                model,
                problem.with_split_images("train", train_images),
                config,
                settings.epochs,
                settings.lr or config.lr,
                device,
            )
        except NonFiniteError as error:
            result.status, result.reason = "diverged", str(error)
            result.save(path)
            return result
        atomic_write(tuned, lambda handle: torch.save(model.state_dict(), handle))
    batch = config.eval_batch_size
    if result.finetuned_clean is None:
        result.finetuned_clean = evaluate_split(model, problem, "test", batch, device)[0]
        result.save(path)
    test_images = problem.split_images("test")
    for name in settings.corruptions:
        done = result.corrupted.setdefault(name, {})
        for severity in settings.severities:
            if str(severity) in done:
                continue
            images = imagenet_c.corrupt_split(test_images, name, severity, settings.seed, cache)
            corrupted = problem.with_split_images("test", images)
            done[str(severity)] = evaluate_split(model, corrupted, "test", batch, device)[0]
            result.save(path)
    result.status = "completed"
    result.save(path)
    return result


# ------------------------------------------------------------------ scores (Eq. 26)


def relative_change(corrupted: float, clean: float) -> float:
    """(M_corrupted - M_clean) / M_clean; nan where the clean score is 0."""
    return (corrupted - clean) / clean if clean != 0 else math.nan


def scores_frame(results: Sequence[RunRobustness], metrics: Mapping[str, tuple[Metric, ...]]):
    """Every completed run's absolute and relative score, one row per (run, corruption,
    severity, task, metric): the long table behind every other."""
    rows = []
    for result in results:
        if result.status != "completed":
            continue
        kind = "STL" if len(result.tasks) == 1 else "MTL"
        for name, by_severity in result.corrupted.items():
            for severity, values in by_severity.items():
                for task in result.tasks:
                    for metric in metrics[task]:
                        clean = result.clean[task][metric.name]
                        value = values[task][metric.name]
                        rows.append(
                            {
                                "kind": kind,
                                "method": result.method,
                                "tasks": result.config["tasks"],
                                "run_id": result.run_id,
                                "seed": result.config.get("seed", 0),
                                "corruption": name,
                                "severity": int(severity),
                                "task": task,
                                "metric": metric.name,
                                "clean": clean,
                                "value": value,
                                "relative": relative_change(value, clean),
                            }
                        )
    return pd.DataFrame(rows)


def _label(frame: pd.DataFrame) -> pd.Series:
    """A multi-task row's label: its method, with its tasks where several task sets occur."""
    several = frame.loc[frame["kind"] == "MTL", "tasks"].nunique() > 1
    return frame["method"] + (" (" + frame["tasks"] + ")" if several else "")


def _columns(metrics: Mapping[str, tuple[Metric, ...]]) -> list[tuple[str, Metric]]:
    return [(task, metric) for task, ms in metrics.items() for metric in ms]


def eq26_frame(
    scores: pd.DataFrame,
    metrics: Mapping[str, tuple[Metric, ...]],
    by: Sequence[str] = (),
) -> pd.DataFrame:
    """Elich et al.'s Eq. 26 per multi-task method (rows; with ``by``, e.g. ("corruption",),
    one row per method and value of those columns) and task metric (columns "task/metric"),
    and their mean: s (r_MTL - r_STL), each r averaged over the runs' corruptions, severities
    and seeds. A task metric without a single-task run is nan."""
    if scores.empty:
        raise ConfigError("no completed robustness results to score")
    scores = scores.assign(label=_label(scores))
    keys = [*by, "task", "metric"]
    stl = scores[scores["kind"] == "STL"].groupby(keys)["relative"].mean()
    mtl = scores[scores["kind"] == "MTL"].groupby(["label", *keys])["relative"].mean()
    rows = {}
    for index, relative in mtl.items():
        label, rest = index[0], index[1:]
        task, metric_name = rest[-2], rest[-1]
        metric = next(m for t, m in _columns(metrics) if t == task and m.name == metric_name)
        sign = 1.0 if metric.higher_is_better else -1.0
        single = stl.get(rest, math.nan)
        row_key = (label, *rest[:-2]) if by else label
        rows.setdefault(row_key, {})[f"{task}/{metric_name}"] = sign * (relative - single)
    frame = pd.DataFrame.from_dict(rows, orient="index")
    order = [f"{t}/{m.name}" for t, m in _columns(metrics) if f"{t}/{m.name}" in frame.columns]
    frame = frame[order]
    frame[MEAN] = frame.mean(axis=1, skipna=False)
    if by:
        frame.index = pd.MultiIndex.from_tuples(frame.index, names=["method", *by])
    return frame


def absolute_frame(scores: pd.DataFrame) -> pd.DataFrame:
    """The mean corrupted score per model kind ("STL", or the multi-task method) and task
    metric, over corruptions, severities and seeds (Elich et al.'s absolute tables)."""
    if scores.empty:
        raise ConfigError("no completed robustness results to score")
    scores = scores.assign(label=_label(scores).where(scores["kind"] == "MTL", "STL"))
    scores = scores.assign(column=scores["task"] + "/" + scores["metric"])
    frame = scores.pivot_table(index="label", columns="column", values="value", aggfunc="mean")
    order = list(dict.fromkeys(scores["column"]))
    return frame[order]


def robustness_tables(
    scores: pd.DataFrame, metrics: Mapping[str, tuple[Metric, ...]]
) -> list[Table]:
    """The relative table (Eq. 26 per method), the relative table per corruption (methods x
    corruptions) and the absolute table, each a :class:`~smto.report.tables.Table`."""
    directions = {f"{t}/{m.name}": m.higher_is_better for t, m in _columns(metrics)}
    relative = eq26_frame(scores, metrics)
    by_corruption = eq26_frame(scores, metrics, by=("corruption",))
    by_corruption.index = [f"{method}: {name}" for method, name in by_corruption.index]
    absolute = absolute_frame(scores)
    up = dict.fromkeys([*relative.columns], True)
    return [
        Table(
            "robustness_relative",
            "Eq. 26 of Elich et al. (App. A6): s (r_MTL - r_STL) per task metric, r the relative "
            "change of the corrupted test score, averaged over corruptions, severities and "
            "seeds; positive where the multi-task features lost less",
            relative,
            up,
        ),
        Table(
            "robustness_relative_by_corruption",
            "Eq. 26 per method and corruption (averaged over severities and seeds)",
            by_corruption,
            up,
        ),
        Table(
            "robustness_absolute",
            "Mean corrupted test scores after fine-tuning the heads (over corruptions, "
            "severities and seeds)",
            absolute,
            {c: directions.get(c) for c in absolute.columns},
        ),
    ]


def chosen_runs(directories: Sequence[Path], reference: Reference | None = None) -> list[Path]:
    """The run directories to evaluate: every run, where each multi-task method (and task set)
    and each single task has one configuration; otherwise ``reference`` chooses, as
    ``smto report`` does (a method's configuration of the best mean validation Delta_m; a
    task's single-task runs the reference was built from). Several configurations and no
    reference is a ConfigError: the scores would mix them."""
    records = {Path(d): load_run(d) for d in directories}
    done = {d: r for d, r in records.items() if r.status == "completed"}
    groups: dict[tuple[str, str], list[Path]] = {}
    for directory, record in done.items():
        single = len(record.config["tasks"].split("_")) == 1
        group = (
            ("", record.config["tasks"])
            if single
            else (record.config["method"], record.config["tasks"])
        )
        groups.setdefault(group, []).append(directory)
    chosen = [d for d, r in records.items() if d not in done]  # left out later, with a reason
    for (method, tasks), members in groups.items():
        by_key = group_runs(done[d] for d in members)
        if len(by_key) == 1:
            chosen += members
            continue
        what = f"method {method} on {tasks}" if method else f"the single task {tasks}"
        if reference is None:
            raise ConfigError(
                f"{what} has {len(by_key)} configurations under the runs directory: give "
                "--reference (the single-task reference JSON) to choose as smto report does, "
                "or point it at the chosen runs"
            )
        if method:
            key = select_configurations([done[d] for d in members], reference)[0]
            chosen += [d for d in members if configuration_key(done[d].config) == key]
        else:
            ids = {i for ids in reference.sources.get(tasks, {}).values() for i in ids}
            kept = [d for d in members if done[d].run_id in ids]
            if not kept:
                raise ConfigError(f"the reference names none of the runs of {what}")
            chosen += kept
    return sorted(chosen)


def robustness_of_runs(
    directories: Sequence[Path],
    settings: RobustnessSettings,
    data_dir: str | None = None,
    device: str = "cpu",
    cache: Path | None = None,
) -> list[RunRobustness]:
    """:func:`evaluate_run` of each run; a run that cannot be evaluated (not completed, no
    saved model, a method with its own head inputs) is left out with a warning."""
    results = []
    for directory in directories:
        reason = unevaluable(Path(directory))
        if reason is not None:
            warnings.warn(f"robustness: left out: {reason}", stacklevel=2)
            continue
        results.append(evaluate_run(directory, settings, data_dir, device, cache))
    return results
