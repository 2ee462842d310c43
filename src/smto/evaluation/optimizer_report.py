"""The optimizer study from a directory of runs (``smto optimizer-study``): Elich et al.'s
Pareto counts (Table 2, Table A2), the best configuration per method and optimizer (Tables
A4-A7), the parallel-coordinates figure (Figs. 2, A4) and Adam against SGD per method
(Fig. A3); the analysis is :mod:`smto.evaluation.pareto`.

The problem and task set default to the only ones of the multi-task runs found; the
single-task reference, as in ``smto report``, to the one built from the single-task runs
beside them with the same problem options.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smto.errors import ConfigError
from smto.evaluation.pareto import OPTIMIZER_NAMES, OptimizerStudy, optimizer_study
from smto.evaluation.reference_values import Reference
from smto.evaluation.report import FORMATS, auto_reference, load_records, problem_options_of
from smto.evaluation.selection import finished, record_tasks
from smto.problems import parse_tasks
from smto.problems.delta_m import delta_m_higher_is_better, delta_m_label
from smto.report.pareto_tables import best_table, pareto_counts_table, pareto_totals_table
from smto.report.tables import Table
from smto.train.records import RunRecord


def problem_and_tasks(
    records: Sequence[RunRecord], problem: str | None = None, tasks: str | None = None
) -> tuple[str, str]:
    """The problem and task set of the multi-task runs; where one is not given, the only
    one found (a clear error listing them when there are several)."""
    found = {
        (r.config["problem"], "_".join(record_tasks(r)))
        for r in finished(records)
        if len(record_tasks(r)) > 1 and (problem is None or r.config["problem"] == problem)
    }
    if tasks is not None:
        tasks = "_".join(parse_tasks(tasks))
        found = {(p, t) for p, t in found if t == tasks}
    if not found:
        wanted = " ".join(x for x in (problem, tasks) if x) or "any problem"
        raise ConfigError(f"no finished multi-task runs of {wanted}")
    if len(found) > 1:
        listed = ", ".join(f"{p} {t}" for p, t in sorted(found))
        raise ConfigError(
            f"runs of several problems or task sets ({listed}): give --problem and --tasks"
        )
    return next(iter(found))


@dataclass
class OptimizerReport:
    """What :func:`write_optimizer_study` made."""

    study: OptimizerStudy
    tables: list[Table]
    files: list[Path] = field(default_factory=list)


def optimizer_tables(study: OptimizerStudy) -> list[Table]:
    """Table 2 (totals per optimizer), Table A2 (Pareto optimal per method and optimizer)
    and Tables A4-A7 (the best configuration per method and optimizer)."""
    counts = study.counts()
    return [
        pareto_totals_table(counts, OPTIMIZER_NAMES),
        pareto_counts_table(counts, OPTIMIZER_NAMES),
        best_table(
            study.best(),
            study.metrics,
            study.reference.test,
            delta_m_label(study.convention),
            delta_m_higher_is_better(study.convention),
            OPTIMIZER_NAMES,
        ),
    ]


def write_optimizer_figures(
    study: OptimizerStudy, out: Path, first: str = "adam", second: str = "sgd"
) -> list[Path]:
    """The parallel-coordinates figure of every configuration and, where some method has
    configurations of both ``first`` and ``second``, their paired Delta_m figure."""
    from smto.report.pareto_figures import paired_delta_m_plot, parallel_coordinates

    frame = study.frame()
    frame["optimizer"] = [OPTIMIZER_NAMES.get(o, o) for o in frame["optimizer"]]
    several = any(len(ms) > 1 for ms in study.metrics.values())
    axes = [
        (
            f"{study.split}.{task}.{m.name}",
            f"{task}-{m.name}" if several else task,
            m.higher_is_better,
        )
        for task, ms in study.metrics.items()
        for m in ms
    ]
    title = f"{study.problem} {study.tasks}, {study.split} metrics"
    files = parallel_coordinates(frame, axes, out / "parallel_coordinates", title)
    if _paired_methods(study.best(), first, second):
        paired = study.paired(first, second)
        names = (OPTIMIZER_NAMES.get(first, first), OPTIMIZER_NAMES.get(second, second))
        files += paired_delta_m_plot(
            paired,
            out / f"delta_m_{first}_vs_{second}",
            delta_m_label(study.convention),
            delta_m_higher_is_better(study.convention),
            names,
        )
    return files


def _paired_methods(best, first: str, second: str) -> bool:
    by_method = best.groupby("method_name")["optimizer"].apply(set)
    return any({first, second} <= optimizers for optimizers in by_method)


def write_optimizer_study(
    runs_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    problem: str | None = None,
    tasks: str | None = None,
    reference: Reference | None = None,
    convention: str = "elich",
    split: str = "test",
    fmt: str = "markdown",
    first: str = "adam",
    second: str = "sgd",
    figures: bool = True,
) -> OptimizerReport:
    """Writes the tables (``<name>.tex|.md`` and ``.csv``), ``configurations.csv`` (one row
    per configuration with its Pareto flags), ``paired.csv`` (where some method has both
    optimizers), the reference used and the figures (PNG and PDF) to ``out``."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    records = load_records(runs_dir)
    if problem is None and reference is not None:
        problem = reference.problem
    problem, tasks = problem_and_tasks(records, problem, tasks)
    if reference is None:
        options = problem_options_of(records, problem, tasks)
        reference = auto_reference(records, problem, tasks, options)
    study = optimizer_study(records, problem, tasks, reference, convention, split)
    tables = optimizer_tables(study)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = OptimizerReport(study, tables)
    reference.save(out / "reference.json")
    study.frame().to_csv(out / "configurations.csv", index=False)
    report.files += [out / "reference.json", out / "configurations.csv"]
    best = study.best()
    if _paired_methods(best, first, second):
        study.paired(first, second).to_csv(out / "paired.csv", index=False)
        report.files.append(out / "paired.csv")
    for table in tables:
        path = out / f"{table.name}{FORMATS[fmt]}"
        path.write_text(table.latex() if fmt == "latex" else table.markdown())
        table.frame.to_csv(out / f"{table.name}.csv", index_label="row")
        report.files += [path, out / f"{table.name}.csv"]
    if figures:
        report.files += write_optimizer_figures(study, out, first, second)
    return report
