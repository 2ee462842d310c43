"""The two stages' choices, on run records: stage 2's configurations and the reference.

Stage 2 gives extra seeds to each method's best stage-1 configuration, chosen by
:func:`smto.evaluation.selection.select_configurations`: the best mean validation Delta_m
(multi-task) or, for single-task sweeps, the best mean validation value of each task and
metric (so a single-task sweep may continue with several configurations).
"""

from __future__ import annotations

from collections.abc import Sequence

from smto import registry
from smto.errors import RunStateError
from smto.evaluation.reference import Reference
from smto.evaluation.selection import select_configurations
from smto.sweep.spec import Sweep
from smto.train import RunRecord


def choose_stage2(
    sweep: Sweep, records: Sequence[RunRecord], reference: Reference | None
) -> list[str]:
    """The configuration keys that get the extra seeds: per method (and, for multi-task
    sweeps, per task set), the ones its stage-1 records select. A method whose stage-1 runs
    all failed gets none (a failed run is no result to choose by); a stage 1 whose runs all
    failed is an error."""
    chosen: list[str] = []
    for method in sweep.methods:
        groups = [sweep.tasks] if sweep.single_task else [[t] for t in sweep.tasks]
        for tasks in groups:
            runs = [
                r
                for r in records
                if registry.spec(r.config["method"]).name == method and r.config["tasks"] in tasks
            ]
            if all(r.status == "failed" for r in runs):
                continue
            keys = select_configurations(runs, None if sweep.single_task else reference)
            chosen.extend(k for k in keys if k not in chosen)
    if not chosen:
        raise RunStateError(
            f"sweep {sweep.name!r}: every stage-1 run failed, so stage 2 has no configuration "
            "to continue with; `smto sweep status` lists the reasons: fix the cause, then run "
            "the sweep under a new name or storage (failed runs are not tried again)"
        )
    return chosen
