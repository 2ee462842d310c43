"""Train several methods under one configuration and tabulate their test results.

Used by ``smto compare`` (e.g. the README's Multi-MNIST CL_RR comparison) and ``smto demo``
(the toy problem). Each method's run is an ordinary run of the training engine, so its
record stays on disk, and an interrupted comparison resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from smto.problems import Problem, create_problem, problem_options
from smto.train import RunConfig, RunRecord, train


def compare(
    methods: Sequence[str],
    base: RunConfig,
    root: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> list[RunRecord]:
    """One run per method, all with ``base``'s settings; the data is loaded once."""
    options = dict(base.problem_options)
    if "data_dir" in problem_options(base.problem):
        options["data_dir"] = data_dir
    problem: Problem = create_problem(base.problem, base.tasks, **options)
    records = []
    for name in methods:
        config = dataclasses.replace(base, method=name)
        if progress:
            print(f"training {name} ...", flush=True)
        records.append(train(config, root, problem=problem, progress=progress))
    return records


def format_comparison(records: Sequence[RunRecord]) -> str:
    """A Markdown table: each method's test metrics at its best epoch, and its mean task
    weights over the run (the mean of the per-epoch means)."""
    import smto

    first = records[0]
    tasks = list(first.history[0]["train_loss"]) if first.history else []
    metric_columns = [(t, m) for t in tasks for m in (first.best_test or {}).get(t, {})]
    header = ["method", "status", "best epoch"]
    header += [f"test {t} {m}" for t, m in metric_columns] + [f"w {t}" for t in tasks]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in records:
        name = smto.spec(record.config["method"]).display_name
        row = [name, record.status, str(record.best_epoch)]
        test = record.best_test or {}
        row += [f"{test.get(t, {}).get(m, float('nan')):.4f}" for t, m in metric_columns]
        n = max(len(record.history), 1)
        row += [f"{sum(e['weights'][t] for e in record.history) / n:.4f}" for t in tasks]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
