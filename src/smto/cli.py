"""The ``smto`` command line: train, compare, list methods and problems, benchmark."""

from __future__ import annotations

import argparse
import ast
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import smto
from smto import registry
from smto._optional import require
from smto.bench.cli import add_commands as bench_commands
from smto.errors import ConfigError, MissingError, SmtoError, Terminated
from smto.evaluation.cli import add_commands as evaluation_commands
from smto.sweep.cli import add_commands as sweep_commands
from smto.toys.cli import add_commands as toy_commands

DATA_HELP = (
    "directory holding the datasets (e.g. mnist/ with the four IDX .gz files); default: the "
    "SMTO_DATA environment variable, else the user cache, downloading what is missing"
)


def _progress(args: argparse.Namespace) -> bool:
    """Whether to show progress bars (not with --quiet or --json); they need tqdm."""
    if getattr(args, "json", False):
        return False
    if not args.quiet:
        require("tqdm.auto", "bench", "the progress bar (--quiet turns it off)")
    return not args.quiet


def _cmd_methods(args: argparse.Namespace) -> int:
    for name in registry.available():
        spec = registry.spec(name)
        method = registry.create(name, 2)
        params = ", ".join(f"{h.name}={h.default!r}" for h in spec.hyperparameters.values())
        print(
            f"{name:<14} {spec.display_name:<14} works on {method.space.value}, "
            f"scale {method.scale.value}"
        )
        print(f"{'':<14} hyperparameters: {params or 'none'}")
    return 0


def _cmd_problems(args: argparse.Namespace) -> int:
    from smto.problems import PROBLEMS, problem_options

    for name, cls in sorted(PROBLEMS.items()):
        options = ", ".join(f"{k}={v!r}" for k, v in problem_options(name).items())
        print(f"{name:<16} tasks: {', '.join(cls.all_tasks)}")
        print(f"{'':<16} options: {options or 'none'}")
    return 0


