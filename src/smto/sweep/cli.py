"""The sweep commands (``smto sweep run|work|status|check``) and ``smto reproduce``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from smto.errors import ConfigError

if TYPE_CHECKING:
    from smto.sweep.budget import SweepBudget

MAX_LISTED = 8

DATA_HELP = "directory holding the datasets (default: the SMTO_DATA environment variable)"
STORAGE_HELP = (
    "Optuna RDB storage URL, e.g. postgresql://user@host/db for many workers (default: the "
    "SQLite file sweeps.db in the sweep's run root)"
)


def _settings(args: argparse.Namespace):
    from smto.sweep.driver import WorkerSettings

    return WorkerSettings(
        heartbeat=args.heartbeat, grace=args.grace, poll=args.poll, data_dir=args.data_dir,
        vectorize=args.vectorize,
    )  # fmt: skip


def _cmd_run(args: argparse.Namespace) -> int:
    """Exit status 1 when runs failed for good (listed on stderr with their reasons)."""
    from smto.sweep.budget import format_budget, sweep_budget
    from smto.sweep.driver import run_sweeps
    from smto.sweep.pool import run_with_workers
    from smto.sweep.spec import load_sweep

    progress = not args.no_progress
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.workers == 1:
        if args.threads is not None:
            from smto.sweep.threads import use_threads

            use_threads(args.threads)
        queue = run_sweeps(args.files, args.storage, args.root, _settings(args), progress)
    else:
        queue = run_with_workers(
            args.files, args.workers, args.storage, args.root, _settings(args), args.threads,
            progress,
        )  # fmt: skip
    given = {load_sweep(path, args.root).name for path in args.files}
    failed = 0
    for name in queue.names:
        each = queue.studies[name]
        if name in given:
            print(format_budget(sweep_budget(each)))
        failures = each.failures(each.states())
        failed += len(failures)
        if failures:
            print(_format_failures(each.name, failures), file=sys.stderr)
    if failed:
        print(
            f"smto: {failed} run(s) failed for good (reasons above; `smto sweep status "
            f"{' '.join(args.files)}` lists them again)",
            file=sys.stderr,
        )
    return 1 if failed else 0


def _format_failures(name: str, failures: dict[str, str]) -> str:
    """The runs of sweep ``name`` that failed for good and why (the first few)."""
    lines = [f"sweep {name}: {len(failures)} run(s) failed for good:"]
    lines += [f"  {key}: {reason}" for key, reason in list(failures.items())[:MAX_LISTED]]
    if len(failures) > MAX_LISTED:
        lines.append(f"  ... and {len(failures) - MAX_LISTED} more")
    return "\n".join(lines)


def _cmd_work(args: argparse.Namespace) -> int:
    from smto.sweep.driver import work

    ran = work(
        args.storage, args.sweep or (), _settings(args), args.idle_timeout, root=args.root,
        threads=args.threads,
    )  # fmt: skip
    print(f"worker done: ran {ran} trial(s)")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from smto.sweep.budget import format_budget, sweep_budget
    from smto.sweep.driver import sweep_names
    from smto.sweep.spec import load_sweep
    from smto.sweep.storage import default_storage_url, open_storage
    from smto.sweep.study import SweepStudy

    names = list(args.sweep or [])
    url = args.storage
    if args.file:
        sweep = load_sweep(args.file, args.root)
        names = names or [
            *(load_sweep(p, args.root).name for p in sweep.reference_sweeps),
            sweep.name,
        ]
        url = url or default_storage_url(sweep.root)
    if url is None:
        raise ConfigError("give a sweep FILE or --storage URL")
    storage = open_storage(url, create=False)
    available = sweep_names(storage)
    listing = []
    for name in names or available:
        if name not in available:
            listing.append({"name": name, "started": False})
            if not args.json:
                print(f"sweep {name}: not started in this storage\n")
            continue
        study = SweepStudy(storage, name)
        states = study.states()
        budget = sweep_budget(study, states)
        failures = study.failures(states)
        if args.json:
            listing.append({"started": True, **_budget_dict(budget), "failures": failures})
            continue
        print(format_budget(budget))
        if failures:
            print(_format_failures(name, failures))
        print()
    if args.json:
        print(json.dumps(listing, indent=1, default=str))
    return 0


def _budget_dict(budget: SweepBudget) -> dict[str, Any]:
    """A sweep's budget as plain values: per method and in total, with the ETA."""
    methods = {name: dataclasses.asdict(m) for name, m in budget.methods.items()}
    return {
        "name": budget.name,
        "problem": budget.problem,
        "tasks": list(budget.tasks),
        "stage2": budget.stage2,
        "methods": methods,
        "total": dataclasses.asdict(budget.total),
        "eta_seconds": budget.eta_seconds(),
    }


