"""The evaluation commands (``smto report``, ``smto progression``, ``smto fixed-weights``,
``smto optimizer-study``, ``smto robustness``, ``smto conflicts``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smto.errors import ConfigError
from smto.problems.delta_m import CONVENTIONS


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
        convention=args.delta_m_convention,
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


def _parse_step(text: str, option: str = "--step") -> tuple[str, Path]:
    """``LABEL=DIR`` -> (label, directory); a ConfigError for anything else."""
    label, sep, directory = text.partition("=")
    if not sep or not label.strip() or not directory.strip():
        raise ConfigError(f"{option} must look like LABEL=RUNS_DIR, got {text!r}")
    if not Path(directory).is_dir():
        raise ConfigError(f"{option} {text!r}: no runs directory {directory}")
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
        extract_fixed_weights,
        fixed_weights_config,
        source_runs,
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
        groups = source_runs(
            records, args.problem, tasks, args.method, reference, args.source, args.source_lr,
            args.delta_m_convention,
        )  # fmt: skip
    except ValueError as error:
        raise ConfigError(f"{error}{f' ({why})' if why else ''}") from None
    sources = {}
    for key, runs in groups.items():
        weights = extract_fixed_weights(runs, beta=args.beta, epochs=args.epochs)
        label = _source_label(runs[0].config, key, groups)
        sources[label] = (weights, runs)
        print(f"{label}: {json.dumps(weights.weights)}" if len(groups) > 1 else
              json.dumps(weights.weights, indent=1))  # fmt: skip
        print(f"from {len(runs)} run(s) of {weights.method}: {', '.join(weights.sources)}")
        print(f"train with: smto train --method fixed --param 'weights={weights.as_list()}' ...")
        if args.save:
            path = Path(args.save)
            if len(groups) > 1:
                path = path.with_name(f"{path.stem}-{key}{path.suffix}")
            weights.save(path)
            print(f"saved to {path}")
    if args.train:
        from smto.train import train

        for weights, runs in sources.values():
            for run in runs:
                config = fixed_weights_config(run.config, weights)
                progress = not args.quiet
                record = train(config, args.runs_dir, data_dir=args.data_dir, progress=progress)
                print(f"fixed-weights run {record.run_id}: {record.status}", file=sys.stderr)
    if args.figure:
        _fixed_weights_figure(args, sources, reference, why)
    return 0


def _source_label(config: dict, key: str, groups: dict) -> str:
    """The label "lr=<lr>" where the sources' learning rates tell them apart, else the key."""
    lrs = [runs[0].config.get("lr") for runs in groups.values()]
    return f"lr={config.get('lr'):g}" if len(set(lrs)) == len(lrs) else key


def _fixed_weights_figure(args: argparse.Namespace, sources: dict, reference, why: str) -> None:
    from smto.evaluation.fixed_weights import fixed_weights_frame
    from smto.evaluation.report import load_records
    from smto.problems.delta_m import delta_m_label
    from smto.report.fixed_weights_figure import fixed_weights_spread

    if reference is None:
        raise ConfigError(f"--figure needs the single-task reference{f' ({why})' if why else ''}")
    frame = fixed_weights_frame(
        load_records(args.runs_dir), sources, reference, args.delta_m_convention
    )
    out = Path(args.figure)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out.with_suffix(".csv"), index=False)
    label = f"test {delta_m_label(args.delta_m_convention)} (%)"
    files = fixed_weights_spread(frame, out, label=label)
    print(f"figure: {', '.join(map(str, files))} (rows: {out.with_suffix('.csv')})")


def _cmd_optimizer_study(args: argparse.Namespace) -> int:
    from smto.evaluation.optimizer_report import write_optimizer_study
    from smto.evaluation.report import FORMATS

    out = args.out or Path(args.runs_dir) / "optimizer-study"
    report = write_optimizer_study(
        args.runs_dir,
        out,
        problem=args.problem,
        tasks=args.tasks,
        reference=_reference(args),
        convention=args.convention,
        split=args.split,
        fmt=args.format,
        first=args.first,
        second=args.second,
        figures=not args.no_figures,
    )
    study = report.study
    if args.json:
        tables = [
            {
                "name": t.name,
                "caption": t.caption,
                "rows": [
                    {"row": label, **row}
                    for label, row in zip(t.frame.index, t.frame.to_dict(orient="records"))
                ],
            }
            for t in report.tables
        ]
        files = [str(f) for f in report.files]
        print(json.dumps({"tables": tables, "files": files}, indent=1, default=str))
        return 0
    print(
        f"{study.problem} {study.tasks}: {len(study.configurations)} configurations, Pareto "
        f"front on {study.split}, Delta_m convention {study.convention}\n"
    )
    for table in report.tables:
        print(f"{table.caption}\n\n{table.markdown()}")
    figures = [p.stem for p in report.files if p.suffix == ".png"]
    print(f"wrote {len(report.tables)} tables ({FORMATS[args.format]}, .csv) to {out}")
    if figures:
        print(f"figures: {', '.join(figures)}")
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
    add(
        "--delta-m-convention",
        choices=CONVENTIONS,
        help="Delta_m of the configuration choice and the tables: study (per-task mean of "
        "gains, higher is better) or elich (Elich et al.'s flat mean of drops, lower is "
        "better); default: the one the runs chose their best epochs by",
    )


