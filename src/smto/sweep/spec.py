"""Sweep definitions: the grid a study tunes over, as a TOML file validated before anything runs.

A sweep file names the problem and tasks, the methods, the fixed run settings, the grid of
shared hyperparameters (any RunConfig field: lr x dropout, lr x weight decay), each method's
own grid and fixed hyperparameters, the seeds of stage 1 (runs per configuration) and stage 2
(extra runs of the best configuration), and where single-task references come from:

    problem = "multi_mnist"
    tasks = "CL_RR"
    methods = ["unit_scal", "cagrad"]
    reference_sweeps = ["multi_mnist-CL.toml", "multi_mnist-RR.toml"]
    [seeds]
    runs = 5
    extra = 5
    [fixed]
    epochs = 100
    [grid]
    lr = [0.001, 0.0025]
    dropout = [0.0, 0.1]
    [method_grids.cagrad]
    alpha = [0.2, 0.5, 0.8]

With ``sampler = "tpe"``, stage 1 is instead a TPE search per method (and task set) over the
same tables, which may then also hold ranges (``lr = { low = 1e-4, high = 1e-2, log = true }``),
bounded by a budget of runs and pruned by Optuna's median pruner:

    sampler = "tpe"
    [tpe]
    trials = 30             # runs per method (the budget)
    seed = 0                # the sampler's seed: the same suggestions on a re-run
    pruner = "median"       # or "none"
    warmup_epochs = 2       # no pruning in the first epochs

Paths to other files (``reference``, ``reference_sweeps``) are relative to the sweep file;
``root`` (where the runs go, default ``runs/sweeps``) is relative to the current directory,
like ``smto train --out``. Every error names its field, and all errors are reported at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from smto import registry
from smto.errors import ConfigError, MissingError, MissingExtraError
from smto.problems import parse_tasks, problem_class
from smto.sweep import space
from smto.sweep.space import Dimension, Range
from smto.train.config import RunConfig

DEFAULT_ROOT = "runs/sweeps"
MANAGED = ("problem", "tasks", "method", "method_params", "seed", "reference")
"""RunConfig fields a sweep sets itself (top-level keys, per-method tables, seeds, reference)."""
TOP_LEVEL = (
    "name",
    "description",
    "problem",
    "tasks",
    "methods",
    "root",
    "reference",
    "reference_sweeps",
    "retries",
    "sampler",
    "tpe",
    "seeds",
    "fixed",
    "grid",
    "method_grids",
    "method_params",
)
SEED_KEYS = ("runs", "extra", "first")
SAMPLERS = ("grid", "tpe")
PRUNERS = ("median", "none")
MAX_LISTED = 8
NOT_IN_NAMES = ("/", "\\", "..", "\0")
"""What a sweep's name may not hold: path separators (an absolute path too) and parent steps."""


