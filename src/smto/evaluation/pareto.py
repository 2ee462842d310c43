"""The optimizer study of Elich et al. (Sec. 4.1.2, App. A4) over the runs of a sweep.

A configuration is a method, an optimizer, a learning rate (any setting but the seed, as
:func:`smto.evaluation.selection.configuration_key`); its values are the means over its seeds
of each run's metrics at its best epoch. Over the configurations of one problem and task set:

- :func:`pareto_optimal`: the Pareto front over all metrics ("PO (full)"), each metric in its
  own direction (``Metric.higher_is_better``);
- :func:`undominated_by`: the configurations no configuration of a rival optimizer dominates
  ("PO w.r.t. SGD": not dominated by any configuration trained with SGD);
- :meth:`OptimizerStudy.counts`: both, counted per method and optimizer (Table 2, Table A2);
- :meth:`OptimizerStudy.best`: per (method, optimizer) the configuration of the best mean
  validation Delta_m and its test results (Tables A4-A7);
- :meth:`OptimizerStudy.paired`: per method, Adam's best against SGD's best (Fig. A3).

Elich et al. do not say on which split they take the Pareto front; everything they report
(Tables A4-A7, Figs. 2 and A4) is test values at the epoch of best validation Delta_m, so the
front is taken on test by default (``split="val"`` is the option). Delta_m is Elich et al.'s
convention by default (``"elich"``: a flat mean over the metrics, a drop positive, lower is
better); ``"study"`` is the main study's.

A configuration with a run without a result (failed, or no best epoch) has no values: like
configuration selection, which counts such a run as the worst, it is never Pareto optimal
and dominates nothing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from smto import registry
from smto._optional import require
from smto.errors import ConfigError
from smto.evaluation.reference_values import Reference
from smto.evaluation.results import method_runs
from smto.evaluation.selection import (
    best_key,
    group_runs,
    ranking_score,
    run_values,
    task_metrics,
)
from smto.problems import parse_tasks
from smto.problems.base import Metric
from smto.problems.delta_m import check_convention, delta_m, delta_m_higher_is_better
from smto.train.config import OPTIMIZERS, RunConfig
from smto.train.records import RunRecord

pd = require("pandas", "bench", "smto.evaluation.pareto")

Values = dict[str, dict[str, float]]
SPLITS = ("test", "val")
"""The splits a Pareto front can be taken on."""
OPTIMIZER_NAMES = {
    "adam": "Adam",
    "sgd": "SGD",
    "signsgd": "signSGD",
    "per_task_adam": "per-task Adam",
}
"""How tables and figures name the optimizers (others keep their configuration name)."""
PO_FULL = "PO (full)"
"""The counts' column of the Pareto-optimal configurations (their Table 2's name)."""
_DEFAULTS = {f.name: f.default for f in fields(RunConfig)}


def optimizer_name(optimizer: str) -> str:
    """The display name of an optimizer ("sgd" -> "SGD")."""
    return OPTIMIZER_NAMES.get(optimizer, optimizer)


def po_against(optimizer: str) -> str:
    """The counts' column of the configurations no ``optimizer`` configuration dominates."""
    return f"PO w.r.t. {optimizer_name(optimizer)}"