def _cmd_robustness(args: argparse.Namespace) -> int:
    from smto.data.corruptions import CORRUPTIONS, GROUPS, SEVERITIES
    from smto.evaluation.robustness import (
        RobustnessSettings,
        chosen_runs,
        robustness_of_runs,
        robustness_tables,
        scores_frame,
    )
    from smto.evaluation.selection import task_metrics
    from smto.train.records import find_runs

    names: list[str] = []
    for item in args.corruptions or ["all"]:
        names += CORRUPTIONS if item == "all" else GROUPS.get(item, (item,))
    settings = RobustnessSettings(
        corruptions=tuple(dict.fromkeys(names)),
        severities=tuple(args.severities or SEVERITIES),
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
    )
    directories = find_runs(args.runs_dir)
    if not directories:
        raise ConfigError(f"no run records (record.json) under {args.runs_dir}")
    directories = chosen_runs(directories, _reference(args))
    results = robustness_of_runs(directories, settings, args.data_dir, args.device)
    if not results:
        raise ConfigError(f"no run under {args.runs_dir} could be evaluated (see the warnings)")
    problems = {r.config["problem"] for r in results}
    if len(problems) != 1:
        raise ConfigError(f"robustness compares runs of one problem, found {sorted(problems)}")
    tasks = list(dict.fromkeys(t for r in results for t in r.tasks))
    metrics = task_metrics(problems.pop(), tasks)
    scores = scores_frame(results, metrics)
    out = Path(args.out or Path(args.runs_dir) / f"robustness-{settings.key()}")
    out.mkdir(parents=True, exist_ok=True)
    scores.to_csv(out / "scores.csv", index=False)
    for table in robustness_tables(scores, metrics):
        table.frame.to_csv(out / f"{table.name}.csv")
        (out / f"{table.name}.md").write_text(table.markdown())
        (out / f"{table.name}.tex").write_text(table.latex())
        print(f"{table.caption}\n\n{table.markdown()}")
    diverged = [r.run_id for r in results if r.status == "diverged"]
    if diverged:
        print(f"diverged while fine-tuning, left out: {diverged}")
    print(f"wrote scores.csv and 3 tables (.csv, .md, .tex) to {out}")
    return 0


