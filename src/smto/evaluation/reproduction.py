"""Our results beside the published ones (``smto reproduce``): per method and quantity (each
task's gain, Delta_m; test, %), the published value, our mean, standard deviation and 95 %
confidence interval of the mean over the runs (Student's t), a mark where the published value
lies outside that interval, and the Spearman correlation of the method ordering by published
and by our mean values.

A task's gain of one run is the mean of its metrics' relative gains (equation 1 of the study
before the mean over tasks), so Delta_m is the mean of the task gains, as in Tables 3 and 4.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from smto.evaluation.published import DELTA_M, PublishedProblem
from smto.evaluation.results import MethodResult

LEVEL = 0.95
"""The confidence level of the interval."""
MARK = "*"
"""The mark of a published value outside our interval."""
QUICK_NOTE = (
    "QUICK MODE: fewer seeds and epochs (and maybe less data) than the study; these numbers "
    "are NOT comparable to the published ones."
)


def interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation and the ``level`` confidence interval of the mean
    (mean -+ t_{(1+level)/2, n-1} std / sqrt(n)) of the finite ``values``; nan where there are
    too few (no interval from one run)."""
    from scipy import stats

    finite = [float(v) for v in values if math.isfinite(v)]
    n = len(finite)
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = sum(finite) / n
    if n == 1:
        return mean, math.nan, math.nan, math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
    return mean, std, mean - half, mean + half


@dataclass(frozen=True)
class Row:
    """One method and quantity: the published value (None where the text gives none) beside
    our runs' values."""

    method: str
    name: str
    quantity: str
    published: float | None
    values: list[float]
    mean: float
    std: float
    low: float
    high: float

    @property
    def runs(self) -> int:
        """How many runs gave a finite value."""
        return sum(math.isfinite(v) for v in self.values)

    @property
    def outside(self) -> bool:
        """Whether the published value lies outside our interval (False without either)."""
        if self.published is None or not (math.isfinite(self.low) and math.isfinite(self.high)):
            return False
        return not self.low <= self.published <= self.high


def spearman(published: Sequence[float], ours: Sequence[float]) -> float:
    """Spearman's rank correlation of two orderings of the same methods (nan for fewer than
    three, or a constant one)."""
    from scipy import stats

    pairs = [(p, o) for p, o in zip(published, ours) if math.isfinite(p) and math.isfinite(o)]
    if len(pairs) < 3 or len({p for p, _ in pairs}) < 2 or len({o for _, o in pairs}) < 2:
        return math.nan
    return float(stats.spearmanr([p for p, _ in pairs], [o for _, o in pairs]).statistic)


def run_quantities(result: MethodResult, tasks: Sequence[str]) -> dict[str, list[float]]:
    """Per quantity, each run's value: the task gains (mean over the task's metrics) and
    Delta_m (nan for a run without a best epoch)."""
    per_run = result.run_gains()
    values: dict[str, list[float]] = {}
    for task in tasks:
        values[task] = []
        for gains in per_run:
            metrics = list(gains.get(task, {}).values())
            values[task].append(sum(metrics) / len(metrics) if metrics else math.nan)
    values[DELTA_M] = list(result.delta_m)
    return values


@dataclass
class Comparison:
    """The rows of one problem, its quantities in order, and whether it is a quick run."""

    problem: str
    quantities: list[str]
    rows: list[Row]
    quick: bool = False
    seeds: int = 0
    notes: list[str] = field(default_factory=list)

    def rows_of(self, quantity: str) -> list[Row]:
        """The rows of ``quantity``, in the methods' order."""
        return [r for r in self.rows if r.quantity == quantity]

    def correlation(self, quantity: str = DELTA_M) -> float:
        """Spearman's correlation of the methods ordered by published and by our mean value of
        ``quantity`` (the methods with both)."""
        rows = [r for r in self.rows_of(quantity) if r.published is not None]
        return spearman([r.published for r in rows], [r.mean for r in rows])

    def markdown(self) -> str:
        """One table per quantity (Delta_m first), with the Spearman correlation below each."""
        lines = [f"# {self.problem}: published vs smto ({self.seeds} seed(s) per method)", ""]
        if self.quick:
            lines += [f"**{QUICK_NOTE}**", ""]
        lines += [f"- {note}" for note in self.notes]
        if self.notes:
            lines.append("")
        level = round(100 * LEVEL)
        for quantity in [DELTA_M, *(q for q in self.quantities if q != DELTA_M)]:
            title = "Δm" if quantity == DELTA_M else f"{quantity} gain"
            lines += [
                f"## {title} (test, %)",
                "",
                f"| method | published | ours: mean | std | {level} % interval | runs | |",
                "|---|---:|---:|---:|---|---:|---|",
            ]
            for row in self.rows_of(quantity):
                published = "—" if row.published is None else f"{row.published:.4g}"
                span = f"[{_number(row.low)}, {_number(row.high)}]"
                lines.append(
                    f"| {row.name} | {published} | {_number(row.mean)} | {_number(row.std)} | "
                    f"{span} | {row.runs} | {MARK if row.outside else ''} |"
                )
            rho = self.correlation(quantity)
            shown = f"{rho:.3f}" if math.isfinite(rho) else "n/a (under 3 methods with both values)"
            lines += ["", f"Spearman correlation of the method ordering: {shown}", ""]
        lines.append(
            f"{MARK}: the published value lies outside our {level} % confidence interval of the "
            "mean (Student's t over the runs)."
        )
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        """The comparison as JSON (rows with their per-run values, the correlations)."""
        data = {
            "problem": self.problem,
            "quick": self.quick,
            "seeds": self.seeds,
            "notes": self.notes,
            "rows": [{**asdict(r), "outside": r.outside} for r in self.rows],
            "spearman": {q: self.correlation(q) for q in self.quantities},
        }
        return json.dumps(_finite(data), indent=1)


def compare(
    published: PublishedProblem,
    results: Sequence[MethodResult],
    quick: bool = False,
    seeds: int = 0,
    notes: Sequence[str] = (),
) -> Comparison:
    """The comparison of our ``results`` (one per method) with the ``published`` values."""
    quantities = published.quantities
    rows = []
    for result in results:
        entry = published.methods.get(result.method)
        values = run_quantities(result, published.task_names)
        for quantity in quantities:
            mean, std, low, high = interval(values[quantity])
            value = entry.values.get(quantity) if entry is not None else None
            rows.append(
                Row(result.method, result.name, quantity, value, values[quantity], mean, std,
                    low, high)
            )  # fmt: skip
    return Comparison(published.name, quantities, rows, quick, seeds, list(notes))


def _number(value: float) -> str:
    return "—" if not math.isfinite(value) else f"{value:.4g}"


def _finite(value: object) -> object:
    """``value`` with every non-finite float as None (JSON has no nan)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