def dominates(a: Sequence[float], b: Sequence[float], higher_is_better: Sequence[bool]) -> bool:
    """Whether ``a`` Pareto-dominates ``b``: at least as good in every metric and strictly
    better in one (each metric in its direction). Equal points do not dominate each other; a
    point with a nan dominates nothing and is dominated by every finite point."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.shape != (len(higher_is_better),):
        raise ConfigError(
            f"points of {len(higher_is_better)} metrics expected, got shapes {a.shape} and "
            f"{b.shape}"
        )
    if not np.isfinite(a).all():
        return False
    if not np.isfinite(b).all():
        return True
    sign = np.where(np.asarray(higher_is_better, dtype=bool), 1.0, -1.0)
    gain = sign * (a - b)
    return bool((gain >= 0).all() and (gain > 0).any())


def _matrix(points, higher_is_better: Sequence[bool]) -> np.ndarray:
    array = np.asarray(points, dtype=float)
    if array.size == 0:
        return array.reshape(0, len(higher_is_better))
    if array.ndim != 2 or array.shape[1] != len(higher_is_better):
        raise ConfigError(
            f"points must be an (n, {len(higher_is_better)}) array (one column per metric), "
            f"got shape {array.shape}"
        )
    return array


def undominated_by(
    points: Sequence[Sequence[float]],
    rivals: Sequence[Sequence[float]],
    higher_is_better: Sequence[bool],
) -> np.ndarray:
    """For each point, whether no rival dominates it (:func:`dominates`); False for a point
    with a nan (no result)."""
    points = _matrix(points, higher_is_better)
    rivals = _matrix(rivals, higher_is_better)
    flags = [
        bool(np.isfinite(p).all()) and not any(dominates(r, p, higher_is_better) for r in rivals)
        for p in points
    ]
    return np.array(flags, dtype=bool)


def pareto_optimal(
    points: Sequence[Sequence[float]], higher_is_better: Sequence[bool]
) -> np.ndarray:
    """For each point, whether it is on the Pareto front of ``points``: no other point
    dominates it. Duplicates of a front point are all on it (none dominates the others)."""
    return undominated_by(points, points, higher_is_better)


@dataclass
class OptimizerConfiguration:
    """One configuration of the sweep: its runs (seeds) and their mean results."""

    key: str
    """The configuration key (:func:`smto.evaluation.selection.configuration_key`)."""
    method: str
    """The registry name (e.g. "unit_scal")."""
    name: str
    """The method's display name (e.g. "Unit. Scal.")."""
    optimizer: str
    lr: float
    runs: list[RunRecord]
    val: Values
    """Mean validation metrics over the runs (nan where a run has no result)."""
    test: Values
    """Mean test metrics over the runs (nan where a run has no result)."""
    val_delta_m: list[float]
    """Validation Delta_m (%) of each run, in the study's convention (nan: no result)."""
    test_delta_m: list[float]
    """Test Delta_m (%) of each run, in the study's convention (nan: no result)."""

    def values(self, split: str) -> Values:
        """The mean metrics of ``split`` ("test" or "val")."""
        return self.test if split == "test" else self.val

    @property
    def seeds(self) -> list[int]:
        """The seed of each run."""
        return [int(r.config.get("seed", 0)) for r in self.runs]


