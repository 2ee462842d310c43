"""A benchmark report from a directory of runs: reference, per-method results, the tables
(LaTeX or Markdown, and CSV) and the figures (``smto report``).

The single-task reference is built from the single-task runs found beside the multi-task
runs, with the same problem options (a reference from other data sizes would be
meaningless), unless a saved one is given. Runs whose best epoch was chosen against another
reference are reported with a warning: their best epochs are then not the ones this
reference would pick.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smto import registry
from smto._optional import require
from smto.errors import ConfigError, MissingError
from smto.evaluation.reference import Reference, single_task_reference
from smto.evaluation.results import MethodResult, collect_results, method_runs
from smto.evaluation.selection import finished, record_tasks
from smto.problems import parse_tasks
from smto.report.statistics import summarize
from smto.report.tables import Table, all_tables, pairwise_table
from smto.train.records import RunRecord, find_runs, load_run

pd = require("pandas", "bench", "smto.evaluation.report")

FORMATS = {"latex": ".tex", "markdown": ".md"}


def load_records(runs_dir: str | os.PathLike[str]) -> list[RunRecord]:
    """Every run record under ``runs_dir``; a clear error when there is none."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise MissingError(f"no runs directory {root}")
    records = [load_run(d) for d in find_runs(root)]
    if not records:
        raise ConfigError(f"no run records (record.json) under {root}")
    return records


def problem_options_of(records: Sequence[RunRecord], problem: str, tasks: str) -> dict:
    """The one set of problem options of the multi-task runs of ``problem`` on ``tasks``."""
    runs = [r for runs in method_runs(records, problem, tasks).values() for r in runs]
    if not runs:
        raise ConfigError(f"no finished multi-task runs of {problem} on {tasks}")
    options = {repr(sorted(r.config.get("problem_options", {}).items())) for r in runs}
    if len(options) > 1:
        raise ConfigError(
            f"the runs of {problem} {tasks} use several problem option sets {sorted(options)}: "
            "report them from separate directories"
        )
    return dict(runs[0].config.get("problem_options", {}))


def auto_reference(
    records: Sequence[RunRecord], problem: str, tasks: str, problem_options: dict
) -> Reference:
    """The reference from the single-task runs of each task with these problem options."""
    wanted = parse_tasks(tasks)
    single = [
        r
        for r in finished(records)
        if r.config["problem"] == problem
        and len(record_tasks(r)) == 1
        and record_tasks(r)[0] in wanted
        and dict(r.config.get("problem_options", {})) == problem_options
    ]
    missing = [t for t in wanted if all(record_tasks(r) != [t] for r in single)]
    if missing:
        raise ConfigError(
            f"no finished single-task runs of {problem} task(s) {', '.join(missing)} with "
            f"problem options {problem_options} for the single-task reference: train them "
            f"(smto train --tasks {missing[0]} ...) or give a saved reference (--reference FILE)"
        )
    return single_task_reference(single)


def warn_other_references(results: Sequence[MethodResult], reference: Reference) -> None:
    """Warns about runs whose best epoch was not chosen by validation Delta_m against this
    reference (PROTOCOL.md "Best epoch"): no reference (mean validation loss) or another."""
    runs = [r for result in results for r in result.runs]
    unreferenced = [r.run_id for r in runs if not r.config.get("reference")]
    other = [
        r.run_id
        for r in runs
        if r.config.get("reference") and not _close(r.config["reference"], reference.val)
    ]
    for ids, how in (
        (unreferenced, "by the mean validation loss (trained without --reference)"),
        (other, "against another single-task reference than the one reported"),
    ):
        if ids:
            warnings.warn(
                f"{len(ids)} run(s) chose their best epoch {how}, e.g. {ids[0]}; their test "
                "values are those of that epoch",
                stacklevel=2,
            )


def _close(a: dict, b: dict) -> bool:
    try:
        return all(
            math.isclose(float(a[t][m]), float(b[t][m]), rel_tol=1e-9) for t in b for m in b[t]
        )
    except (KeyError, TypeError, ValueError):
        return False


