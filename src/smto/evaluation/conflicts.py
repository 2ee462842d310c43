"""Gradient cosine against the gain of the best SMTO, one point per problem (``smto
conflicts``): the main study's Fig. 3a and Fig. 7.

Each problem is a runs directory of its own (its multi-task runs, among them Unit. Scal.'s
with the gradient probe on, and its single-task references), as for ``smto progression``.
Per problem, as in ``smto report``: the reference from its single-task runs, each method's
configuration chosen on validation; then

* ``cosine``: the main study's metric (:mod:`smto.train.probes`), the mean over tasks of
  cos(g_k, mean gradient), averaged over the epochs of the chosen Unit. Scal. runs;
* ``gap``: the best SMTO's mean test Delta_m minus Unit. Scal.'s (percentage points), the
  gain the study finds larger where the cosine is lower.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from smto import registry
from smto._optional import require
from smto.errors import ConfigError
from smto.evaluation.progression import task_set
from smto.evaluation.report import (
    auto_reference,
    load_records,
    problem_options_of,
    warn_other_references,
)
from smto.evaluation.results import MethodResult, collect_results
from smto.problems.delta_m import delta_m_score

pd = require("pandas", "bench", "smto.evaluation.conflicts")

COSINE_KEY = "cosine_to_mean"
"""The per-epoch probe entry of the main study's metric (``history[i]["probes"]``)."""


def mean_cosine(result: MethodResult) -> float:
    """The mean over the chosen runs and their epochs of the probe's cosine to the mean
    gradient; nan where no run probed it."""
    values = [
        float(entry["probes"][COSINE_KEY])
        for run in result.runs
        for entry in run.history
        if isinstance(entry.get("probes"), dict) and entry["probes"].get(COSINE_KEY) is not None
    ]
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan


def cosine_gap_frame(
    problems: Sequence[tuple[str, str | os.PathLike[str]]],
    baseline: str = "unit_scal",
) -> pd.DataFrame:
    """One row per ``(label, runs_dir)``: ``problem`` (the label), ``tasks``, ``cosine``
    (:func:`mean_cosine` of the baseline), ``baseline_delta_m``, ``best`` (the SMTO of the
    best mean test Delta_m), ``best_delta_m`` and ``gap`` (how much better it is than the
    baseline, in percentage points: positive where the SMTO gains, in either convention)."""
    if not problems:
        raise ConfigError("give at least one problem: LABEL=RUNS_DIR")
    baseline = registry.spec(baseline).name
    rows = []
    for label, runs_dir in problems:
        records = load_records(runs_dir)
        problem = _one_problem(records, label)
        multi = [r for r in records if len(r.config["tasks"].split("_")) > 1]
        methods = sorted({registry.spec(r.config["method"]).name for r in multi})
        if baseline not in methods or len(methods) < 2:
            raise ConfigError(
                f"{label}: needs multi-task runs of {baseline} and of at least one SMTO; "
                f"found {methods}"
            )
        tasks = task_set(records, problem, methods)
        options = problem_options_of(multi, problem, tasks)
        reference = auto_reference(records, problem, tasks, options)
        results = collect_results(records, problem, tasks, reference, methods, baseline=baseline)
        warn_other_references(results, reference)
        base = next(r for r in results if r.method == baseline)
        others = [r for r in results if r.method != baseline and math.isfinite(r.mean_delta_m())]
        if not others:
            raise ConfigError(f"{label}: no SMTO has a finite test Delta_m")
        best = max(others, key=_score)
        rows.append(
            {
                "problem": label,
                "tasks": tasks,
                "cosine": mean_cosine(base),
                "baseline_delta_m": base.mean_delta_m(),
                "best": best.name,
                "best_delta_m": best.mean_delta_m(),
                "gap": _score(best) - _score(base),
            }
        )
    return pd.DataFrame(rows)


def _score(result: MethodResult) -> float:
    """The mean test Delta_m signed so that higher is better in the result's convention."""
    return delta_m_score(result.mean_delta_m(), result.convention)


def _one_problem(records, label: str) -> str:
    found = sorted({r.config["problem"] for r in records})
    if len(found) != 1:
        raise ConfigError(f"{label}: the runs directory holds runs of {found}; one problem each")
    return found[0]
