"""The gain of one method over another along a sequence of settings (``smto progression``):
the main study's Fig. 3b, IMTL over Unit. Scal. along the Cityscapes complexity progression.

Each step is a runs directory of its own (its multi-task runs of both methods and its
single-task runs), since the steps differ in tasks and problem options. Within a step,
everything is as in ``smto report``: the reference from the single-task runs with the step's
problem options, each method's configuration chosen on validation, its runs' test values.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from smto import registry
from smto._optional import require
from smto.errors import ConfigError, MissingError
from smto.evaluation.report import (
    auto_reference,
    load_records,
    problem_options_of,
    warn_other_references,
)
from smto.evaluation.results import MethodResult, collect_results
from smto.evaluation.selection import finished, record_tasks
from smto.report.statistics import Summary, summarize
from smto.report.tables import precision_round
from smto.train.records import RunRecord

pd = require("pandas", "bench", "smto.evaluation.progression")

DELTA_M = "delta_m"
"""The ``quantity`` of the Delta_m rows (the others are task names)."""
COLUMNS = (
    "step",
    "tasks",
    "quantity",
    "method",
    "baseline",
    "method_mean",
    "baseline_mean",
    "gain",
    "gain_se",
    "n_method",
    "n_baseline",
)


def progression_frame(
    steps: Sequence[tuple[str, str | os.PathLike[str]]],
    problem: str,
    method: str = "imtl",
    baseline: str = "unit_scal",
) -> pd.DataFrame:
    """One row per step (``(label, runs_dir)``, in the order given) and quantity: the step's
    test Delta_m first, then each of its tasks' relative gain.

    A task's relative gain is Delta_m restricted to that task: the mean over its metrics of
    100 s_m (M - M^ST) / M^ST (%). Columns: ``step``, ``tasks`` (the step's task set),
    ``quantity`` ("delta_m" or a task), ``method`` and ``baseline`` (display names),
    ``method_mean`` and ``baseline_mean`` (means over the runs of each chosen configuration,
    %), ``gain`` (method - baseline, percentage points), ``gain_se`` and ``n_method`` /
    ``n_baseline`` (runs with a value).

    ``gain_se`` is the standard error of a difference of two independent means,
    sqrt(s_a^2 / n_a + s_b^2 / n_b) with the sample standard deviations (ddof 1) over seeds,
    nan with fewer than two runs on a side: the two chosen configurations differ in their
    hyperparameters, so runs of one seed are not paired samples, and the error bar should
    be that of the plotted difference rather than of either method alone.

    In each step, the finished multi-task runs of ``method`` and ``baseline`` on ``problem``
    must share one task set and one set of problem options; the step's reference comes from
    its single-task runs with those options (:func:`smto.evaluation.report.auto_reference`).
    """
    if not steps:
        raise ConfigError("a progression needs at least one step (a label and a runs directory)")
    labels = [str(label) for label, _ in steps]
    if not all(label.strip() for label in labels):
        raise ConfigError(f"every step needs a non-empty label; got {labels}")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(f"step labels must be unique; repeated: {', '.join(repeated)}")
    method, baseline = registry.spec(method).name, registry.spec(baseline).name
    if method == baseline:
        raise ConfigError(f"the method and the baseline are both {method}: compare two methods")
    rows = []
    for label, runs_dir in steps:
        try:
            rows += _step_rows(str(label), load_records(runs_dir), problem, method, baseline)
        except (ConfigError, MissingError) as error:
            raise type(error)(f"step {label!r} ({runs_dir}): {error}") from None
    return pd.DataFrame(rows, columns=list(COLUMNS))


def progression_markdown(frame: pd.DataFrame) -> str:
    """The frame of :func:`progression_frame` as a Markdown (pipe) table, with the study's
    rounding; n is the number of runs of the method / of the baseline."""
    method, baseline = frame["method"].iloc[0], frame["baseline"].iloc[0]
    headers = ["Step", "Quantity", method, baseline, "Gain (pp)", "SE", "n"]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join([":---", ":---", *("---:" for _ in headers[2:])]) + "|",
    ]
    for row in frame.itertuples(index=False):
        cells = [
            str(row.step),
            "Δm" if row.quantity == DELTA_M else str(row.quantity),
            *(precision_round(float(v)) for v in (row.method_mean, row.baseline_mean)),
            *(precision_round(float(v)) for v in (row.gain, row.gain_se)),
            f"{row.n_method}/{row.n_baseline}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _step_rows(
    label: str, records: Sequence[RunRecord], problem: str, method: str, baseline: str
) -> list[dict]:
    tasks = task_set(records, problem, (method, baseline))
    pair = [r for r in records if registry.spec(r.config["method"]).name in (method, baseline)]
    options = problem_options_of(pair, problem, tasks)
    reference = auto_reference(records, problem, tasks, options)
    ours, theirs = collect_results(
        records, problem, tasks, reference, [method, baseline], baseline=baseline
    )
    warn_other_references([ours, theirs], reference)
    quantities = {DELTA_M: (ours.delta_m, theirs.delta_m)}
    for task in ours.metrics:
        quantities[task] = (_task_gains(ours, task), _task_gains(theirs, task))
    rows = []
    for quantity, (values, base_values) in quantities.items():
        a, b = summarize(values), summarize(base_values)
        rows.append(
            {
                "step": label,
                "tasks": tasks,
                "quantity": quantity,
                "method": ours.name,
                "baseline": theirs.name,
                "method_mean": a.mean,
                "baseline_mean": b.mean,
                "gain": a.mean - b.mean,
                "gain_se": _difference_se(a, b),
                "n_method": a.n,
                "n_baseline": b.n,
            }
        )
    return rows


def task_set(records: Sequence[RunRecord], problem: str, methods: Sequence[str]) -> str:
    """The one task set of the finished multi-task runs of ``methods`` on ``problem``."""
    found: dict[str, set[str]] = {m: set() for m in methods}
    for record in finished(records):
        tasks = record_tasks(record)
        if record.config["problem"] != problem or len(tasks) < 2:
            continue
        name = registry.spec(record.config["method"]).name
        if name in found:
            found[name].add("_".join(tasks))
    missing = [m for m, task_sets in found.items() if not task_sets]
    if missing:
        raise ConfigError(f"no finished multi-task runs of {' or '.join(missing)} on {problem}")
    task_sets = sorted(set().union(*found.values()))
    if len(task_sets) > 1:
        raise ConfigError(
            f"the runs of {' and '.join(methods)} on {problem} use several task sets "
            f"({', '.join(task_sets)}): one task set per step"
        )
    return task_sets[0]


def _task_gains(result: MethodResult, task: str) -> list[float]:
    """Per run, the mean over ``task``'s metrics of their relative gains (%)."""
    names = [m.name for m in result.metrics[task]]
    return [sum(g[task][n] for n in names) / len(names) for g in result.run_gains()]


def _difference_se(a: Summary, b: Summary) -> float:
    if a.n < 2 or b.n < 2:
        return math.nan
    return math.sqrt(a.std**2 / a.n + b.std**2 / b.n)