def _cmd_check(args: argparse.Namespace) -> int:
    from smto.sweep.spec import SweepError, load_sweep

    status = 0
    for path in args.files:
        try:
            sweep = load_sweep(path, args.root)
        except (SweepError, FileNotFoundError) as error:
            print(error, file=sys.stderr)
            status = 2
            continue
        print(f"{path}: ok, sweep {sweep.name}: {_stage1(sweep)}, then {sweep.extra} more "
              "seed(s) of each chosen configuration")  # fmt: skip
    return status


def _stage1(sweep) -> str:
    if sweep.tpe is not None:
        searches = len(sweep.methods) * len(sweep.tasks)
        return (
            f"TPE, {searches} search(es) of {sweep.tpe.trials} trials = at most "
            f"{searches * sweep.tpe.trials} runs (pruner: {sweep.tpe.pruner})"
        )
    n = sweep.n_configurations
    return f"{n} configurations x {sweep.runs} seeds = {n * sweep.runs} runs"


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Missing optional packages and unknown sweeps are one-line errors, not tracebacks; Ctrl-C
    leaves the sweep resumable (the interrupted trial goes back to the queue)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except (ImportError, KeyError, RuntimeError) as error:
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            print(f"smto: error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("smto: interrupted; run the same command again to resume", file=sys.stderr)
            return 130

    return run


def _group_size(value: str) -> int:
    """``--vectorize``: a number of runs >= 1, or "auto" (0: sized from the memory)."""
    if value == "auto":
        return 0
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of runs >= 1 or 'auto', got {value!r}")
    return int(value)


def _worker_options(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--data-dir", help=DATA_HELP)
    add(
        "--vectorize", type=_group_size, default=1, metavar="S",
        help="train up to S waiting runs that differ only in seed, lr, dropout or weight decay "
        "as one vectorized model (the same numbers as separate runs); 'auto': as many as a "
        "quarter of the memory holds, at most 16 (default 1: one run at a time)",
    )  # fmt: skip
    add(
        "--heartbeat",
        type=int,
        default=60,
        metavar="S",
        help="seconds between a running trial's heartbeats (default %(default)s)",
    )
    add(
        "--grace",
        type=int,
        metavar="S",
        help="a running trial without a heartbeat for S seconds is taken for dead and run "
        "again (default: twice the heartbeat)",
    )
    add(
        "--poll",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between looks at an empty queue (default %(default)s)",
    )


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=_positive, metavar="T",
        help="torch threads per worker (default: the cores split evenly between the workers "
        "this command starts; for `work`, torch's default)",
    )  # fmt: skip


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from smto.evaluation.published import published_problem
    from smto.sweep.reproduce import budget, report, reproduce

    problem = published_problem(args.name).problem
    plan = budget(problem, args.quick, args.seeds, args.epochs, args.limits)
    if args.export and not args.report:
        raise ConfigError("--export goes with --report (it exports a table of finished runs)")
    if args.report:
        comparison, written = report(args.name, plan, args.root, args.methods, args.export)
        print(comparison.markdown())
        print("wrote " + ", ".join(str(p) for p in written))
        return 0
    _, written = reproduce(
        args.name, plan, args.root, args.methods, args.workers, args.threads, args.storage,
        _settings(args), not args.no_progress,
    )  # fmt: skip
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    """Adds ``smto reproduce`` to the ``smto`` parser."""
    from smto.evaluation.published import published_problems

    names = list(published_problems())
    parser = sub.add_parser(
        "reproduce",
        help="run the main study's published best configurations and compare with its tables",
        description="Runs every method's published best configuration (Gama & Grassi 2025, "
        "Appendix A.6) with S seeds and the single-task references, through the sweep "
        "machinery (resumable; any number of local workers), then writes one table "
        "(comparison.md/.json: per method the published value beside our mean, std and 95 %% "
        "interval, a mark where the published value lies outside it, the Spearman correlation "
        "of the method ordering) and its figure, in the run root.",
    )
    parser.add_argument("name", choices=names, metavar="NAME", help=f"one of {', '.join(names)}")
    add = parser.add_argument
    add("--seeds", type=int, metavar="S", help="seeds per method (default 10, quick 2)")
    add("--quick", action="store_true",
        help="fewer seeds and epochs, less data: a check that it runs, NOT comparable")  # fmt: skip
    add("--epochs", type=int, metavar="E", help="epochs per run (default: the study's)")
    add("--limits", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
        help="use only this many images per split (a quick run)")  # fmt: skip
    add("--methods", nargs="+", metavar="METHOD", help="only these methods (default: all)")
    add("--root", help="run root (default runs/reproduce/NAME, or NAME-quick)")
    add("--storage", help=STORAGE_HELP)
    add("--workers", type=int, default=1, metavar="N", help="local worker processes")
    add("--threads", type=int, metavar="T",
        help="torch threads per worker (default: the cores split evenly)")  # fmt: skip
    add("--no-progress", action="store_true", help="no progress bar")
    add("--report", action="store_true",
        help="only write the table from the runs finished so far (starts none): a "
        "reproduction under way or stopped part-way; the table says it is partial")  # fmt: skip
    add("--export", metavar="DIR",
        help="with --report: write the table to DIR beside a copy of the records it was made "
        "from (record.json only) and reproduction.json, whose command makes it again")  # fmt: skip
    _worker_options(parser)
    parser.set_defaults(func=_guarded(_cmd_reproduce))


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds the sweep subcommands to the ``smto`` parser."""
    sweep = sub.add_parser(
        "sweep",
        help="hyperparameter sweeps: the study's grids, resumable, on one machine or many",
        description="Sweeps are TOML files (see sweeps/). Each configuration x seed is one "
        'Optuna trial that one worker runs (or, with sampler = "tpe", each method\'s TPE '
        "search runs its budget of trials); stage 2 gives each method's best configuration "
        "extra seeds.",
    )
    commands = sweep.add_subparsers(dest="sweep_command", required=True)

    run = commands.add_parser(
        "run",
        help="run a sweep to the end: its reference sweeps, stage 1, stage 2",
        description="Plans the sweep (once; a re-run skips what is done), works on it until "
        "both stages are finished, and prints the budget; exits 1 when runs failed for good, "
        "listing them with their reasons. Other machines can join with "
        "`smto sweep work --storage URL --root DIR`.",
    )
    run.add_argument(
        "files", nargs="+", metavar="FILE",
        help="sweep files (TOML), queued together: each after its reference sweeps, the others "
        "at once",
    )  # fmt: skip
    run.add_argument("--storage", help=STORAGE_HELP)
    run.add_argument("--root", help="run root directory (overrides the files' root)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="local worker processes on the same storage (default %(default)s: this process "
        "works; logs of N > 1 in ROOT/workers/)",
    )  # fmt: skip
    _threads_option(run)
    _worker_options(run)
    run.set_defaults(func=_guarded(_cmd_run))

    work = commands.add_parser(
        "work",
        help="work on the sweeps of a shared storage (one worker per GPU or node)",
        description="Claims waiting trials of the named sweeps (default: all sweeps in the "
        "storage) and runs them, until they are finished. Start as many as you like.",
    )
    work.add_argument("--storage", required=True, help="Optuna RDB storage URL")
    work.add_argument("--sweep", action="append", metavar="NAME", help="a sweep name, repeatable")
    work.add_argument(
        "--root",
        help="run root directory, the same filesystem for every worker (default: the directory "
        "of a SQLite storage; required for others)",
    )
    work.add_argument(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="stop after S seconds without a trial to claim (default: wait until finished)",
    )
    _worker_options(work)
    _threads_option(work)
    work.set_defaults(func=_guarded(_cmd_work))

    status = commands.add_parser(
        "status",
        help="progress and budget per method: runs by status, time spent, time per epoch, ETA",
    )
    status.add_argument("file", nargs="?", metavar="FILE", help="a sweep file")
    status.add_argument("--storage", help=STORAGE_HELP)
    status.add_argument("--sweep", action="append", metavar="NAME", help="a sweep name")
    status.add_argument("--root", help="run root directory (overrides the file's root)")
    status.add_argument(
        "--json", action="store_true", help="print the budgets as JSON instead of tables"
    )
    status.set_defaults(func=_guarded(_cmd_status))

    check = commands.add_parser("check", help="validate sweep files without running anything")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.add_argument("--root", help="run root directory (overrides the file's root)")
    check.set_defaults(func=_guarded(_cmd_check))
    _add_reproduce(sub)
