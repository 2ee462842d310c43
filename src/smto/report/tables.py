"""The main study's tables for any problem and method set, plus a statistics table.

1. :func:`relative_gain_table`: the per-metric relative gain (%) of each method and its
   average Delta_m (the study's Tables 3 and 4).
2. :func:`gain_statistics_table`: min, max, median, std (ddof 0, as numpy) and mean of the
   per-metric relative gains (Table 5). The study's code also counts the Delta_m column
   among the gains; here only the metrics count, so "avg" equals Delta_m exactly when every
   task has one metric (MNIST, QM9) and is the plain metric mean otherwise.
3. :func:`metrics_table`: mean test metrics with Delta_m and MR (Tables 1 and 2).
4. :func:`statistics_table` (beyond the study): runs, mean and std of test Delta_m over
   seeds, 95% bootstrap interval, and the t-test against the baseline;
   :func:`pairwise_table`: p-values between any two methods.

Each is a :class:`Table`: a numeric pandas DataFrame (one row per method, by display name)
that renders to LaTeX (booktabs, best value per column bold by the column's direction) and
Markdown, with the study's rounding (:func:`precision_round`).

The tables read each method's results through :class:`MethodResults` (what
``smto.evaluation.results.MethodResult`` provides), so this module needs nothing of
evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from smto._optional import require
from smto.errors import ConfigError
from smto.problems.base import Metric
from smto.problems.delta_m import check_convention, delta_m_higher_is_better, delta_m_label
from smto.report.rank import mean_rank
from smto.report.statistics import CONFIDENCE, N_RESAMPLES, compare, summarize

pd = require("pandas", "bench", "smto.report")

Values = Mapping[str, Mapping[str, float]]


class MethodResults(Protocol):
    """One method's results as the tables read them (smto.evaluation.MethodResult is one)."""

    @property
    def method(self) -> str:
        """The registry name (e.g. "nash_mtl")."""
        ...

    @property
    def name(self) -> str:
        """The display name: the table's row label."""
        ...

    @property
    def metrics(self) -> Mapping[str, tuple[Metric, ...]]:
        """The metrics of each task, in the tables' column order."""
        ...

    @property
    def delta_m(self) -> Sequence[float]:
        """Test Delta_m (%) of each run (nan for a run without a result)."""
        ...

    @property
    def convention(self) -> str:
        """The Delta_m convention of ``delta_m`` ("study" or "elich",
        :mod:`smto.problems.delta_m`)."""
        ...

    @property
    def seeds(self) -> Sequence[int]:
        """The seed of each run, in the order of ``delta_m``."""
        ...

    def mean_gains(self) -> Values:
        """The per-metric relative gains (%) averaged over the runs."""
        ...

    def mean_test(self) -> Values:
        """The test metrics averaged over the runs."""
        ...

    def mean_delta_m(self) -> float:
        """The mean test Delta_m (%) over the runs with a value."""
        ...


DELTA_M = "Δm (%)"
MISSING = "–"


def delta_m_column(convention: str = "study") -> str:
    """The column label of a Delta_m in ``convention``: "Δm (%)" or "ΔM (Elich) (%)"."""
    return f"{delta_m_label(convention)} (%)"


def results_convention(results: Sequence[MethodResults]) -> str:
    """The one Delta_m convention of ``results`` (a mix is a ConfigError)."""
    found = sorted({check_convention(r.convention) for r in results})
    if len(found) > 1:
        raise ConfigError(f"results of several Delta_m conventions {found} in one table")
    return found[0] if found else "study"


def precision_round(value: float, total_size: int = 4) -> str:
    """The study's rounding: ``total_size`` digits in all, at least one decimal; values below
    1 in magnitude get ``total_size - 1`` decimals ("-8.952", "-135.7", "0.246", "-8.280")."""
    if not math.isfinite(value):
        return MISSING
    integer_digits = int(max(math.log10(abs(value)), 0)) + 1 if value != 0 else 1
    decimals = max(total_size - integer_digits, 1)
    return f"{round(value, decimals):.{decimals}f}"


def _p_value(value: float) -> str:
    return MISSING if not math.isfinite(value) else f"{value:.3g}"


def _integer(value: float) -> str:
    return MISSING if not math.isfinite(value) else str(int(value))


Formatter = Callable[[float], str]


