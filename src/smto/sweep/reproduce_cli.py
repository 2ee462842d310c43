"""The ``smto reproduce`` command (smto.sweep.reproduce)."""

from __future__ import annotations

import argparse

from smto.sweep.cli import STORAGE_HELP, _guarded, _settings, _worker_options


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from smto.evaluation.published import published_problem
    from smto.sweep.reproduce import budget, reproduce

    problem = published_problem(args.name).problem
    plan = budget(problem, args.quick, args.seeds, args.epochs, args.limits)
    _, written = reproduce(
        args.name, plan, args.root, args.methods, args.workers, args.threads, args.storage,
        _settings(args), not args.no_progress,
    )  # fmt: skip
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def add_command(sub: argparse._SubParsersAction) -> None:
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
    _worker_options(parser)
    parser.set_defaults(func=_guarded(_cmd_reproduce))