@dataclass
class OptimizerStudy:
    """The configurations of one problem and task set, and their Pareto analysis."""

    problem: str
    tasks: str
    metrics: dict[str, tuple[Metric, ...]]
    reference: Reference
    configurations: list[OptimizerConfiguration]
    convention: str = "elich"
    """The Delta_m convention of the choices and the tables."""
    split: str = "test"
    """The split the Pareto front is taken on."""
    pareto: np.ndarray = field(init=False)
    """PO (full): per configuration, whether it is on the Pareto front of all of them."""

    def __post_init__(self) -> None:
        self.convention = check_convention(self.convention)
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {self.split!r}")
        self.pareto = pareto_optimal(self.points(), self.higher_is_better())

    def columns(self) -> list[tuple[str, str]]:
        """(task, metric) of every metric, in task order."""
        return [(task, m.name) for task, ms in self.metrics.items() for m in ms]

    def higher_is_better(self) -> list[bool]:
        """The direction of every metric, in the order of :meth:`columns`."""
        return [m.higher_is_better for ms in self.metrics.values() for m in ms]

    def points(self, configurations: Iterable[OptimizerConfiguration] | None = None):
        """The (n, metrics) array of the configurations' mean values on the study's split."""
        chosen = self.configurations if configurations is None else list(configurations)
        rows = [
            [c.values(self.split)[task][metric] for task, metric in self.columns()] for c in chosen
        ]
        return _matrix(rows, self.higher_is_better())

    def optimizers(self) -> list[str]:
        """The optimizers of the configurations: smto's order first, then others by name."""
        found = {c.optimizer for c in self.configurations}
        known = [o for o in OPTIMIZERS if o in found]
        return known + sorted(found - set(known))

    def methods(self) -> list[str]:
        """The registry names of the methods, by display name (Unit. Scal. first)."""
        found = {c.method: c.name for c in self.configurations}
        return sorted(found, key=lambda m: (m != "unit_scal", found[m]))

    def undominated_by(self, optimizer: str) -> np.ndarray:
        """Per configuration, whether no configuration trained with ``optimizer`` dominates
        it ("PO w.r.t. SGD" for ``optimizer="sgd"``)."""
        rivals = [c for c in self.configurations if c.optimizer == optimizer]
        if not rivals:
            raise ConfigError(
                f"no configuration trained with {optimizer!r}; optimizers of the runs: "
                f"{', '.join(self.optimizers())}"
            )
        return undominated_by(self.points(), self.points(rivals), self.higher_is_better())

    def frame(self) -> pd.DataFrame:
        """One row per configuration: method (display name), method_name, optimizer, lr,
        configuration, runs, the mean metrics of the split (``<split>.<task>.<metric>``), the
        mean validation and test Delta_m (``val_delta_m``, ``delta_m``), the test Delta_m's
        std over seeds (``delta_m_std``), ``pareto`` and, for each optimizer, whether no
        configuration of it dominates the row (``undominated_by.<optimizer>``)."""
        against = {o: self.undominated_by(o) for o in self.optimizers()}
        rows = []
        for i, c in enumerate(self.configurations):
            row = {
                "method": c.name,
                "method_name": c.method,
                "optimizer": c.optimizer,
                "lr": c.lr,
                "configuration": c.key,
                "runs": len(c.runs),
            }
            values = c.values(self.split)
            for task, metric in self.columns():
                row[f"{self.split}.{task}.{metric}"] = values[task][metric]
            row["val_delta_m"] = _mean(c.val_delta_m)
            row["delta_m"] = _mean(c.test_delta_m)
            row["delta_m_std"] = _std(c.test_delta_m)
            row["pareto"] = bool(self.pareto[i])
            for optimizer, flags in against.items():
                row[f"undominated_by.{optimizer}"] = bool(flags[i])
            rows.append(row)
        return pd.DataFrame(rows)

    def counts(self) -> pd.DataFrame:
        """Per (method display name, optimizer): the configurations, how many are Pareto
        optimal (``PO (full)``, Table A2) and, for each other optimizer, how many no
        configuration of it dominates (``PO w.r.t. <optimizer>``, Table 2; nan for the
        row's own optimizer). Sum a column over the methods for Table 2's totals."""
        frame = self.frame()
        optimizers = self.optimizers()
        names = {c.method: c.name for c in self.configurations}
        rows = {}
        for method in self.methods():
            for optimizer in optimizers:
                own = frame[(frame["method_name"] == method) & (frame["optimizer"] == optimizer)]
                if own.empty:
                    continue
                row = {"configurations": len(own), PO_FULL: int(own["pareto"].sum())}
                for rival in optimizers:
                    column = own[f"undominated_by.{rival}"]
                    row[po_against(rival)] = math.nan if rival == optimizer else int(column.sum())
                rows[(names[method], optimizer)] = row
        counts = pd.DataFrame.from_dict(rows, orient="index")
        counts.index = pd.MultiIndex.from_tuples(counts.index, names=["method", "optimizer"])
        return counts

    def best_configurations(self) -> dict[tuple[str, str], OptimizerConfiguration]:
        """Per (method registry name, optimizer): the configuration of the best mean
        validation Delta_m in the study's convention (highest for "study", lowest for
        "elich"). A configuration with a run without a result is chosen only when all have
        one; ties go to the first configuration key in sorted order."""
        higher = delta_m_higher_is_better(self.convention)
        groups: dict[tuple[str, str], dict[str, OptimizerConfiguration]] = {}
        for c in self.configurations:
            groups.setdefault((c.method, c.optimizer), {})[c.key] = c
        best = {}
        for method in self.methods():
            for optimizer in self.optimizers():
                group = groups.get((method, optimizer))
                if group:
                    scores = {k: ranking_score(c.val_delta_m, higher) for k, c in group.items()}
                    best[(method, optimizer)] = group[best_key(scores)]
        return best

    def best(self) -> pd.DataFrame:
        """Tables A4-A7: one row per (method, optimizer), its best configuration
        (:meth:`best_configurations`): method (display name), method_name, optimizer, lr,
        configuration, runs, the mean test metrics (``test.<task>.<metric>``), the mean test
        Delta_m and its std over seeds (``delta_m``, ``delta_m_std``) and the mean
        validation Delta_m it was chosen by (``val_delta_m``)."""
        rows = []
        for c in self.best_configurations().values():
            row = {
                "method": c.name,
                "method_name": c.method,
                "optimizer": c.optimizer,
                "lr": c.lr,
                "configuration": c.key,
                "runs": len(c.runs),
            }
            for task, metric in self.columns():
                row[f"test.{task}.{metric}"] = c.test[task][metric]
            row["delta_m"] = _mean(c.test_delta_m)
            row["delta_m_std"] = _std(c.test_delta_m)
            row["val_delta_m"] = _mean(c.val_delta_m)
            rows.append(row)
        return pd.DataFrame(rows)

    def paired(self, first: str = "adam", second: str = "sgd") -> pd.DataFrame:
        """Fig. A3: per method with a best configuration of both optimizers, the mean test
        Delta_m of each (``delta_m_first``, ``delta_m_second``, with their std over seeds)
        and ``difference`` = first - second (negative: ``first`` better under "elich",
        positive: better under "study"); ``first``/``second`` name the optimizers."""
        for optimizer in (first, second):
            if optimizer not in self.optimizers():
                raise ConfigError(
                    f"no configuration trained with {optimizer!r} to pair; optimizers of the "
                    f"runs: {', '.join(self.optimizers())}"
                )
        best = self.best_configurations()
        rows = []
        for method in self.methods():
            a, b = best.get((method, first)), best.get((method, second))
            if a is None or b is None:
                continue
            rows.append(
                {
                    "method": a.name,
                    "method_name": method,
                    "first": first,
                    "second": second,
                    "delta_m_first": _mean(a.test_delta_m),
                    "std_first": _std(a.test_delta_m),
                    "delta_m_second": _mean(b.test_delta_m),
                    "std_second": _std(b.test_delta_m),
                }
            )
        if not rows:
            raise ConfigError(
                f"no method has configurations trained with both {first} and {second}"
            )
        paired = pd.DataFrame(rows)
        paired["difference"] = paired["delta_m_first"] - paired["delta_m_second"]
        return paired