@dataclass
class Table:
    """A numeric table (index: methods) with each column's direction and number format."""

    name: str
    """A file stem, e.g. "relative_gains"."""
    caption: str
    frame: pd.DataFrame
    higher_is_better: dict[str, bool | None] = field(default_factory=dict)
    """Per column: True/False (the best is bold, the header gets an arrow) or None."""
    formats: dict[str, Formatter] = field(default_factory=dict)
    """Per column number format; default :func:`precision_round` with 4 digits."""

    def cells(self) -> list[list[str]]:
        """The formatted cells, row by row."""
        columns = [self._column(c) for c in self.frame.columns]
        return [list(row) for row in zip(*columns)] if columns else [[] for _ in self.frame.index]

    def best(self) -> dict[str, str]:
        """The formatted best value of each column with a direction."""
        result = {}
        for column in self.frame.columns:
            direction = self.higher_is_better.get(column)
            if direction is None:
                continue
            values = [float(v) for v in self.frame[column] if math.isfinite(float(v))]
            if not values:
                continue
            result[column] = self._format(column, max(values) if direction else min(values))
        return result

    def latex(self) -> str:
        """A LaTeX table (booktabs; best value per column in bold)."""
        headers = ["Method", *(self._header(c, latex=True) for c in self.frame.columns)]
        lines = [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{_latex_escape(self.caption)}}}",
            rf"\begin{{tabular}}{{l{'r' * len(self.frame.columns)}}}",
            r"\toprule",
            " & ".join(headers) + r" \\",
            r"\midrule",
        ]
        for method, row in zip(self.frame.index, self._marked(r"\textbf{{{}}}")):
            lines.append(" & ".join([_latex_escape(str(method)), *row]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def markdown(self) -> str:
        """A Markdown (pipe) table; best value per column in bold."""
        headers = ["Method", *(self._header(c, latex=False) for c in self.frame.columns)]
        lines = [
            "| " + " | ".join(headers) + " |",
            "|" + "|".join([":---", *("---:" for _ in self.frame.columns)]) + "|",
        ]
        for method, row in zip(self.frame.index, self._marked("**{}**")):
            lines.append("| " + " | ".join([str(method), *row]) + " |")
        return "\n".join(lines) + "\n"

    def _column(self, column: str) -> list[str]:
        return [self._format(column, v) for v in self.frame[column]]

    def _format(self, column: str, value) -> str:
        return self.formats.get(column, precision_round)(value)

    def _marked(self, bold: str) -> list[list[str]]:
        best = self.best()
        rows = self.cells()
        for row in rows:
            for j, column in enumerate(self.frame.columns):
                if column in best and row[j] == best[column]:
                    row[j] = bold.format(row[j])
        return rows

    def _header(self, column: str, latex: bool) -> str:
        direction = self.higher_is_better.get(column)
        text = _latex_escape(column) if latex else column
        if direction is None:
            return text
        if latex:
            return text + (r" $\uparrow$" if direction else r" $\downarrow$")
        return text + (" ↑" if direction else " ↓")


def _latex_escape(text: str) -> str:
    special = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "–": "--",
    }
    escaped = "".join(special.get(ch, ch) for ch in text)
    return escaped.replace("Δm", r"$\Delta_m$").replace("ΔM", r"$\Delta_M$")


def metric_columns(results: Sequence[MethodResults]) -> list[tuple[str, str, str, bool]]:
    """(column label, task, metric, higher is better) of every metric, in task order; the
    label is the task, or "task-metric" where a task has several metrics."""
    metrics = results[0].metrics
    return [
        (task if len(ms) == 1 else f"{task}-{m.name}", task, m.name, m.higher_is_better)
        for task, ms in metrics.items()
        for m in ms
    ]


def _check(results: Sequence[MethodResults]) -> None:
    if not results:
        raise ConfigError("a table needs at least one method's results")


def relative_gain_table(results: Sequence[MethodResults]) -> Table:
    """Per-metric relative gain (%) averaged over runs, and the average Delta_m: the column
    "avg" under the study's convention, "ΔM (Elich) (%)" (lower is better) under Elich's."""
    _check(results)
    convention = results_convention(results)
    average = "avg" if convention == "study" else delta_m_column(convention)
    columns = metric_columns(results)
    rows = {}
    for result in results:
        gains = result.mean_gains()
        row = {label: gains[task][metric] for label, task, metric, _ in columns}
        row[average] = result.mean_delta_m()
        rows[result.name] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    directions: dict[str, bool | None] = dict.fromkeys(frame.columns, True)
    directions[average] = delta_m_higher_is_better(convention)
    return Table(
        "relative_gains",
        "Relative gain (%) of each metric over the single-task reference, and "
        f"{delta_m_label(convention)} ({average})",
        frame,
        directions,
    )


def gain_statistics_table(results: Sequence[MethodResults]) -> Table:
    """min, max, median, std and mean of each method's per-metric relative gains."""
    gains = relative_gain_table(results).frame.iloc[:, :-1]  # the metrics, not the average
    functions = {
        "min": np.min,
        "max": np.max,
        "med": np.median,
        "std": np.std,
        "avg": np.mean,
    }
    values = gains.to_numpy(float)
    frame = pd.DataFrame(
        {name: f(values, axis=1) for name, f in functions.items()}, index=gains.index
    )
    directions = {"min": True, "max": True, "med": True, "std": False, "avg": True}
    return Table(
        "gain_statistics",
        "Statistics of the per-metric relative gains (%)",
        frame,
        directions,
    )


def metrics_table(results: Sequence[MethodResults]) -> Table:
    """Mean test metrics with Delta_m (%) and the mean rank MR."""
    _check(results)
    columns = metric_columns(results)
    convention = results_convention(results)
    delta = delta_m_column(convention)
    means = {r.name: r.mean_test() for r in results}
    ranks = mean_rank(means, results[0].metrics)
    rows = {}
    for result in results:
        row = {label: means[result.name][task][metric] for label, task, metric, _ in columns}
        row[delta] = result.mean_delta_m()
        row["MR"] = ranks[result.name]
        rows[result.name] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    directions: dict[str, bool | None] = {label: hib for label, _, _, hib in columns}
    directions[delta] = delta_m_higher_is_better(convention)
    directions["MR"] = False
    formats = {"MR": lambda v: precision_round(v, 3)}
    caption = f"Mean test metrics, {delta_m_label(convention)} and mean rank"
    return Table("test_metrics", caption, frame, directions, formats)


def statistics_table(results: Sequence[MethodResults], baseline: str | None = "unit_scal") -> Table:
    """Test Delta_m over seeds: runs, mean, std, bootstrap interval and, against
    ``baseline`` (a registry name; skipped where absent), the t-test's kind and p-value."""
    _check(results)
    convention = results_convention(results)
    base = next((r for r in results if r.method == baseline), None)
    rows = {}
    kinds = {}
    for result in results:
        summary = summarize(result.delta_m)
        row = {
            "runs": summary.n,
            "mean": summary.mean,
            "std": summary.std,
            "CI low": summary.ci_low,
            "CI high": summary.ci_high,
        }
        if base is not None:
            test = compare(result.delta_m, base.delta_m, result.seeds, base.seeds)
            row["p"] = math.nan if result is base else test.p_value
            kinds[result.name] = "" if result is base else test.kind
        rows[result.name] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if base is not None:
        frame["test"] = pd.Series(kinds)
    caption = (
        f"Test {delta_m_column(convention)} over seeds: mean, std, {CONFIDENCE:.0%} percentile "
        f"bootstrap interval ({N_RESAMPLES} resamples)"
    )
    if base is not None:
        caption += f", and the two-sided t-test against {base.name} (paired on seeds or Welch)"
    table = Table(
        "statistics",
        caption,
        frame,
        {"mean": delta_m_higher_is_better(convention), "std": False},
        {"runs": _integer, "p": _p_value},
    )
    if base is not None:
        table.formats["test"] = str
    return table


def pairwise_table(results: Sequence[MethodResults]) -> Table:
    """Two-sided p-values of test Delta_m between every two methods (paired on seeds where
    the seeds match, else Welch)."""
    _check(results)
    label = delta_m_label(results_convention(results))
    names = [r.name for r in results]
    frame = pd.DataFrame(np.nan, index=names, columns=names)
    for a in results:
        for b in results:
            if a is not b:
                frame.loc[a.name, b.name] = compare(a.delta_m, b.delta_m, a.seeds, b.seeds).p_value
    return Table(
        "pairwise_tests",
        f"p-values of the two-sided t-test of test {label} between methods",
        frame,
        {},
        dict.fromkeys(names, _p_value),
    )


def all_tables(results: Sequence[MethodResults], baseline: str | None = "unit_scal") -> list[Table]:
    """The study's three tables and the statistics table."""
    return [
        relative_gain_table(results),
        gain_statistics_table(results),
        metrics_table(results),
        statistics_table(results, baseline),
    ]
