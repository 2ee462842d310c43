"""The evaluation commands (``smto report``, ``smto progression``, ``smto fixed-weights``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smto.errors import ConfigError


def _reference(args: argparse.Namespace):
    from smto.evaluation.reference import Reference

    return Reference.load(args.reference) if args.reference else None


def _cmd_report(args: argparse.Namespace) -> int:
    from smto.evaluation.report import FORMATS, write_report

    out = args.out or Path(args.runs_dir) / f"report-{args.problem}-{args.tasks}"
    report = write_report(
        args.runs_dir,
        args.problem,
        args.tasks,
        out,
        methods=args.methods,
        exclude=args.exclude or (),
        reference=_reference(args),
        fmt=args.format,
        baseline=args.baseline,
        beta=args.beta,
        pairwise=args.pairwise,
        figures=not args.no_figures,
    )
    failed = {r.name: r.failed_runs for r in report.results if r.failed_runs}
    if args.json:
        tables = [
            {"name": t.name, "caption": t.caption, "rows": t.frame.to_dict(orient="index")}
            for t in report.tables
        ]
        files = [str(f) for f in report.files]
        print(json.dumps({"tables": tables, "failed_runs": failed, "files": files}, indent=1))
        return 0
    for table in report.tables:
        print(f"{table.caption}\n\n{table.markdown()}")
    if failed:
        print(f"failed runs of the chosen configurations, left out: {failed}")
    figures = [p.stem for p in report.files if p.suffix == ".png"]
    print(
        f"wrote {len(report.tables)} tables ({FORMATS[args.format]}, .csv), "
        f"{len(figures)} figures (.png, .pdf) and the reference to {out}"
    )
    if figures:
        print(f"figures: {', '.join(figures)}")
    return 0


def _parse_step(text: str) -> tuple[str, Path]:
    """``LABEL=DIR`` -> (label, directory); a ConfigError for anything else."""
    label, sep, directory = text.partition("=")
    if not sep or not label.strip() or not directory.strip():
        raise ConfigError(f"--step must look like LABEL=RUNS_DIR, got {text!r}")
    if not Path(directory).is_dir():
        raise ConfigError(f"--step {text!r}: no runs directory {directory}")
    return label.strip(), Path(directory)


def _cmd_progression(args: argparse.Namespace) -> int:
    from smto.evaluation.progression import progression_frame, progression_markdown
    from smto.report.figures import progression_plot

    steps = [_parse_step(text) for text in args.step]
    frame = progression_frame(steps, args.problem, args.method, args.baseline)
    out = Path(args.out or Path("runs") / f"report-progression-{args.problem}")
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "progression.csv", index=False)
    files = [out / "progression.csv", *progression_plot(frame, out / "progression")]
    if args.json:
        rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        print(json.dumps({"rows": rows, "files": [str(f) for f in files]}, indent=1))
        return 0
    method, baseline = frame["method"].iloc[0], frame["baseline"].iloc[0]
    print(f"Gain of {method} over {baseline} (test, percentage points; SE over seeds)\n")
    print(progression_markdown(frame))
    print(f"wrote progression.csv and the figure progression (.png, .pdf) to {out}")
    return 0


def _cmd_fixed_weights(args: argparse.Namespace) -> int:
    from smto.evaluation.fixed_weights import (
        chosen_runs,
        extract_fixed_weights,
        fixed_weights_config,
    )
    from smto.evaluation.report import auto_reference, load_records, problem_options_of
    from smto.problems import parse_tasks

    tasks = "_".join(parse_tasks(args.tasks))
    records = load_records(args.runs_dir)
    reference, why = _reference(args), ""
    if reference is None:
        try:
            options = problem_options_of(records, args.problem, tasks)
            reference = auto_reference(records, args.problem, tasks, options)
        except ValueError as error:  # only needed where the method has several configurations
            why = str(error)
    try:
        runs = chosen_runs(records, args.problem, tasks, args.method, reference)
    except ValueError as error:
        raise ConfigError(f"{error}{f' ({why})' if why else ''}") from None
    weights = extract_fixed_weights(runs, beta=args.beta, epochs=args.epochs)
    print(json.dumps(weights.weights, indent=1))
    print(f"from {len(runs)} run(s) of {weights.method}: {', '.join(weights.sources)}")
    print(f"train with: smto train --method fixed --param 'weights={weights.as_list()}' ...")
    if args.save:
        weights.save(args.save)
        print(f"saved to {args.save}")
    if args.train:
        from smto.train import train

        for run in runs:
            config = fixed_weights_config(run.config, weights)
            record = train(config, args.runs_dir, data_dir=args.data_dir, progress=not args.quiet)
            print(f"fixed-weights run {record.run_id}: {record.status}", file=sys.stderr)
    return 0


def _add_selection(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("runs_dir", metavar="RUNS_DIR", help="directory searched for run records (record.json)")
    add("--problem", default="multi_mnist", help="the problem (default %(default)s)")
    add("--tasks", required=True, help="the multi-task set, e.g. CL_RR")
    add(
        "--reference",
        metavar="FILE",
        help="a saved single-task reference (JSON, as `smto report` writes it); default: built "
        "from the single-task runs in RUNS_DIR with the same problem options",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds the evaluation subcommands to the ``smto`` parser."""
    report = sub.add_parser(
        "report",
        help="tables and figures of the runs of a problem (the main study's evaluation)",
        description="For each method, choose the configuration of the best mean validation "
        "Delta_m, and report the test results of all its runs: relative gains, their "
        "statistics, test metrics with Delta_m and mean rank, Delta_m over seeds with bootstrap "
        "intervals and t-tests, and the figures. Prints the tables as Markdown.",
    )
    _add_selection(report)
    methods = report.add_mutually_exclusive_group()
    methods.add_argument("--methods", nargs="+", metavar="M", help="only these, in this order")
    methods.add_argument("--exclude", nargs="+", metavar="M", help="all methods but these")
    report.add_argument(
        "--format",
        choices=("latex", "markdown"),
        default="markdown",
        help="format of the table files (default %(default)s; CSV is always written)",
    )
    report.add_argument(
        "--out", help="output directory (default RUNS_DIR/report-<problem>-<tasks>)"
    )
    report.add_argument(
        "--baseline", default="unit_scal", help="method the tests compare with (%(default)s)"
    )
    report.add_argument(
        "--beta", type=float, default=0.9, help="EMA of the weights figures (%(default)s)"
    )
    report.add_argument(
        "--pairwise", action="store_true", help="also a table of t-tests between all methods"
    )
    report.add_argument("--no-figures", action="store_true", help="tables only")
    report.add_argument(
        "--json",
        action="store_true",
        help="print the tables as JSON (name, caption, rows by method) instead of Markdown",
    )
    report.set_defaults(func=_cmd_report)

    progression = sub.add_parser(
        "progression",
        help="the gain of one method over another along a sequence of settings (Fig. 3b)",
        description="For each step (a label and its own runs directory, e.g. one sweep of "
        "the Cityscapes complexity progression), the report's evaluation of METHOD and "
        "BASELINE: the step's single-task reference, each method's configuration chosen on "
        "validation, and the gain (method - baseline, percentage points) in test Delta_m and "
        "in each task's relative gain, with the standard error of the difference over seeds. "
        "Writes progression.csv and the figure progression.png/.pdf; prints the table.",
    )
    progression.add_argument("--problem", required=True, help="the problem, e.g. cityscapes")
    progression.add_argument(
        "--step",
        action="append",
        required=True,
        metavar="LABEL=RUNS_DIR",
        help="a step and its runs directory; repeat it, in the order of the progression",
    )
    progression.add_argument("--method", default="imtl", help="the method (%(default)s)")
    progression.add_argument(
        "--baseline", default="unit_scal", help="the method it is compared with (%(default)s)"
    )
    progression.add_argument(
        "--out", help="output directory (default runs/report-progression-<problem>)"
    )
    progression.add_argument(
        "--json", action="store_true", help="print the rows and files as JSON instead"
    )
    progression.set_defaults(func=_cmd_progression)

    fixed = sub.add_parser(
        "fixed-weights",
        help="extract fixed task weights (FwLe) from a method's recorded weights",
        description="The chosen configuration's per-epoch mean weights, normalized per epoch, "
        "EMA with BETA (m_0 = w_0, m_t = beta m_(t-1) + (1-beta) w_t), last value renormalized, "
        "averaged over its runs. --train then trains the fixed-weights method with them, with "
        "the same hyperparameters and seeds, into RUNS_DIR.",
    )
    _add_selection(fixed)
    fixed.add_argument("--method", required=True, help="the method whose weights to extract")
    fixed.add_argument("--beta", type=float, default=0.9, help="EMA factor (%(default)s)")
    fixed.add_argument(
        "--epochs",
        choices=("all", "best"),
        default="all",
        help="all epochs (the study) or those up to each run's best epoch (%(default)s)",
    )
    fixed.add_argument("--save", metavar="FILE", help="write the weights as JSON")
    fixed.add_argument("--train", action="store_true", help="train fixed-weights runs with them")
    fixed.add_argument("--data-dir", help="dataset directory for --train (default SMTO_DATA)")
    fixed.add_argument("--quiet", action="store_true", help="no progress bar when training")
    fixed.set_defaults(func=_cmd_fixed_weights)
