"""The benchmark commands (``smto bench step``, ``smto bench epoch``).

:func:`add_commands` adds them to the ``smto`` command line (smto.cli); :func:`main` runs
them on their own (``python -m smto.bench``), so the benchmarks need nothing of smto.cli.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

WORKLOAD_NAMES = (
    "lenet",
    "lenet4",
    "heavy_heads",
    "mpnn",
    "mpnn_pyg",
    "deeplab-r18",
    "deeplab-r50",
    "celeba-r18",
    "nyuv2-segnet",
    "nyuv2-deeplab-r50",
)
"""The step benchmark's models (smto.bench.step.WORKLOADS, named here to keep torch out of
building the parser)."""

DEFAULT_WORKLOADS = ("lenet", "lenet4", "heavy_heads", "mpnn")
"""What ``--model all`` runs: every model but ``mpnn_pyg`` (the PyG-layer reference of the
MPNN, for comparing the two implementations; it needs the ``graph`` extra) and the image
models of Cityscapes, CelebA and NYUv2 (seconds per step on a CPU)."""

DATA_HELP = (
    "directory holding the datasets (e.g. mnist/ with the four IDX .gz files); default: the "
    "SMTO_DATA environment variable, else the user cache, downloading what is missing"
)


def selected_workloads(names: Sequence[str]) -> list[str]:
    """The workloads ``--model NAMES`` runs, in order, once each ("all": DEFAULT_WORKLOADS)."""
    models: list[str] = []
    for name in names:
        for model in DEFAULT_WORKLOADS if name == "all" else (name,):
            if model not in models:
                models.append(model)
    return models


def _cmd_step(args: argparse.Namespace) -> int:
    from smto import registry
    from smto.bench.step import WORKLOADS, format_table, run_benchmark

    methods = args.methods or registry.available()
    for name in methods:
        registry.spec(name)
    timings = []
    for model in selected_workloads(args.model):
        mpnn, deeplab = model.startswith("mpnn"), model.startswith("deeplab")
        celeba, nyuv2 = model.startswith("celeba"), model.startswith("nyuv2")
        if nyuv2:
            shape = tuple(args.nyuv2_shape)
            workload = WORKLOADS[model](args.nyuv2_batch_size, args.device, shape=shape)
        elif deeplab:
            shape = tuple(args.deeplab_shape)
            workload = WORKLOADS[model](args.deeplab_batch_size, args.device, shape=shape)
        elif celeba:
            workload = WORKLOADS[model](args.celeba_batch_size, args.device)
        else:
            batch_size = args.mpnn_batch_size if mpnn else args.batch_size
            workload = WORKLOADS[model](batch_size, args.device)
        heavy = mpnn or deeplab or celeba or nyuv2
        repeats = args.repeats if args.repeats else (3 if heavy else 20)
        timings += run_benchmark(
            workload,
            methods,
            repeats,
            args.warmup,
            args.device,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
            peers={"none": (), "both": ("torchjd", "libmtl")}.get(args.peers, (args.peers,)),
            floor={"both": ("sequential", "batched"), "none": ()}.get(args.floor, (args.floor,)),
        )
    print(format_table(timings))
    if "nash_mtl" in methods:
        from smto.bench.solver import nash_solve_time

        print(f"\nNash-MTL weight solve at K = 11: {nash_solve_time(11) * 1e3:.3f} ms (median)")
    return 0


def _cmd_epoch(args: argparse.Namespace) -> int:
    from smto.bench.epoch import epoch_benchmark

    print(epoch_benchmark(args.data_dir, args.repeats).format())
    return 0


def _cmd_vectorized(args: argparse.Namespace) -> int:
    from smto.bench.vectorized import threads, vectorized_benchmark

    timings = vectorized_benchmark(
        args.methods, args.runs, args.epochs, args.batch_size, tuple(args.limits),
        data_dir=args.data_dir,
    )  # fmt: skip
    print(f"Multi-MNIST CL_RR, batch {args.batch_size}, limits {args.limits}, torch threads "
          f"{threads()}")  # fmt: skip
    for timing in timings:
        print(timing.format())
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from smto.bench.study import EpochTimer, estimate, parse_given, study_sweeps

    given = parse_given(args.seconds)
    timer = None if args.no_measure else EpochTimer(
        args.steps, args.eval_samples, args.test_share, args.data_dir
    )  # fmt: skip
    sweeps = study_sweeps(args.files, references=not args.no_references)
    print(estimate(sweeps, given, timer).format())
    return 0


def _add_benchmarks(bench: argparse.ArgumentParser) -> None:
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    step = bench_sub.add_parser(
        "step",
        help="time one training step of every method (LeNet K=2 and K=4, heavy heads K=3, "
        "MPNN K=11)",
        description="Median step time per method, with ratios to Unit. Scal. and to the "
        "Jacobian floor (forward + fastest exact per-task Jacobian + step), measured in one run.",
    )
    step.add_argument(
        "--model",
        "--models",
        dest="model",
        nargs="+",
        choices=[*WORKLOAD_NAMES, "all"],
        default=["all"],
        help="one or more of: lenet: Multi-MNIST CL_RR (K = 2); lenet4: CL_CR_RL_RR (K = 4); "
        "heavy_heads: three 3-layer 256-wide heads on a 50-d representation (K = 3); mpnn: QM9 "
        "(K = 11), the fast dense encoder; mpnn_pyg: the same MPNN built from PyG layers (needs "
        "the graph extra); deeplab-r18, deeplab-r50: Cityscapes S_D_I (K = 3) on the dilated "
        "ResNet-18/50 with DeepLab heads; celeba-r18: CelebA's 40 attributes (K = 40) on a "
        "ResNet-18 with linear heads, 64 x 64 images; nyuv2-segnet, nyuv2-deeplab-r50: NYUv2 "
        "S_D_N (K = 3) on MTAN's SegNet or the dilated ResNet-50 with DeepLab heads; all "
        "(default): lenet, lenet4, "
        "heavy_heads, mpnn",
    )
    step.add_argument("--methods", nargs="+", help="method names (default: all registered)")
    step.add_argument(
        "--batch-size", type=int, default=256, help="batch of the LeNets and heavy heads"
    )
    step.add_argument(
        "--mpnn-batch-size",
        type=int,
        default=16,
        help="molecules per batch of mpnn and mpnn_pyg (the study uses 120; 16 keeps CPU runs "
        "short)",
    )
    step.add_argument(
        "--deeplab-batch-size",
        type=int,
        default=8,
        help="images per batch of deeplab-r18 and deeplab-r50 (the study uses 32)",
    )
    step.add_argument(
        "--celeba-batch-size",
        type=int,
        default=64,
        help="images per batch of celeba-r18 (the study uses 512; 64 keeps CPU runs short)",
    )
    step.add_argument(
        "--nyuv2-batch-size",
        type=int,
        default=2,
        help="images per batch of nyuv2-segnet and nyuv2-deeplab-r50 (Elich et al. use 8)",
    )
    step.add_argument(
        "--nyuv2-shape",
        type=int,
        nargs=2,
        default=(384, 288),
        metavar=("WIDTH", "HEIGHT"),
        help="image size of the NYUv2 models (default NYUv2's 384 288; SegNet needs multiples "
        "of 32)",
    )
    step.add_argument(
        "--deeplab-shape",
        type=int,
        nargs=2,
        default=(256, 128),
        metavar=("WIDTH", "HEIGHT"),
        help="image size of the DeepLab models (default 256 128; the study also uses 512 256)",
    )
    step.add_argument(
        "--floor",
        choices=("both", "sequential", "batched", "none"),
        default="both",
        help="the Jacobian strategies the floor is timed with (default both: the faster is the "
        "floor; none skips it, e.g. for mpnn_pyg at the study's batch)",
    )
    step.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="timed steps per method (default 3 for the MPNNs, DeepLabs and CelebA, 20 for the "
        "others)",
    )
    step.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    step.add_argument(
        "--peers",
        choices=("none", "torchjd", "libmtl", "both"),
        default="none",
        help="also time torchjd's aggregator and/or LibMTL's weighting (LibMTL 1.1.5, installed "
        "with pip install --no-deps LibMTL==1.1.5) of each method the peer library has, in the "
        "same step",
    )
    step.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    step.set_defaults(func=_cmd_step)
    epoch = bench_sub.add_parser(
        "epoch",
        help="Multi-MNIST build time, and one Unit. Scal. epoch: engine vs a bare loop",
    )
    epoch.add_argument("--data-dir", help=DATA_HELP)
    epoch.add_argument("--repeats", type=int, default=3, help="epochs of each loop (medians)")
    epoch.set_defaults(func=_cmd_epoch)
    vectorized = bench_sub.add_parser(
        "vectorized",
        help="S Multi-MNIST LeNet runs as one vectorized model vs S separate runs",
        description="Epochs per second of all runs together, separate (the engine) and "
        "vectorized (smto.train.vectorized), and how far their recorded numbers are apart.",
    )
    vectorized.add_argument("--methods", nargs="+", default=["unit_scal", "mgda"])
    vectorized.add_argument("--runs", type=int, default=10, help="S, the seeds 0..S-1")
    vectorized.add_argument("--epochs", type=int, default=1)
    vectorized.add_argument("--batch-size", type=int, default=256)
    vectorized.add_argument(
        "--limits", type=int, nargs=3, default=[3000, 500, 500], help="train, val, test images"
    )
    vectorized.add_argument("--data-dir", help=DATA_HELP)
    vectorized.set_defaults(func=_cmd_vectorized)
    study = bench_sub.add_parser(
        "study",
        help="estimate a study's CPU hours from its sweep files",
        description="Per sweep and method: the planned runs and epochs x seconds per epoch "
        "(given, or measured with the engine on two short epochs of the method's first "
        "configuration, scaled to the full splits), and the total, in CPU hours of one worker.",
    )
    study.add_argument("files", nargs="+", help="sweep files (their reference sweeps included)")
    study.add_argument(
        "--seconds",
        nargs="+",
        default=[],
        metavar="METHOD=S",
        help="seconds per epoch instead of measuring: METHOD=S, or SWEEP:METHOD=S for one sweep",
    )
    study.add_argument("--no-measure", action="store_true", help="only use --seconds")
    study.add_argument("--no-references", action="store_true", help="leave the references out")
    study.add_argument("--steps", type=int, default=20, help="training steps per timed epoch")
    study.add_argument(
        "--eval-samples", type=int, default=500, help="validation and test samples when timing"
    )
    study.add_argument(
        "--test-share",
        type=float,
        default=1.0,
        help="share of epochs that evaluate test, a new best (default 1: an upper bound)",
    )
    study.add_argument("--data-dir", help=DATA_HELP)
    study.set_defaults(func=_cmd_study)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Adds ``bench`` (with ``step`` and ``epoch``) to a command line's subcommands."""
    _add_benchmarks(sub.add_parser("bench", help="benchmarks"))


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``smto bench`` on its own: its arguments are those after ``bench``."""
    parser = argparse.ArgumentParser(prog="smto bench", description="benchmarks")
    _add_benchmarks(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``smto bench ARGV`` (e.g. ``["step", "--model", "lenet"]``); an invalid value
    (an unknown method, a missing dataset or extra) is a one-line error and exit status 2."""
    from smto.errors import SmtoError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SmtoError, ValueError, FileNotFoundError) as error:
        print(f"smto: error: {error}", file=sys.stderr)
        return 2