def _parse_assignments(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    """["alpha=0.5", "weights=(0.1,0.9)"] -> {"alpha": 0.5, "weights": (0.1, 0.9)}.

    A value is a Python literal (number, string, tuple, list, True/False/None); anything
    else is taken as a plain string, except text that starts like a literal (a bracket, a
    quote, a digit or a sign), which is an error saying what form is expected."""
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} must look like NAME=VALUE, got {item!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            if text.strip()[:1] in tuple("([{'\"+-.0123456789"):
                raise ConfigError(
                    f"{what} {item!r}: {text!r} is not a literal value; give a number, a "
                    "quoted string, True/False/None, or a tuple/list of them, e.g. "
                    f"{key.strip()}=(0.3,0.7) (nan and inf are not accepted)"
                ) from None
            value = text
        result[key.strip()] = value
    return result


def _load_reference(path: str) -> Any:
    """The --reference file's validation metrics (a saved Reference or plain JSON)."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"--reference {path} is a directory: name its reference.json")
    try:
        reference = json.loads(file.read_text())
    except FileNotFoundError:
        raise MissingError(f"--reference {path}: no such file") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"--reference {path} is not valid JSON: {error}") from None
    if isinstance(reference, dict) and "val" in reference:  # a saved Reference
        reference = reference["val"]
    return reference


def _config_from_args(args: argparse.Namespace, method: str):
    from smto.train import RunConfig

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {args.out} is a file: name a directory for the run records")
    reference = _load_reference(args.reference) if args.reference else None
    from smto.problems import problem_class

    tasks = args.tasks if args.tasks is not None else problem_class(args.problem).default_tasks()
    problem_options = _parse_assignments(args.problem_option, "--problem-option")
    if args.pretrained is not None:
        if problem_options.get("pretrained", args.pretrained) != args.pretrained:
            raise ConfigError("--pretrained and --problem-option pretrained=... disagree: give one")
        problem_options["pretrained"] = args.pretrained
    return RunConfig(
        problem=args.problem,
        tasks=tasks,
        method=method,
        method_params=_parse_assignments(args.param, "--param"),
        problem_options=problem_options,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        dropout=args.dropout,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        epochs=args.epochs,
        scheduler=args.scheduler,
        gamma=args.gamma,
        plateau_factor=args.plateau_factor,
        plateau_patience=args.plateau_patience,
        min_lr=args.min_lr,
        seed=args.seed,
        device=args.device,
        reference=reference,
        divergence_factor=args.divergence_factor,
        step_size=args.step_size,
        step_factor=args.step_factor,
        delta_m_convention=args.delta_m_convention,
        probes=None if args.probe is None else _parse_assignments(args.probe, "--probe"),
    )


def _print_records(records: Sequence[Any], args: argparse.Namespace, where: str) -> None:
    """The comparison table and where the runs are; with --json, the records as JSON."""
    from smto.compare import format_comparison

    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=1, allow_nan=True))
        return
    print(format_comparison(records))
    print(f"\n{where}")


def _cmd_train(args: argparse.Namespace) -> int:
    from smto.train import run_dir, train

    if args.vectorize and not args.seeds:
        raise ConfigError("--vectorize trains several runs at once: give them with --seeds")
    config = _config_from_args(args, args.method)
    if args.seeds:
        return _train_seeds(args, config)
    record = train(
        config,
        args.out,
        data_dir=args.data_dir,
        progress=_progress(args),
        wait=args.wait,
        rebuild_record=args.rebuild_record,
    )
    _print_records([record], args, f"run {record.status}: {run_dir(config, args.out)}")
    return 0 if record.status == "completed" else 1


def _train_seeds(args: argparse.Namespace, config: Any) -> int:
    """``smto train --seeds ...``: one run per seed, as one vectorized model with
    ``--vectorize`` (smto.train.vectorized), else one after the other."""
    import dataclasses

    from smto.train import train
    from smto.train.vectorized import train_vectorized

    configs = [dataclasses.replace(config, seed=seed) for seed in args.seeds]
    if args.vectorize:
        records = train_vectorized(
            configs, args.out, data_dir=args.data_dir, progress=_progress(args), wait=args.wait
        )
    else:
        records = [
            train(c, args.out, data_dir=args.data_dir, progress=_progress(args), wait=args.wait)
            for c in configs
        ]
    _print_records(records, args, f"runs in {args.out}")
    return 0 if all(r.status == "completed" for r in records) else 1


def _cmd_compare(args: argparse.Namespace) -> int:
    from smto.compare import compare
    from smto.train import FINISHED

    for name in args.methods:
        registry.spec(name)
    base = _config_from_args(args, args.methods[0])
    records = compare(args.methods, base, args.out, args.data_dir, progress=_progress(args))
    _print_records(records, args, f"runs in {args.out}")
    return 0 if all(r.status in FINISHED for r in records) else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from smto.demo import DEFAULT_METHODS, main

    main(args.methods or DEFAULT_METHODS, epochs=args.epochs)
    return 0


def _add_run_options(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    from smto.train import OPTIMIZERS, SCHEDULERS

    add = parser.add_argument
    add(
        "--problem",
        default=defaults.get("problem", "multi_mnist"),
        help="the problem (see `smto problems`; default %(default)s)",
    )
    add(
        "--tasks",
        default=defaults.get("tasks"),
        help="tasks joined by '_', e.g. CL_RR; one task for single-task training "
        "(default: the problem's own, CL_RR for multi_mnist, the study's 11 targets for qm9)",
    )
    add(
        "--param",
        action="append",
        metavar="NAME=VALUE",
        help="a method hyperparameter, repeatable (see `smto methods`), e.g. --param alpha=0.4",
    )
    add(
        "--problem-option",
        action="append",
        metavar="NAME=VALUE",
        help="a problem option, repeatable (see `smto problems`), e.g. "
        "--problem-option right_indices=original or --problem-option limits=(5000,1000,1000)",
    )
    add("--data-dir", help=DATA_HELP)
    add(
        "--pretrained",
        metavar="PATH",
        help="the encoder's ImageNet weights (cityscapes: torchvision's resnet18/resnet50 "
        "weights file, or 'torchvision' to fetch them with torchvision); the problem option "
        "pretrained",
    )
    add("--out", default="runs", help="root directory of the run records (default %(default)s)")
    add("--optimizer", choices=OPTIMIZERS, default="adam", help="default %(default)s")
    add(
        "--lr",
        type=float,
        default=defaults.get("lr", 1e-3),
        help="learning rate (default %(default)s)",
    )
    add("--weight-decay", type=float, default=0.0, help="default %(default)s")
    add("--momentum", type=float, default=0.9, help="for sgd and signsgd (default %(default)s)")
    add("--dropout", type=float, default=0.0, help="dropout p of the model (default %(default)s)")
    add("--batch-size", type=int, default=256, help="training batch (default %(default)s)")
    add(
        "--eval-batch-size",
        type=int,
        default=100,
        help="validation/test batch, also Auto-Lambda's validation batch (default %(default)s)",
    )
    add("--epochs", type=int, default=defaults.get("epochs", 100), help="default %(default)s")
    add(
        "--scheduler",
        choices=SCHEDULERS,
        default="exponential",
        help="per-epoch ExponentialLR, ReduceLROnPlateau on the mean validation loss, step (the "
        "lr times --step-factor every --step-size epochs: StepLR), or none (default %(default)s)",
    )
    add("--gamma", type=float, default=0.95, help="ExponentialLR factor (default %(default)s)")
    add("--plateau-factor", type=float, default=0.7, help="default %(default)s")
    add("--plateau-patience", type=int, default=5, help="default %(default)s")
    add("--min-lr", type=float, default=1e-5, help="ReduceLROnPlateau floor (default %(default)s)")
    add(
        "--step-size",
        type=int,
        metavar="EPOCHS",
        help="the step scheduler: multiply the lr by --step-factor every EPOCHS epochs",
    )
    add(
        "--step-factor",
        type=float,
        metavar="F",
        help="the step scheduler's factor (default 0.5: the lr halved, as Elich et al.)",
    )
    add("--seed", type=int, default=0, help="default %(default)s")
    add(
        "--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default %(default)s)"
    )
    add(
        "--reference",
        metavar="JSON",
        help="the single-task reference (reference.json written by `smto report`, or plain "
        "{task: {metric: value}} validation metrics): select the best epoch by validation "
        "Delta_m (else by the mean validation loss)",
    )
    add(
        "--delta-m-convention",
        choices=("study", "elich"),
        help="the Delta_m of the best epoch with --reference: study (default; higher is "
        "better) or elich (Elich et al.'s flat mean of drops; lower is better)",
    )
    add(
        "--probe",
        nargs="*",
        metavar="NAME=VALUE",
        help="record gradient probes per epoch (smto.train.probes): --probe alone for the "
        "defaults (the main study's cosine every 100 iterations, Elich et al.'s pairs every "
        "5), or settings such as --probe pairs_every=10 cosine_every=None samples=4",
    )
    add(
        "--divergence-factor",
        type=float,
        metavar="F",
        help="end a run as diverged when a task's mean training or validation loss exceeds F "
        "times its first epoch's (default: off)",
    )
    add("--quiet", action="store_true", help="no progress bar")
    add(
        "--json",
        action="store_true",
        help="print the run records as JSON instead of the table (implies --quiet)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smto",
        description="Specialized multi-task optimizers and their benchmark.",
        epilog="Exit status: 0 done; 1 the run did not complete (train: failed or diverged; "
        "compare: a run failed, while a diverged one is a result; sweep run: runs failed); 2 "
        "a usage error (a bad option, a missing or corrupt file, a run directory in use); "
        "130 / 143 interrupted by Ctrl-C / SIGTERM (run the same command again to resume).",
    )
    parser.add_argument("--version", action="version", version=f"smto {smto.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("methods", help="list the methods and their hyperparameters").set_defaults(
        func=_cmd_methods
    )
    sub.add_parser("problems", help="list the problems, tasks and options").set_defaults(
        func=_cmd_problems
    )

    train = sub.add_parser(
        "train",
        help="train one run (resumes it if interrupted)",
        description="Train one run of a method on a problem; the run's record, checkpoint and "
        "best model go to OUT/<run id>. Re-running the same command resumes or returns it.",
    )
    train.add_argument("--method", default="unit_scal", help="see `smto methods`")
    train.add_argument(
        "--wait",
        action="store_true",
        help="if another process trains this run, wait for it instead of stopping",
    )
    train.add_argument(
        "--rebuild-record",
        action="store_true",
        help="rebuild a corrupt record.json from the run's checkpoint (the corrupt file is "
        "kept as record.json.corrupt)",
    )
    train.add_argument(
        "--seeds", type=int, nargs="+", metavar="SEED",
        help="train one run per seed (instead of --seed)",
    )  # fmt: skip
    train.add_argument(
        "--vectorize",
        action="store_true",
        help="with --seeds: train the runs as one vectorized model (the numbers of separate "
        "runs to float rounding; methods that cannot be vectorized run one after the other, "
        "said; on a CPU the LeNet runs no faster than separately, see docs)",
    )
    _add_run_options(train, {})
    train.set_defaults(func=_cmd_train)

    compare = sub.add_parser(
        "compare",
        help="train several methods with the same settings and tabulate test results",
    )
    compare.add_argument("--methods", nargs="+", required=True, help="method names")
    _add_run_options(compare, {})
    compare.set_defaults(func=_cmd_compare)

    demo = sub.add_parser("demo", help="compare a few methods on the toy problem (seconds)")
    demo.add_argument("--methods", nargs="+", help="method names (default: a representative set)")
    demo.add_argument("--epochs", type=int, default=50, help="epochs per method")
    demo.set_defaults(func=_cmd_demo)

    bench_commands(sub)
    evaluation_commands(sub)
    sweep_commands(sub)
    toy_commands(sub)
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise Terminated("stopped by SIGTERM")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. A mistake the user can fix (:class:`smto.errors.SmtoError`) is one
    line on stderr and exit status 2; an interrupt (Ctrl-C, SIGTERM) one line and 130 / 143,
    the run recorded as interrupted; anything else is a bug and keeps its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main_thread else None
    try:
        return args.func(args)
    except SmtoError as error:
        print(f"smto: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        why = stop if isinstance(stop, Terminated) else "interrupted"
        print(f"smto: {why}; run the same command again to resume", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