def per_run_frame(results: Sequence[MethodResult]) -> pd.DataFrame:
    """One row per run: method (display name), registry name, configuration, run id, seed,
    status, test Delta_m (%) and the test metrics (``test.<task>.<metric>``)."""
    rows = []
    for result in results:
        for record, dm in zip(result.runs, result.delta_m):
            row = {
                "method": result.name,
                "method_name": result.method,
                "configuration": result.configuration,
                "run_id": record.run_id,
                "seed": record.config.get("seed", 0),
                "status": record.status,
                "delta_m": dm,
            }
            for task, values in (record.best_test or {}).items():
                row.update({f"test.{task}.{m}": v for m, v in values.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def history_frame(results: Sequence[MethodResult]) -> pd.DataFrame:
    """One row per run and epoch with finite task weights: method, run_id, epoch and
    ``weights.<task>`` (the epoch's mean weights as recorded)."""
    rows = []
    for result in results:
        for record in result.runs:
            for entry in record.history:
                weights = entry.get("weights") or {}
                if not weights or not all(math.isfinite(float(v)) for v in weights.values()):
                    continue
                row = {"method": result.name, "run_id": record.run_id, "epoch": entry["epoch"]}
                row.update({f"weights.{t}": float(v) for t, v in weights.items()})
                rows.append(row)
    return pd.DataFrame(rows)


def probe_frame(results: Sequence[MethodResult]) -> pd.DataFrame:
    """One row per run and probed epoch: method (display name), method_name, run_id, epoch
    and the epoch's probe summary flattened (``probes.inter_task.cosine.mean``, ...; see
    :mod:`smto.train.probes`). Empty when no run was probed."""
    rows = []
    for result in results:
        for record in result.runs:
            for entry in record.history:
                if not entry.get("probes"):
                    continue
                row = {"method": result.name, "method_name": result.method}
                row.update({"run_id": record.run_id, "epoch": entry["epoch"]})
                flat = pd.json_normalize({"probes": entry["probes"]}, sep=".")
                row.update(flat.iloc[0].to_dict())
                rows.append(row)
    return pd.DataFrame(rows)


def summary_frame(results: Sequence[MethodResult]) -> pd.DataFrame:
    """One row per method: method, mean, ci_low, ci_high of test Delta_m (%)."""
    rows = []
    for result in results:
        summary = summarize(result.delta_m)
        rows.append(
            {
                "method": result.name,
                "mean": summary.mean,
                "ci_low": summary.ci_low,
                "ci_high": summary.ci_high,
            }
        )
    return pd.DataFrame(rows)


@dataclass
class Report:
    """What :func:`write_report` made."""

    reference: Reference
    results: list[MethodResult]
    tables: list[Table]
    files: list[Path] = field(default_factory=list)


def write_report(
    runs_dir: str | os.PathLike[str],
    problem: str,
    tasks: str,
    out: str | os.PathLike[str],
    methods: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    reference: Reference | None = None,
    fmt: str = "markdown",
    baseline: str = "unit_scal",
    beta: float = 0.9,
    pairwise: bool = False,
    figures: bool = True,
    convention: str | None = None,
) -> Report:
    """Writes the tables (``<name>.tex|.md`` and ``.csv``), the reference used, the per-run
    results and the figures (PNG and PDF) to ``out``. Configurations are chosen and Delta_m
    reported in ``convention`` (None: the one the runs chose their best epochs by; see
    :func:`smto.evaluation.results.collect_results`)."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    tasks = "_".join(parse_tasks(tasks))
    baseline = registry.spec(baseline).name
    records = load_records(runs_dir)
    options = problem_options_of(records, problem, tasks)
    if reference is None:
        reference = auto_reference(records, problem, tasks, options)
    results = collect_results(
        records, problem, tasks, reference, methods, exclude, baseline, convention
    )
    warn_other_references(results, reference)
    tables = all_tables(results, baseline)
    if pairwise:
        tables.append(pairwise_table(results))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(reference, results, tables)
    reference.save(out / "reference.json")
    report.files.append(out / "reference.json")
    per_run = per_run_frame(results)
    per_run.to_csv(out / "runs.csv", index=False)
    report.files.append(out / "runs.csv")
    for table in tables:
        text = table.latex() if fmt == "latex" else table.markdown()
        path = out / f"{table.name}{FORMATS[fmt]}"
        path.write_text(text)
        table.frame.to_csv(out / f"{table.name}.csv", index_label="method")
        report.files += [path, out / f"{table.name}.csv"]
    if figures:
        report.files += write_figures(results, per_run, out, baseline, beta)
    return report


def write_conflict_figures(results: Sequence[MethodResult], out: Path) -> list[Path]:
    """``conflicts_<method>``: Elich et al.'s Fig. 4 layout for each method whose runs probed
    inter-task and inter-sample pairs (``RunConfig.probes``); nothing for the others."""
    from smto.report import conflict_figures

    files: list[Path] = []
    probes = probe_frame(results)
    if probes.empty:
        return files
    for method, own in probes.groupby("method_name", sort=False):
        if conflict_figures.has_pairs(own):
            name = str(own["method"].iloc[0])
            files += conflict_figures.conflicts_figure(own, out / f"conflicts_{method}", title=name)
    return files


def write_figures(
    results: Sequence[MethodResult],
    per_run: pd.DataFrame,
    out: Path,
    baseline: str = "unit_scal",
    beta: float = 0.9,
) -> list[Path]:
    """The Delta_m box plot and error bars, each probed method's gradient conflicts (Elich
    et al.'s Fig. 4 layout), each method's weights, and for two tasks the
    results-with-weights figure."""
    from smto.report import figures

    base = next((r.name for r in results if r.method == baseline), "")
    files = figures.delta_m_boxplot(per_run, out / "delta_m_boxplot", baseline=base)
    files += figures.delta_m_errorbars(summary_frame(results), out / "delta_m_errorbars")
    files += write_conflict_figures(results, out)
    history = history_frame(results)
    if history.empty:
        return files
    for result in results:
        own = history[history["method"] == result.name]
        if not own.empty:
            files += figures.weights_plot(own, out / f"weights_{result.method}", beta=beta)
    if len(results[0].metrics) == 2:
        files += figures.results_with_weights(
            per_run, history, out / "results_with_weights", baseline=base
        )
    return files