class SweepError(ConfigError):
    """An invalid sweep file; ``errors`` holds one message per problem, each naming its field."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        self.source = source
        self.errors = list(errors)
        listing = "\n  - ".join(self.errors)
        super().__init__(f"invalid sweep {source}:\n  - {listing}")


@dataclass(frozen=True)
class Tpe:
    """Stage 1 of a TPE sweep: per method (and task set), an Optuna TPE search of at most
    ``trials`` runs (the budget: completed, diverged and pruned runs), its suggestions drawn
    with ``seed``, the first ``startup_trials`` at random; the median pruner (``pruner =
    "median"``) stops a run whose validation score is below the median of the finished runs
    at the same epoch, not in its first ``warmup_epochs`` epochs and only once
    ``pruner_startup_trials`` runs have finished."""

    trials: int
    seed: int = 0
    startup_trials: int = 10
    pruner: str = "median"
    warmup_epochs: int = 0
    pruner_startup_trials: int = 5


TPE_KEYS = tuple(f.name for f in dataclasses.fields(Tpe))


@dataclass(frozen=True)
class Sweep:
    """A validated sweep. ``tasks`` holds one task set ("CL_RR") or, for a single-task
    reference sweep, several single tasks (each its own grid). Paths are absolute."""

    name: str
    problem: str
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Dimension] = field(default_factory=dict)
    """Lists of values (a grid), or for a TPE sweep also ranges."""
    method_grids: dict[str, dict[str, Dimension]] = field(default_factory=dict)
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: int = 1
    extra: int = 0
    first_seed: int = 0
    retries: int = 2
    """How many times a failed run (an exception, or a worker that died) is tried again."""
    root: str = ""
    """Where this process's runs go (the file's ``root``, or ``--root``); the copy stored with
    a study is shown, never used to run (smto.sweep.study.SweepStudy)."""
    reference: str | None = None
    reference_sweeps: tuple[str, ...] = ()
    description: str = ""
    sampler: str = "grid"
    tpe: Tpe | None = None
    """The TPE search's settings (``sampler = "tpe"`` only)."""

    @property
    def single_task(self) -> bool:
        """Whether every task set of the sweep is a single task (a reference sweep)."""
        return all(len(parse_tasks(t)) == 1 for t in self.tasks)

    @property
    def stage1_seeds(self) -> range:
        """The seeds of stage 1: ``runs`` seeds from ``first_seed`` on."""
        return range(self.first_seed, self.first_seed + self.runs)

    @property
    def stage2_seeds(self) -> range:
        """The seeds of stage 2 (the chosen configuration's ``extra`` runs), after stage 1's."""
        start = self.first_seed + self.runs
        return range(start, start + self.extra)

    @property
    def n_configurations(self) -> float:
        """How many configurations the sweep's space holds (inf with a continuous range)."""
        return len(self.tasks) * sum(space.size(self.space(m)) for m in self.methods)

    def space(self, method: str) -> dict[str, Dimension]:
        """The swept settings of ``method``: shared ones by field name, its own as
        ``method.name`` (the names of a configuration's settings)."""
        own = self.method_grids.get(method, {})
        return {**self.grid, **{f"{method}.{k}": v for k, v in own.items()}}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (what a study stores, and compares on a re-run). A grid sweep's
        has no sampler fields, as before TPE sweeps existed, so that its stored studies
        still match."""
        data = json.loads(json.dumps(dataclasses.asdict(self)))
        if self.sampler == "grid":
            del data["sampler"], data["tpe"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sweep:
        """The sweep of a dict written by :meth:`to_dict`."""
        data = dict(data)
        for name in ("tasks", "methods", "reference_sweeps"):
            data[name] = tuple(data[name])
        data["grid"] = {k: space.from_json(v) for k, v in data["grid"].items()}
        data["method_grids"] = {
            m: {k: space.from_json(v) for k, v in grid.items()}
            for m, grid in data["method_grids"].items()
        }
        if data.get("tpe") is not None:
            data["tpe"] = Tpe(**data["tpe"])
        return cls(**data)


def load_sweep(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> Sweep:
    """Reads and validates the sweep file at ``path``; ``root`` overrides its run root."""
    return _load(Path(path), root, ())


def _load(path: Path, root: str | os.PathLike[str] | None, stack: tuple[Path, ...]) -> Sweep:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(p.name for p in (*stack, path))
        raise SweepError(str(path), [f"reference_sweeps: a cycle of sweeps ({chain})"])
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MissingError(f"no sweep file at {path}") from None
    try:
        data = _toml_loads(text)
    except ValueError as error:
        raise SweepError(str(path), [f"not valid TOML: {error}"]) from None
    return parse_sweep(data, path, root, (*stack, path))


def parse_sweep(
    data: dict[str, Any],
    source: Path,
    root: str | os.PathLike[str] | None = None,
    stack: tuple[Path, ...] = (),
) -> Sweep:
    """Validates the parsed file ``data`` (read from ``source``) into a :class:`Sweep`."""
    check = _Checker(data, source)
    sweep = check.sweep(root, stack)
    if check.errors:
        raise SweepError(str(source), check.errors)
    return sweep


def grid_points(grid: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    """Every combination of a grid, the first key varying slowest ({} for an empty grid)."""
    names = list(grid)
    for values in product(*(grid[n] for n in names)):
        yield dict(zip(names, values))


def points(sweep: Sweep) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(tasks, method, shared grid point, method grid point), in the file's order; ranges of
    a TPE sweep contribute their two ends. (The plan, smto.sweep.plan, is built from these;
    they are here because validation also builds every configuration.)"""
    for tasks in sweep.tasks:
        for method in sweep.methods:
            for shared in grid_points(space.corners(sweep.grid)):
                for own in grid_points(space.corners(sweep.method_grids.get(method, {}))):
                    yield tasks, method, shared, own


