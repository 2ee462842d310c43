"""``smto toy cagrad`` and ``smto toy loss-scale``: Elich et al.'s toy tables and figures."""

from __future__ import annotations

import argparse
from pathlib import Path

from smto.errors import ConfigError
from smto.toys import descent, loss_scale

CLI_LEARNING_RATES = (10.0, 1.0, 0.1)
CLI_ITERATIONS = 200


def _cmd_cagrad(args: argparse.Namespace) -> int:
    methods = descent.toy_methods() if args.methods == ["all"] else args.methods
    lrs = [float(lr) for lr in args.lrs]
    figure_lr = args.figure_lr if args.figure_lr is not None else lrs[0]
    options = {"iterations": args.iterations, "tolerance": args.tolerance}
    cells = descent.study(methods, args.optimizers, lrs, **options)
    print(
        f"Iterations until the average loss is within {args.tolerance:g} of its minimum "
        "(the worst of the three starts; '-' = a start did not reach it within "
        f"{args.iterations:,} iterations, Elich et al.'s budget is 100,000), as in Elich et "
        "al.'s Table A3:\n"
    )
    print(descent.format_table(cells))
    for line in descent.failures(cells):
        print(f"failed: {line}")
    if args.out is None:
        return 0
    from smto.toys import figures

    chosen = {
        (m, o): (
            cells[(m, o, figure_lr)].trajectories
            if (m, o, figure_lr) in cells
            else descent.study([m], [o], [figure_lr], **options)[(m, o, figure_lr)].trajectories
        )
        for m in methods
        for o in args.optimizers
    }
    path = figures.save(figures.cagrad_figure(chosen, figure_lr), Path(args.out) / "cagrad_toy")
    print(f"\nwrote {path}")
    return 0


def _cmd_loss_scale(args: argparse.Namespace) -> int:
    options = {"steps": args.steps, "lr": args.lr, "eps": args.eps}
    written = []
    for variant in args.variants:
        trained = variant == "trained"
        pairs = loss_scale.experiment(trained, **options)
        figure = "A2" if trained else "A1"
        print(
            f"Backbone {variant} (Elich et al.'s Fig. {figure}), {args.steps} steps, lr "
            f"{args.lr:g}; scales x{loss_scale.SCALES[0]:g} and x{loss_scale.SCALES[1]:g}; an "
            "update ratio (scaled / unscaled) of 1 is invariance:\n"
        )
        print(loss_scale.format_table(pairs) + "\n")
        if args.out is not None:
            from smto.toys import figures

            out = Path(args.out) / f"loss_scale_{variant}"
            written.append(figures.save(figures.loss_scale_figure(pairs), out))
    for path in written:
        print(f"wrote {path}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ConfigError(f"expected an integer >= 1, got {text}")
    return value


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds ``smto toy cagrad`` and ``smto toy loss-scale`` to the ``smto`` parser."""
    toy = sub.add_parser("toy", help="Elich et al.'s toy problems (seconds on a CPU)")
    toys = toy.add_subparsers(dest="toy", required=True)

    cagrad = toys.add_parser(
        "cagrad",
        help="the CAGrad toy: iterations to the average loss's minimum (Table A3), figure",
        description="Runs each method with each optimizer and learning rate from Liu et al.'s "
        "three starts and counts the iterations until the average loss is within the "
        "tolerance of its minimum. The defaults take seconds; Table A3 in full is "
        "--lrs 10 5 1 0.5 0.1 0.05 0.01 0.005 0.001 --iterations 100000 (hours).",
    )
    cagrad.add_argument(
        "--methods",
        nargs="+",
        default=list(descent.PAPER_METHODS),
        help="registry names, or 'all' for every method the toy can run (default: EW, "
        "PCGrad, CAGrad, as in the paper)",
    )
    cagrad.add_argument(
        "--optimizers", nargs="+", choices=descent.OPTIMIZERS, default=["gd", "adam"]
    )
    cagrad.add_argument("--lrs", nargs="+", type=float, default=list(CLI_LEARNING_RATES))
    cagrad.add_argument(
        "--iterations",
        type=_positive_int,
        default=CLI_ITERATIONS,
        help="budget per trajectory (default %(default)s; the paper's is 100000)",
    )
    cagrad.add_argument("--tolerance", type=float, default=descent.TOLERANCE)
    cagrad.add_argument(
        "--figure-lr", type=float, help="the learning rate drawn (default: the first of --lrs)"
    )
    cagrad.add_argument("--out", help="directory for the figure (none without it)")
    cagrad.set_defaults(func=_cmd_cagrad)

    scale = toys.add_parser(
        "loss-scale",
        help="the loss-scale toy: which updates are invariant to loss scales (App. A2)",
        description="EW + SGD, EW + Adam, UW-O + SGD and EW + per-task Adam, with the losses "
        "unscaled and scaled x10 / x0.1, the backbone frozen and trained; prints the final "
        "losses, the gradient magnitudes and the ratios of the update magnitudes.",
    )
    scale.add_argument("--steps", type=_positive_int, default=100)
    scale.add_argument("--lr", type=float, default=3e-3)
    scale.add_argument(
        "--eps", type=float, default=1e-16, help="Adam's eps (torch's default 1e-8 breaks "
        "the invariance of parameters with small gradients)",
    )  # fmt: skip
    scale.add_argument(
        "--variants", nargs="+", choices=("frozen", "trained"), default=["frozen", "trained"]
    )
    scale.add_argument("--out", help="directory for the figures (none without it)")
    scale.set_defaults(func=_cmd_loss_scale)
