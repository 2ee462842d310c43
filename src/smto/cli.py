"""The ``smto`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from smto import registry


def _cmd_methods(args: argparse.Namespace) -> int:
    for name in registry.available():
        spec = registry.spec(name)
        params = ", ".join(f"{h.name}={h.default!r}" for h in spec.hyperparameters.values())
        cls = spec.cls
        print(f"{name:<14} {spec.display_name:<14} {cls.space if hasattr(cls, 'space') else ''}")
        print(f"{'':<14} scale={cls.scale.value}; hyperparameters: {params or 'none'}")
    return 0


def _cmd_bench_step(args: argparse.Namespace) -> int:
    from smto.bench.step import format_table, lenet_workload, mpnn_workload, run_benchmark

    methods = args.methods or registry.available()
    for name in methods:
        registry.spec(name)
    timings = []
    models = ["lenet", "mpnn"] if args.model == "all" else [args.model]
    for model in models:
        if model == "lenet":
            workload = lenet_workload(args.lenet_batch_size, args.device)
        else:
            workload = mpnn_workload(args.mpnn_batch_size, args.device)
        repeats = args.repeats if args.repeats else (20 if model == "lenet" else 3)
        timings += run_benchmark(
            workload,
            methods,
            repeats,
            args.warmup,
            args.device,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    print(format_table(timings))
    if "nash_mtl" in methods:
        from smto.bench.solver import nash_solve_time

        print(f"\nNash-MTL weight solve at K = 11: {nash_solve_time(11) * 1e3:.3f} ms (median)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from smto.demo import DEFAULT_METHODS, main

    main(args.methods or DEFAULT_METHODS, steps=args.steps)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smto", description="Specialized multi-task optimizers and their benchmark."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    methods = sub.add_parser("methods", help="list the registered methods and hyperparameters")
    methods.set_defaults(func=_cmd_methods)

    demo = sub.add_parser("demo", help="train a two-task toy network with several methods")
    demo.add_argument("--methods", nargs="+", help="method names (default: a representative set)")
    demo.add_argument("--steps", type=int, default=400, help="training steps per method")
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    step = bench_sub.add_parser(
        "step",
        help="time one training step of every method (LeNet K=2, MPNN K=11)",
        description="Median step time per method, with ratios to Unit. Scal. and to the "
        "Jacobian floor (forward + fastest exact per-task Jacobian + step), measured in one run.",
    )
    step.add_argument("--model", choices=["lenet", "mpnn", "all"], default="all")
    step.add_argument("--methods", nargs="+", help="method names (default: all registered)")
    step.add_argument("--lenet-batch-size", type=int, default=256)
    step.add_argument(
        "--mpnn-batch-size",
        type=int,
        default=16,
        help="graphs per batch (the study uses 120; 16 keeps the CPU run to a few minutes)",
    )
    step.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="timed steps per method (default 20 for the LeNet, 3 for the MPNN)",
    )
    step.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    step.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    step.set_defaults(func=_cmd_bench_step)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as error:
        print(f"smto: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
