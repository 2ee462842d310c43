"""``smto reproduce NAME``: the main study's published best configurations (Appendix A.6,
shipped in smto.evaluation.published) run again, with S seeds, beside their single-task
references, and our test results set against the published ones (smto.evaluation.reproduction).

It writes one sweep file per single task and per method under ``<root>/sweeps/`` and runs them
as one queue (smto.sweep.driver.SweepQueue) with any number of local workers, so a rerun
resumes and ``smto sweep status`` shows its progress. A method whose own hyperparameters were
searched, their chosen (bold) value lost in the paper's text, searches them again at the
published lr and dropout as the study did: the first ceil(S/2) seeds for each value, the other
seeds for the value of the best mean validation Delta_m (the study's 5 + 5 at S = 10).

``quick`` runs fewer seeds and epochs on part of the data: a check that everything runs, whose
numbers are said, in the output and the table, not to be comparable. :func:`report` writes the
table from the runs finished so far, without running any: a reproduction under way, or one
stopped part-way.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smto import registry
from smto.errors import ConfigError
from smto.evaluation.published import PublishedProblem, published_problem
from smto.evaluation.reference import single_task_reference
from smto.evaluation.reproduction import QUICK_NOTE, Comparison, compare
from smto.evaluation.reproduction_figure import comparison_figure
from smto.evaluation.results import collect_results, method_runs
from smto.evaluation.selection import finished, record_tasks
from smto.sweep.driver import SweepQueue, WorkerSettings, run_sweeps
from smto.sweep.pool import run_with_workers
from smto.train.records import RunRecord, find_runs, load_run

DEFAULT_SEEDS = 10
"""The study's runs of each best configuration (5 + 5, Section 3.1)."""
QUICK_SEEDS = 2
QUICK_EPOCHS = 2
QUICK_LIMITS = (5000, 1000, 1000)
"""Training, validation and test images of a quick run (the main job's)."""
EXPORTED = "reproduction.json"
"""What an exported reproduction's directory holds beside its table and records."""
STUDY_RUNS: dict[str, dict[str, Any]] = {
    "multi_mnist": {
        "epochs": 100,
        "batch_size": 256,
        "eval_batch_size": 100,
        "scheduler": "exponential",
        "gamma": 0.95,
        "divergence_factor": 100.0,
        "problem_options": {"right_indices": "original"},
    },
}
"""The run settings of the study's protocol per problem (PROTOCOL.md, as in
sweeps/multi_mnist-CL_RR.toml); the problems ``smto reproduce`` can run so far."""
ORIGINAL_CODE: dict[str, dict[str, Any]] = {
    "nash_mtl": {"heads": "weighted"},
    "imtl": {"system": "transposed", "scales_optimizer": "own"},
}
"""Where the study's code differs from smto's defaults (docs/differences.md), as in
sweeps/multi_mnist-CL_RR.toml."""


@dataclass(frozen=True)
class Budget:
    """How much of the study a reproduction runs: seeds per method, epochs, and the
    problem's data limits (None: all the data); ``quick`` marks a budget below the study's."""

    seeds: int
    epochs: int
    limits: tuple[int, int, int] | None
    quick: bool

    @property
    def tag(self) -> str:
        """What tells this budget's sweeps apart in the storage (``s10-e100``)."""
        tag = f"s{self.seeds}-e{self.epochs}"
        return tag + (f"-n{self.limits[0]}" if self.limits else "")