def run_config(
    sweep: Sweep,
    tasks: str,
    method: str,
    shared: dict[str, Any],
    own: dict[str, Any],
    reference: dict[str, dict[str, float]] | None,
) -> RunConfig:
    """The run of one grid point (:func:`points`) at the sweep's first seed."""
    params = {**sweep.method_params.get(method, {}), **own}
    return RunConfig(
        problem=sweep.problem,
        tasks=tasks,
        method=method,
        method_params=params,
        seed=sweep.first_seed,
        reference=reference,
        **sweep.fixed,
        **shared,
    )


_TOGETHER = ("scheduler", "step_size", "step_factor")
"""Run fields that are valid only together (the step scheduler's)."""


def _companions(sweep: Sweep, key: str) -> dict[str, Any]:
    """The fields a value of ``key`` is checked with when checked alone: the sweep's settings
    of the fields valid only together with it (its fixed value, else its grid's first)."""
    if key not in _TOGETHER:
        return {}
    found = {}
    for other in _TOGETHER:
        if other == key:
            continue
        if other in sweep.fixed:
            found[other] = sweep.fixed[other]
        elif isinstance(sweep.grid.get(other), list):
            found[other] = sweep.grid[other][0]
    return found


def point_settings(method: str, shared: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """A grid point's swept settings by name: shared fields as is, the method's as
    ``method.name`` (:meth:`Sweep.space`)."""
    return {**shared, **{f"{method}.{k}": v for k, v in own.items()}}


def devices(sweep: Sweep) -> list[str]:
    """The devices the sweep's runs train on: the swept ones, else the fixed one."""
    swept = sweep.grid.get("device")
    if isinstance(swept, list):
        return list(dict.fromkeys(swept))
    return [sweep.fixed.get("device", RunConfig.device)]


def invalid_configurations(sweep: Sweep) -> list[str]:
    """One message per configuration whose RunConfig cannot be built."""
    messages = []
    for tasks, method, shared, own in points(sweep):
        try:
            run_config(sweep, tasks, method, shared, own, None)
        except (ValueError, TypeError) as error:
            where = {"tasks": tasks, "method": method, **point_settings(method, shared, own)}
            messages.append(f"configuration {where}: {error}")
    return messages


def _toml_loads(text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise MissingExtraError(
                "reading sweep files on Python 3.10 needs: pip install tomli"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(str(error)) from None


def _values(where: str, dimension: Dimension) -> Iterator[tuple[str, Any]]:
    """Each value of a dimension with its field (``grid.lr[1]``; a range: its two ends)."""
    if isinstance(dimension, Range):
        yield f"{where}.low", dimension.low
        yield f"{where}.high", dimension.high
    else:
        for i, value in enumerate(dimension):
            yield f"{where}[{i}]", value


def _run_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(RunConfig)}


class _Checker:
    """Collects every error of one sweep file (each naming its field) while building it."""

    def __init__(self, data: dict[str, Any], source: Path) -> None:
        self.data = data
        self.source = source
        self.errors: list[str] = []
        self.sampler = "grid"

    def error(self, message: str) -> None:
        self.errors.append(message)

    def sweep(self, root: str | os.PathLike[str] | None, stack: tuple[Path, ...]) -> Sweep:
        data = self.data
        unknown = sorted(set(data) - set(TOP_LEVEL))
        if unknown:
            self.error(f"unknown key(s) {unknown}; valid keys: {', '.join(TOP_LEVEL)}")
        name = self.sweep_name()
        problem = self.string("problem")
        known_problem = self.problem(problem)
        tasks = self.tasks(problem if known_problem else None)
        methods = self.methods()
        self.sampler = self.sampler_name()
        tpe = self.tpe()
        runs, extra, first = self.seeds()
        retries = self.integer("retries", data.get("retries", 2), minimum=0)
        fixed = self.run_fields("fixed")
        grid = self.grid_table("grid", data.get("grid", {}), self.check_run_field)
        for key in sorted(set(grid) & set(fixed)):
            self.error(f"grid.{key}: also set in [fixed]; give it in one place")
        method_grids = self.method_tables("method_grids", methods, grids=True)
        method_params = self.method_tables("method_params", methods, grids=False)
        for method, params in method_params.items():
            for key in sorted(set(params) & set(method_grids.get(method, {}))):
                self.error(f"method_params.{method}.{key}: also in [method_grids.{method}]")
        sweep = Sweep(
            name=name or self.source.stem,
            problem=problem or "",
            tasks=tasks,
            methods=methods,
            fixed=fixed,
            grid=grid,
            method_grids=method_grids,
            method_params=method_params,
            runs=runs,
            extra=extra,
            first_seed=first,
            retries=retries,
            root=str(Path(root or self.string("root", default=DEFAULT_ROOT) or ".").resolve()),
            reference=self.path("reference"),
            reference_sweeps=tuple(self.reference_sweeps()),
            description=self.description(),
            sampler=self.sampler,
            tpe=tpe,
        )
        if tpe is not None:
            self.budget(sweep, tpe)
        self.references(sweep, root, stack, known_problem)
        if known_problem and tasks and methods:
            self.configurations(sweep)
        return sweep

    # -- scalar fields ------------------------------------------------------------------

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self.data.get(key, default)
        if value is None:
            self.error(f"{key}: missing (a string)")
        elif not isinstance(value, str) or not value:
            self.error(f"{key}: must be a non-empty string, got {value!r}")
            return None
        return value

    def sweep_name(self) -> str | None:
        """The name, which names files under the run root and the storage's studies: a plain
        name, so that nothing is written outside the root."""
        name = self.string("name", default=self.source.stem)
        if name is not None and any(part in name for part in NOT_IN_NAMES):
            self.error(
                f"name: {name!r} must be a plain name (no '/', '\\' or '..'), since it names "
                "files under the run root"
            )
            return None
        return name

    def description(self) -> str:
        value = self.data.get("description", "")
        if not isinstance(value, str):
            self.error(f"description: must be a string, got {value!r}")
            return ""
        return value

    def integer(self, key: str, value: Any, minimum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.error(f"{key}: must be an integer >= {minimum}, got {value!r}")
            return minimum
        return value

    def problem(self, problem: str | None) -> bool:
        if problem is None:
            return False
        try:
            problem_class(problem)
        except ValueError as error:
            self.error(f"problem: {error}")
            return False
        return True

    def tasks(self, problem: str | None) -> tuple[str, ...]:
        value = self.data.get("tasks")
        if isinstance(value, str) and value:
            entries = ["_".join(parse_tasks(value))]
        elif isinstance(value, list) and value and all(isinstance(t, str) and t for t in value):
            entries = list(value)
            multi = [t for t in entries if len(parse_tasks(t)) != 1]
            if multi:
                self.error(
                    f"tasks: a list is a single-task sweep over each task; {multi} are task "
                    'sets (write one task set as a string, e.g. tasks = "CL_RR")'
                )
            if len(set(entries)) != len(entries):
                self.error(f"tasks: listed twice in {entries}")
        else:
            self.error(
                f'tasks: must be a task set like "CL_RR" or a list of single tasks, got {value!r}'
            )
            return ()
        if problem is not None:
            valid = problem_class(problem).all_tasks
            unknown = sorted({t for e in entries for t in parse_tasks(e)} - set(valid))
            if unknown:
                self.error(
                    f"tasks: unknown task(s) {unknown} for problem {problem!r}; valid "
                    f"tasks: {', '.join(valid)}"
                )
        return tuple(entries)

    def methods(self) -> tuple[str, ...]:
        value = self.data.get("methods")
        if not isinstance(value, list) or not value:
            self.error(f"methods: must be a non-empty list of method names, got {value!r}")
            return ()
        names: list[str] = []
        for i, name in enumerate(value):
            if not isinstance(name, str):
                self.error(f"methods[{i}]: must be a method name, got {name!r}")
                continue
            try:
                canonical = registry.spec(name).name
            except ValueError as error:
                self.error(f"methods[{i}]: {error}")
                continue
            if canonical in names:
                self.error(f"methods[{i}]: {name!r} is {canonical!r}, already listed")
            names.append(canonical)
        return tuple(names)

    def seeds(self) -> tuple[int, int, int]:
        table = self.data.get("seeds", {})
        if not isinstance(table, dict):
            self.error(f"seeds: must be a table (runs, extra, first), got {table!r}")
            return 1, 0, 0
        unknown = sorted(set(table) - set(SEED_KEYS))
        if unknown:
            self.error(f"seeds: unknown key(s) {unknown}; valid: {', '.join(SEED_KEYS)}")
        runs = self.integer("seeds.runs", table.get("runs", 1), minimum=1)
        extra = self.integer("seeds.extra", table.get("extra", 0), minimum=0)
        first = self.integer("seeds.first", table.get("first", 0), minimum=0)
        if self.sampler == "tpe" and runs > 1:
            self.error(
                "seeds.runs: a TPE sweep runs each configuration it tries once, at seed "
                "seeds.first; the best configuration's further seeds are seeds.extra"
            )
        return runs, extra, first

    # -- the sampler ----------------------------------------------------------------------

    def sampler_name(self) -> str:
        value = self.data.get("sampler", "grid")
        if value not in SAMPLERS:
            self.error(f"sampler: must be one of {', '.join(SAMPLERS)}, got {value!r}")
            return "grid"
        return str(value)

    def tpe(self) -> Tpe | None:
        table = self.data.get("tpe")
        if self.sampler != "tpe":
            if table is not None:
                self.error('tpe: only for sampler = "tpe" (this sweep is a grid)')
            return None
        if not isinstance(table, dict) or "trials" not in table:
            self.error(
                "tpe.trials: missing; a TPE sweep needs its budget, the runs each method's "
                "search may make: [tpe] trials = N"
            )
            table = table if isinstance(table, dict) else {}
        unknown = sorted(set(table) - set(TPE_KEYS))
        if unknown:
            self.error(f"tpe: unknown key(s) {unknown}; valid: {', '.join(TPE_KEYS)}")
        defaults = Tpe(trials=1)
        values = {
            key: self.integer(f"tpe.{key}", table.get(key, getattr(defaults, key)), minimum)
            for key, minimum in (
                ("trials", 1),
                ("seed", 0),
                ("startup_trials", 0),
                ("warmup_epochs", 0),
                ("pruner_startup_trials", 0),
            )
        }
        pruner = table.get("pruner", defaults.pruner)
        if pruner not in PRUNERS:
            self.error(f"tpe.pruner: must be one of {', '.join(PRUNERS)}, got {pruner!r}")
            pruner = defaults.pruner
        return Tpe(pruner=pruner, **values)

    def budget(self, sweep: Sweep, tpe: Tpe) -> None:
        """A budget beyond a finite space would only repeat configurations."""
        for method in sweep.methods:
            points = space.size(sweep.space(method))
            if tpe.trials > points:
                self.error(
                    f"tpe.trials: {tpe.trials} trials exceed the {points} configuration(s) of "
                    f"{method}'s search space; give at most {points}, widen the space (a "
                    'range), or list every configuration with sampler = "grid"'
                )

    # -- tables -------------------------------------------------------------------------

    def check_run_field(self, table: str, key: str) -> bool:
        if key in MANAGED:
            self.error(
                f"{table}.{key}: set by the sweep itself (problem, tasks, methods, "
                "method_params/method_grids, seeds, reference)"
            )
            return False
        if key not in _run_fields():
            valid = sorted(_run_fields() - set(MANAGED))
            self.error(f"{table}.{key}: not a run setting; valid: {', '.join(valid)}")
            return False
        return True

    def run_fields(self, table: str) -> dict[str, Any]:
        values = self.data.get(table, {})
        if not isinstance(values, dict):
            self.error(f"{table}: must be a table of run settings, got {values!r}")
            return {}
        return {k: v for k, v in values.items() if self.check_run_field(table, k)}

    def grid_table(
        self, table: str, values: Any, check_key: Callable[[str, str], bool]
    ) -> dict[str, Dimension]:
        if not isinstance(values, dict):
            self.error(f"{table}: must be a table of lists of values, got {values!r}")
            return {}
        grid: dict[str, Dimension] = {}
        for key, candidates in values.items():
            if not check_key(table, key):
                continue
            if isinstance(candidates, dict):
                found = self.range(f"{table}.{key}", candidates)
                if found is not None:
                    grid[key] = found
                continue
            if not isinstance(candidates, list) or not candidates:
                self.error(
                    f"{table}.{key}: must be a non-empty list of values, got "
                    f"{candidates!r} (a single value goes in the fixed settings)"
                )
                continue
            texts = [json.dumps(c, sort_keys=True) for c in candidates]
            if len(set(texts)) != len(texts):
                self.error(f"{table}.{key}: repeated values in {candidates}")
                continue
            if self.sampler == "tpe" and not self.choices(f"{table}.{key}", candidates):
                continue
            grid[key] = candidates
        return grid

    def range(self, where: str, table: dict[str, Any]) -> Range | None:
        if self.sampler != "tpe":
            self.error(
                f'{where}: a range needs sampler = "tpe"; a grid sweep lists its values (a list)'
            )
            return None
        found, errors = space.parse_range(where, table)
        for message in errors:
            self.error(message)
        return found

    def choices(self, where: str, candidates: list[Any]) -> bool:
        """TPE chooses among numbers, strings and booleans (Optuna's categorical choices)."""
        ok = True
        for i, value in enumerate(candidates):
            if not isinstance(value, (str, int, float, bool)):
                self.error(
                    f"{where}[{i}]: a TPE choice must be a number, string or boolean, got "
                    f"{value!r} (a grid sweep can list it)"
                )
                ok = False
        return ok

    def method_tables(
        self, table: str, methods: tuple[str, ...], grids: bool
    ) -> dict[str, dict[str, Any]]:
        values = self.data.get(table, {})
        if not isinstance(values, dict):
            self.error(f"{table}: must be a table of per-method tables, got {values!r}")
            return {}
        result: dict[str, dict[str, Any]] = {}
        for name, params in values.items():
            try:
                spec = registry.spec(name)
            except ValueError as error:
                self.error(f"{table}.{name}: {error}")
                continue
            if spec.name not in methods:
                self.error(f"{table}.{name}: {spec.name!r} is not in methods")
                continue
            if not isinstance(params, dict):
                self.error(f"{table}.{name}: must be a table of hyperparameters, got {params!r}")
                continue
            valid = spec.hyperparameters

            def known(prefix: str, key: str, valid: dict[str, Any] = valid, m: str = spec.name):
                if key not in valid:
                    listing = ", ".join(valid) or "none"
                    self.error(f"{prefix}.{key}: unknown hyperparameter of {m}; valid: {listing}")
                    return False
                return True

            prefix = f"{table}.{name}"
            if grids:
                result[spec.name] = self.grid_table(prefix, params, known)
            else:
                result[spec.name] = {k: v for k, v in params.items() if known(prefix, k)}
        return result

    # -- references -----------------------------------------------------------------------

    def path(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.error(f"{key}: must be a path, got {value!r}")
            return None
        return str((self.source.parent / value).resolve())

    def reference_sweeps(self) -> list[str]:
        value = self.data.get("reference_sweeps", [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.error(f"reference_sweeps: must be a list of sweep files, got {value!r}")
            return []
        return [str((self.source.parent / v).resolve()) for v in value]

    def references(
        self,
        sweep: Sweep,
        root: str | os.PathLike[str] | None,
        stack: tuple[Path, ...],
        known_problem: bool,
    ) -> None:
        if sweep.reference and sweep.reference_sweeps:
            self.error("reference: give a reference file or reference_sweeps, not both")
        if sweep.single_task:
            if sweep.reference or sweep.reference_sweeps:
                self.error("reference: a single-task sweep is itself a reference; remove it")
            return
        if sweep.extra > 0 and not (sweep.reference or sweep.reference_sweeps):
            self.error(
                "seeds.extra: stage 2 of a multi-task sweep picks the best configuration by "
                "validation Delta_m, which needs single-task references: set reference (a "
                "JSON file) or reference_sweeps (single-task sweep files)"
            )
        covered: set[str] = set()
        if sweep.reference:
            covered = self.reference_file(sweep)
        for i, path in enumerate(sweep.reference_sweeps):
            where = f"reference_sweeps[{i}] ({Path(path).name})"
            try:
                ref = _load(Path(path), root, stack)
            except FileNotFoundError as error:
                self.error(f"{where}: {error}")
                continue
            except SweepError as error:
                # An unknown problem is reported once, by this sweep.
                same = f"problem: unknown problem {sweep.problem!r}"
                for message in error.errors:
                    if known_problem or not message.startswith(same):
                        self.error(f"{where}: {message}")
                continue
            if not ref.single_task:
                self.error(f"reference_sweeps[{i}]: {path} is not a single-task sweep")
            if ref.problem != sweep.problem:
                self.error(f"reference_sweeps[{i}]: {path} is a sweep of {ref.problem!r}")
            covered.update(ref.tasks)
        if (sweep.reference or sweep.reference_sweeps) and known_problem:
            needed = {t for entry in sweep.tasks for t in parse_tasks(entry)}
            missing = sorted(needed - covered)
            if missing:
                self.error(f"reference: no single-task reference for task(s) {missing}")

    def reference_file(self, sweep: Sweep) -> set[str]:
        from smto.evaluation.reference import Reference

        assert sweep.reference is not None
        try:
            reference = Reference.load(sweep.reference)
        except (FileNotFoundError, ValueError) as error:
            self.error(f"reference: {error}")
            return set()
        if reference.problem != sweep.problem:
            self.error(f"reference: {sweep.reference} is a reference of {reference.problem!r}")
        return set(reference.val)

    # -- values (each alone, then every combination) ------------------------------------

    def configurations(self, sweep: Sweep) -> None:
        """Builds RunConfigs: each value alone (so an error names its field), then every
        configuration of the grid (settings that are only wrong together; for ranges, their
        ends)."""
        tasks = sweep.tasks[0]
        n_tasks = len(parse_tasks(tasks))
        # The plainest method, so that an error here is the field's own.
        base = {"problem": sweep.problem, "tasks": tasks, "method": "unit_scal"}
        for key, value in sweep.fixed.items():
            self.attempt(
                f"fixed.{key} = {value!r}",
                lambda k=key, v=value: RunConfig(**base, **_companions(sweep, k), **{k: v}),
            )
        for key, values in sweep.grid.items():
            for where, value in _values(f"grid.{key}", values):
                self.attempt(
                    f"{where} = {value!r}",
                    lambda k=key, v=value: RunConfig(**base, **_companions(sweep, k), **{k: v}),
                )
        for name, params in sweep.method_params.items():
            for key, value in params.items():
                self.attempt(
                    f"method_params.{name}.{key} = {value!r}",
                    lambda m=name, k=key, v=value: registry.create(m, n_tasks, **{k: v}),
                )
        for name, grid in sweep.method_grids.items():
            for key, values in grid.items():
                for where, value in _values(f"method_grids.{name}.{key}", values):
                    self.attempt(
                        f"{where} = {value!r}",
                        lambda m=name, k=key, v=value: registry.create(m, n_tasks, **{k: v}),
                    )
        if self.errors:
            return
        failures = invalid_configurations(sweep)
        for message in failures[:MAX_LISTED]:
            self.error(message)
        if len(failures) > MAX_LISTED:
            self.error(f"... and {len(failures) - MAX_LISTED} more invalid configurations")

    def attempt(self, where: str, build: Callable[[], Any]) -> None:
        try:
            build()
        except (ValueError, TypeError) as error:
            self.error(f"{where}: {error}")