def _cmd_conflicts(args: argparse.Namespace) -> int:
    from smto.evaluation.conflicts import cosine_gap_frame
    from smto.report.conflict_figures import cosine_gap_scatter

    problems = [_parse_step(text, "--problem") for text in args.problem]
    frame = cosine_gap_frame(problems, baseline=args.baseline)
    out = Path(args.out or "runs/report-conflicts")
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "cosine_gap.csv", index=False)
    files = [out / "cosine_gap.csv"]
    if frame["cosine"].notna().any():
        files += cosine_gap_scatter(frame, out / "cosine_gap")
    else:
        print("no run probed the cosine (smto train --probe): no figure")
    print(frame.to_string(index=False))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


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
    fixed.add_argument(
        "--source",
        choices=("best", "all"),
        default="best",
        help="extract from the chosen configuration (best) or from each of the method's "
        "grid (all: the study's Fig. 5); default %(default)s",
    )
    fixed.add_argument(
        "--source-lr",
        type=float,
        metavar="LR",
        help="extract from the configuration(s) of this learning rate instead (e.g. a stable "
        "non-optimal one, as the study does on QM9)",
    )
    fixed.add_argument(
        "--figure",
        metavar="OUT",
        help="draw the spread of the fixed-weights runs' test Delta_m per source beside each "
        "source's own (OUT.png, OUT.pdf, and the rows as OUT.csv)",
    )
    fixed.add_argument(
        "--save", metavar="FILE", help="write the weights as JSON (several sources: FILE-KEY)"
    )
    fixed.add_argument("--train", action="store_true", help="train fixed-weights runs with them")
    fixed.add_argument("--data-dir", help="dataset directory for --train (default SMTO_DATA)")
    fixed.add_argument("--quiet", action="store_true", help="no progress bar when training")
    fixed.set_defaults(func=_cmd_fixed_weights)

    study = sub.add_parser(
        "optimizer-study",
        help="Elich et al.'s optimizer study: Pareto counts and the best run per method and "
        "optimizer",
        description="Over the multi-task runs of a sweep (methods x optimizers x learning "
        "rates; a configuration's values are the means over its seeds), the configurations "
        "on the Pareto front of all metrics (PO (full)) and those no configuration of another "
        "optimizer dominates (PO w.r.t. ...), counted per optimizer (Elich et al.'s Table 2) "
        "and per method (Table A2); the best configuration per method and optimizer by mean "
        "validation Delta_m (Tables A4-A7); the parallel-coordinates figure (Figs. 2, A4) and "
        "the best Delta_m of FIRST against SECOND per method (Fig. A3). Prints the tables.",
    )
    add = study.add_argument
    add("runs_dir", metavar="RUNS_DIR", help="directory searched for run records (record.json)")
    add("--problem", help="the problem (default: the reference's, or the only one of the runs)")
    add("--tasks", help="the multi-task set, e.g. CL_RR (default: the only one of the runs)")
    add(
        "--reference",
        metavar="FILE",
        help="a saved single-task reference (JSON, as `smto report` writes it); default: built "
        "from the single-task runs in RUNS_DIR with the same problem options",
    )
    add(
        "--delta-m-convention",
        dest="convention",
        choices=("elich", "study"),
        default="elich",
        help="Delta_m of the choice of the best configuration and of the tables: elich (Elich "
        "et al.'s flat mean of drops, lower is better; the default) or study (the main "
        "study's per-task mean of gains, higher is better)",
    )
    add(
        "--split",
        choices=("test", "val"),
        default="test",
        help="the metrics the Pareto front is taken on (default %(default)s: Elich et al. "
        "report test values at the epoch of best validation Delta_m)",
    )
    add("--first", default="adam", help="the optimizer of Fig. A3's first bars (%(default)s)")
    add("--second", default="sgd", help="the optimizer it is paired with (%(default)s)")
    add(
        "--format",
        choices=("latex", "markdown"),
        default="markdown",
        help="format of the table files (default %(default)s; CSV is always written)",
    )
    add("--out", help="output directory (default RUNS_DIR/optimizer-study)")
    add("--no-figures", action="store_true", help="tables only")
    add("--json", action="store_true", help="print the tables as JSON instead of Markdown")
    study.set_defaults(func=_cmd_optimizer_study)

    robustness = sub.add_parser(
        "robustness",
        help="multi-task vs single-task features on corrupted images (Elich et al., App. A6)",
        description="For each completed run under RUNS_DIR (multi-task and single-task runs "
        "of one image problem: point it at the chosen configurations' runs): freeze the "
        "backbone of its best model, fine-tune the heads on randomly corrupted training "
        "images, evaluate on the test set under every corruption and severity, and score "
        "with Elich et al.'s Eq. 26 (s (r_MTL - r_STL), positive where the multi-task "
        "features lost less). Results are kept in each run directory, so it resumes.",
    )
    robustness.add_argument("runs_dir", metavar="RUNS_DIR")
    robustness.add_argument(
        "--corruptions",
        nargs="+",
        metavar="C",
        help="corruption names or groups (noise, blur, weather, digital, extra, all); "
        "default all = ImageNet-C's 15",
    )
    robustness.add_argument(
        "--severities", nargs="+", type=int, metavar="S", help="default 1 2 3 4 5"
    )
    robustness.add_argument(
        "--epochs", type=int, default=10, help="fine-tuning epochs of the heads (%(default)s)"
    )
    robustness.add_argument("--lr", type=float, help="the heads' lr (default: each run's)")
    robustness.add_argument("--seed", type=int, default=0, help="of the corruptions (%(default)s)")
    robustness.add_argument(
        "--reference",
        metavar="REF.json",
        help="the single-task reference: chooses each method's configuration (and each "
        "task's single-task runs) where RUNS_DIR holds several, as smto report does",
    )
    robustness.add_argument("--data-dir", help="dataset directory (default SMTO_DATA)")
    robustness.add_argument("--device", default="cpu", help="(%(default)s)")
    robustness.add_argument("--out", help="output directory (default RUNS_DIR/robustness-<key>)")
    robustness.set_defaults(func=_cmd_robustness)

    conflicts = sub.add_parser(
        "conflicts",
        help="gradient cosine vs the best SMTO's gain over Unit. Scal., one point per problem",
        description="The main study's Fig. 3a / Fig. 7. For each problem (a label and its runs "
        "directory: multi-task runs of the baseline, probed with smto train --probe, and of "
        "the SMTOs, with its single-task runs), as smto report chooses configurations: the "
        "baseline's mean cosine to the mean gradient and the best SMTO's gain in test Delta_m "
        "over it. Writes cosine_gap.csv and the scatter cosine_gap.png/.pdf; prints the table.",
    )
    conflicts.add_argument(
        "--problem",
        action="append",
        required=True,
        metavar="LABEL=RUNS_DIR",
        help="a problem and its runs directory; repeat it",
    )
    conflicts.add_argument(
        "--baseline", default="unit_scal", help="the probed baseline (%(default)s)"
    )
    conflicts.add_argument("--out", help="output directory (default runs/report-conflicts)")
    conflicts.set_defaults(func=_cmd_conflicts)