def budget(
    problem: str,
    quick: bool = False,
    seeds: int | None = None,
    epochs: int | None = None,
    limits: Sequence[int] | None = None,
) -> Budget:
    """The budget of a reproduction: the study's, or the quick one, with any override. Fewer
    epochs than the study's, or limited data, make a quick (not comparable) run."""
    full = STUDY_RUNS[problem]["epochs"]
    seeds = seeds if seeds is not None else (QUICK_SEEDS if quick else DEFAULT_SEEDS)
    epochs = epochs if epochs is not None else (QUICK_EPOCHS if quick else full)
    if limits is None and quick:
        limits = QUICK_LIMITS
    chosen = None if limits is None else tuple(limits)
    if chosen is not None and len(chosen) != 3:
        raise ConfigError(f"limits are three numbers (train, val, test), got {list(chosen)}")
    for what, value in (
        ("seeds", seeds),
        ("epochs", epochs),
        *(("limits", v) for v in chosen or ()),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{what} must be whole numbers >= 1, got {value!r}")
    return Budget(seeds, epochs, chosen, quick or epochs < full or chosen is not None)


def default_root(name: str, plan: Budget) -> Path:
    """``runs/reproduce/<name>`` (``-quick`` for a quick run, so the two never mix)."""
    return Path("runs") / "reproduce" / (f"{name}-quick" if plan.quick else name)


def _fixed(problem: str, plan: Budget, settings: dict[str, float]) -> dict[str, Any]:
    fixed = json.loads(json.dumps(STUDY_RUNS[problem]))
    fixed["epochs"] = plan.epochs
    if plan.limits is not None:
        fixed["problem_options"]["limits"] = list(plan.limits)
    return {**fixed, **settings}


def write_sweeps(
    published: PublishedProblem, plan: Budget, root: Path, methods: Sequence[str]
) -> list[Path]:
    """Writes the sweep files of the reproduction under ``root/sweeps``: one per single task
    (the references) and one per method (which names them as its reference sweeps); returns
    the methods' files."""
    directory = root / "sweeps"
    directory.mkdir(parents=True, exist_ok=True)
    problem = published.problem
    references = []
    for task, configuration in published.single_task.items():
        name = f"{published.name}-single_task-{task}-{plan.tag}"
        data = {
            "name": name,
            "description": f"{published.name}: the single-task reference {task} "
            f"({published.configurations_source})",
            "problem": problem,
            "tasks": [task],
            "methods": ["unit_scal"],
            "root": str(root.resolve()),
            "seeds": {"runs": plan.seeds},
            "fixed": _fixed(problem, plan, configuration.settings),
        }
        (directory / f"{name}.toml").write_text(_toml(data))
        references.append(f"{name}.toml")
    files = []
    for method in methods:
        configuration = published.methods[method].configuration
        name = f"{published.name}-{method}-{plan.tag}"
        searched = configuration.searched
        runs, extra = _seed_split(plan, bool(searched))
        data = {
            "name": name,
            "description": f"{published.name}: {registry.spec(method).display_name} at its "
            f"published configuration ({published.configurations_source})",
            "problem": problem,
            "tasks": published.tasks,
            "methods": [method],
            "root": str(root.resolve()),
            "reference_sweeps": references,
            "seeds": {"runs": runs, "extra": extra},
            "fixed": _fixed(problem, plan, configuration.settings),
            "method_params": {method: {**ORIGINAL_CODE.get(method, {}), **configuration.params}},
            "method_grids": {method: searched} if searched else {},
        }
        path = directory / f"{name}.toml"
        path.write_text(_toml(data))
        files.append(path)
    return files


def reproduce(
    name: str,
    plan: Budget | None = None,
    root: str | os.PathLike[str] | None = None,
    methods: Sequence[str] | None = None,
    workers: int = 1,
    threads: int | None = None,
    storage_url: str | None = None,
    settings: WorkerSettings | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> tuple[Comparison, list[Path]]:
    """Runs the reproduction of the study's problem ``name`` (e.g. ``multi_mnist-CL_RR``) to
    the end (resuming what is done), and writes ``comparison.md``, ``comparison.json`` and
    ``comparison.png``/``.pdf`` in its root; returns the comparison and the files written."""
    published = published_problem(name)
    if published.problem not in STUDY_RUNS:
        raise ConfigError(
            f"smto reproduce runs {', '.join(STUDY_RUNS)} so far; {name}'s published numbers "
            "are in the data file (smto.evaluation.published), its run settings are still to "
            "add (STUDY_RUNS in smto/sweep/reproduce.py)"
        )
    plan = plan or budget(published.problem)
    chosen = _methods(published, methods)
    directory = Path(root) if root is not None else default_root(name, plan)
    if plan.quick:
        echo(QUICK_NOTE)
    files = write_sweeps(published, plan, directory, chosen)
    echo(
        f"{len(files)} method sweep(s) and {len(published.single_task)} single-task reference(s)"
        f", {plan.seeds} seed(s), {plan.epochs} epoch(s): {directory / 'sweeps'}"
    )
    if workers > 1:
        queue = run_with_workers(
            files, workers, storage_url, None, settings, threads, progress, echo
        )
    else:
        queue = run_sweeps(files, storage_url, None, settings, progress)
    comparison = _compare(published, queue, chosen, plan)
    written = _write(comparison, directory)
    echo(comparison.markdown())
    return comparison, written


def _methods(published: PublishedProblem, methods: Sequence[str] | None) -> list[str]:
    if not methods:
        return [m for m, entry in published.methods.items() if entry.configuration.complete]
    chosen = []
    for method in methods:
        canonical = registry.spec(method).name
        if canonical not in published.methods:
            raise ConfigError(
                f"{published.name} has no published configuration of {canonical!r}; its "
                f"methods: {', '.join(published.methods)}"
            )
        chosen.append(canonical)
    return chosen


def _compare(
    published: PublishedProblem, queue: SweepQueue, methods: Sequence[str], plan: Budget
) -> Comparison:
    """Our results from the queue's finished sweeps, against the published values."""
    single, multi = [], []
    for study in queue.studies.values():
        records = study.records(study.planned(), study.states())
        (single if study.sweep.single_task else multi).extend(records)
    reference = single_task_reference(single)
    results = collect_results(multi, published.problem, published.tasks, reference, methods)
    return compare(published, results, plan.quick, plan.seeds, _notes(published, methods, plan))


def _notes(published: PublishedProblem, methods: Sequence[str], plan: Budget) -> list[str]:
    notes = [
        f"configurations: {published.configurations_source}; published values: "
        f"{published.values_source}",
        f"{plan.epochs} epoch(s)" + (f", data limits {list(plan.limits)}" if plan.limits else ""),
    ]
    searched = [published.methods[m].display_name for m in methods
                if published.methods[m].configuration.searched]  # fmt: skip
    if searched:
        notes.append(
            "searched again at the published lr and dropout (their chosen values are lost in "
            f"the paper's text): {', '.join(searched)}"
        )
    if not published.has_values():
        notes.append("the paper's text gives no table of values for this problem")
    return notes


def planned_runs(published: PublishedProblem, method: str, plan: Budget) -> int:
    """How many runs the reproduction plans for ``method``: S seeds, or, where its own
    hyperparameters are searched again, ceil(S/2) seeds for each value and the other seeds
    for the chosen one."""
    searched = published.methods[method].configuration.searched
    first, extra = _seed_split(plan, bool(searched))
    return first * math.prod(len(values) for values in searched.values()) + extra


def _seed_split(plan: Budget, searched: bool) -> tuple[int, int]:
    """Stage 1's seeds per configuration and stage 2's extra seeds: all S at once, or, for a
    method whose own hyperparameters are searched again, ceil(S/2) then the rest."""
    first = math.ceil(plan.seeds / 2) if searched else plan.seeds
    return first, plan.seeds - first


def finished_comparison(
    name: str,
    plan: Budget | None = None,
    root: str | os.PathLike[str] | None = None,
    methods: Sequence[str] | None = None,
) -> tuple[Comparison, list[RunRecord]]:
    """The comparison of the reproduction of ``name`` from the runs finished so far under its
    root (none is started, nothing is written), and the records it was made from. Methods
    without a finished run are left out; the last note says, per method, how many of its
    planned runs are in, and that the numbers are partial until all are. Every single-task
    reference needs a finished run."""
    published = published_problem(name)
    plan = plan or budget(published.problem)
    chosen = _methods(published, methods)
    directory = Path(root) if root is not None else default_root(name, plan)
    mine = [r for r in _records(directory) if _of_plan(r, published, plan)]
    single = [r for r in mine if len(record_tasks(r)) == 1]
    missing = [t for t in published.single_task if all(record_tasks(r) != [t] for r in single)]
    if missing:
        raise ConfigError(
            f"no finished single-task run of {', '.join(missing)} under {directory} (with "
            f"{plan.epochs} epochs{_limits_text(plan)}) yet: the table needs every task's "
            f"reference; run `smto reproduce {name}` until they are done"
        )
    by_method = method_runs(mine, published.problem, published.tasks)
    present = [m for m in chosen if m in by_method]
    if not present:
        raise ConfigError(
            f"no finished run of {', '.join(chosen)} under {directory} yet (with "
            f"{plan.epochs} epochs{_limits_text(plan)})"
        )
    reference = single_task_reference(single)
    results = collect_results(mine, published.problem, published.tasks, reference, present)
    done = {m: (len(by_method.get(m, [])), planned_runs(published, m, plan)) for m in chosen}
    done |= {
        f"{t} (single task)": (sum(record_tasks(r) == [t] for r in single), plan.seeds)
        for t in published.single_task
    }
    notes = _notes(published, present, plan)
    if all(n >= planned for n, planned in done.values()):
        notes.append("every planned run has finished")
    else:
        counts = ", ".join(
            f"{published.methods[k].display_name if k in published.methods else k} {n}/{planned}"
            for k, (n, planned) in done.items()
        )
        notes.append(
            f"PARTIAL: not every planned run has finished (finished/planned: {counts}); a "
            "method's configuration is chosen among its finished runs"
        )
    comparison = compare(published, results, plan.quick, plan.seeds, notes)
    return comparison, single + [r for m in present for r in by_method[m]]


def report(
    name: str,
    plan: Budget | None = None,
    root: str | os.PathLike[str] | None = None,
    methods: Sequence[str] | None = None,
    export: str | os.PathLike[str] | None = None,
) -> tuple[Comparison, list[Path]]:
    """Writes the table of :func:`finished_comparison` (as :func:`reproduce` does) in the
    root; returns it and the files written.

    With ``export``, the table goes there instead, beside a copy of the records it was made
    from (``<run id>/record.json``, without checkpoints or models) and ``reproduction.json``
    (the name, budget and methods, and the command that makes the table again from the
    copy): a directory to publish."""
    published = published_problem(name)
    plan = plan or budget(published.problem)
    comparison, records = finished_comparison(name, plan, root, methods)
    if export is None:
        return comparison, _write(comparison, Path(root) if root else default_root(name, plan))
    target = Path(export)
    for record in records:
        (target / record.run_id).mkdir(parents=True, exist_ok=True)
        record.save(target / record.run_id)
    chosen = _methods(published, methods)
    command = (
        f"smto reproduce {name} --seeds {plan.seeds} --epochs {plan.epochs}"
        + (f" --limits {' '.join(map(str, plan.limits))}" if plan.limits else "")
        + f" --methods {' '.join(chosen)} --report --root {target}"
    )
    description = {"name": name, "seeds": plan.seeds, "epochs": plan.epochs,
                   "limits": list(plan.limits) if plan.limits else None, "methods": chosen,
                   "again": command}  # fmt: skip
    (target / EXPORTED).write_text(json.dumps(description, indent=1) + "\n")
    return comparison, [*_write(comparison, target), target / EXPORTED]


def exported_comparison(directory: str | os.PathLike[str]) -> Comparison:
    """The table of an exported reproduction (:func:`report` with ``export``), made again
    from its records and ``reproduction.json``, writing nothing."""
    path = Path(directory) / EXPORTED
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{directory} is not an exported reproduction: no {EXPORTED}") from None
    problem = published_problem(data["name"]).problem
    limits = data.get("limits")
    plan = budget(problem, seeds=data["seeds"], epochs=data["epochs"], limits=limits)
    return finished_comparison(data["name"], plan, directory, data["methods"])[0]


def _records(directory: Path) -> list[RunRecord]:
    if not directory.is_dir():
        raise ConfigError(f"no reproduction run root {directory}: run `smto reproduce` first")
    return finished(load_run(d) for d in find_runs(directory))


def _of_plan(record: RunRecord, published: PublishedProblem, plan: Budget) -> bool:
    """Whether ``record`` is a run of this reproduction's budget (its problem, epochs and
    data limits)."""
    config = record.config
    limits = config.get("problem_options", {}).get("limits")
    wanted = list(plan.limits) if plan.limits is not None else None
    return (
        config["problem"] == published.problem
        and config["epochs"] == plan.epochs
        and (list(limits) if limits is not None else None) == wanted
    )


def _limits_text(plan: Budget) -> str:
    return f" and data limits {list(plan.limits)}" if plan.limits else ""


def _write(comparison: Comparison, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    table = directory / "comparison.md"
    table.write_text(comparison.markdown())
    data = directory / "comparison.json"
    data.write_text(comparison.to_json())
    return [table, data, *comparison_figure(comparison, directory / "comparison")]


def _toml(data: dict[str, Any]) -> str:
    """A sweep file of ``data``: top-level values first, then its tables (method_grids and
    method_params as tables of tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, value in data.items():
        if not isinstance(value, dict) or not value:
            continue
        nested = key in ("method_grids", "method_params")
        for sub, table in value.items() if nested else [(None, value)]:
            lines += ["", f"[{key}.{sub}]" if sub else f"[{key}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return json.dumps(value)