def _mean(values: Sequence[float]) -> float:
    """The mean; nan if any value is nan (a run without a result)."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()) if array.size and np.isfinite(array).all() else math.nan


def _std(values: Sequence[float]) -> float:
    """The sample std (ddof 1, as the report's statistics); nan below two values."""
    array = np.asarray(values, dtype=float)
    if array.size < 2 or not np.isfinite(array).all():
        return math.nan
    return float(array.std(ddof=1))


def _run_result(record: RunRecord, split: str, metrics) -> Values | None:
    """The run's values of every metric on ``split``, or None (failed, no best epoch, or a
    metric missing or non-finite)."""
    values = run_values(record, split)
    if record.status == "failed" or values is None:
        return None
    try:
        result = {
            task: {m.name: float(values[task][m.name]) for m in ms} for task, ms in metrics.items()
        }
    except KeyError:
        return None
    if not all(math.isfinite(v) for task in result.values() for v in task.values()):
        return None
    return result


def _mean_values(per_run: Sequence[Values | None], metrics) -> Values:
    return {
        task: {
            m.name: (
                math.nan
                if any(v is None for v in per_run)
                else float(np.mean([v[task][m.name] for v in per_run]))
            )
            for m in ms
        }
        for task, ms in metrics.items()
    }


def _configuration(
    key: str,
    runs: list[RunRecord],
    metrics: dict[str, tuple[Metric, ...]],
    reference: Reference,
    convention: str,
) -> OptimizerConfiguration:
    config = runs[0].config
    spec = registry.spec(config["method"])
    per_split = {s: [_run_result(r, s, metrics) for r in runs] for s in SPLITS}
    refs = {"val": reference.val, "test": reference.test}
    delta = {
        s: [
            math.nan if v is None else delta_m(v, refs[s], metrics, convention=convention)
            for v in per_split[s]
        ]
        for s in SPLITS
    }
    return OptimizerConfiguration(
        key=key,
        method=spec.name,
        name=spec.display_name,
        optimizer=str(config.get("optimizer", _DEFAULTS["optimizer"])),
        lr=float(config.get("lr", _DEFAULTS["lr"])),
        runs=runs,
        val=_mean_values(per_split["val"], metrics),
        test=_mean_values(per_split["test"], metrics),
        val_delta_m=delta["val"],
        test_delta_m=delta["test"],
    )


def _check_reference(reference: Reference, problem: str, metrics) -> None:
    if reference.problem != problem:
        raise ConfigError(f"the reference is of {reference.problem!r}, not {problem!r}")
    for split, values in (("val", reference.val), ("test", reference.test)):
        missing = [
            f"{t}/{m.name}"
            for t, ms in metrics.items()
            for m in ms
            if m.name not in values.get(t, {})
        ]
        if missing:
            raise ConfigError(
                f"the single-task reference of {problem!r} lacks the {split} values of "
                f"{', '.join(missing)}: build it from single-task runs of every task"
            )


def warn_other_conventions(configurations: Sequence[OptimizerConfiguration], convention: str):
    """Warns about runs whose best epoch was not chosen by validation Delta_m in
    ``convention`` (Elich et al. stop early on validation Delta_M; a run trained without a
    reference chose by the mean validation loss, one with another convention by that one)."""
    runs = [r for c in configurations for r in c.runs]
    other = [
        r.run_id
        for r in runs
        if not r.config.get("reference")
        or check_convention(r.config.get("delta_m_convention")) != convention
    ]
    if other:
        warnings.warn(
            f"{len(other)} of {len(runs)} run(s) did not choose their best epoch by validation "
            f"Delta_m in the {convention!r} convention (e.g. {other[0]}); their values are "
            "those of the epoch they chose",
            stacklevel=2,
        )


def optimizer_study(
    records: Iterable[RunRecord],
    problem: str,
    tasks: str,
    reference: Reference,
    convention: str = "elich",
    split: str = "test",
) -> OptimizerStudy:
    """The :class:`OptimizerStudy` of the finished multi-task runs of ``problem`` on
    ``tasks`` (every method, optimizer and learning rate), against the single-task
    ``reference``; warns about runs whose best epoch another rule chose."""
    convention = check_convention(convention)
    tasks = "_".join(parse_tasks(tasks))
    metrics = task_metrics(problem, parse_tasks(tasks))
    _check_reference(reference, problem, metrics)
    by_method = method_runs(records, problem, tasks)
    if not by_method:
        raise ConfigError(f"no finished multi-task runs of {problem} on {tasks}")
    configurations = [
        _configuration(key, runs, metrics, reference, convention)
        for method_records in by_method.values()
        for key, runs in group_runs(method_records).items()
    ]
    warn_other_conventions(configurations, convention)
    return OptimizerStudy(problem, tasks, metrics, reference, configurations, convention, split)
