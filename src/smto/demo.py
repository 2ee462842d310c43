"""A quick demonstration on the toy regression problem (no data needed, seconds per method).

The two toy tasks share an encoder, conflict partly and have losses on different scales,
which is where the methods differ. Each method trains the same initial network on the same
data; the table shows the test MSE at the best validation epoch and the mean task weights.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

from smto.compare import compare, format_comparison
from smto.train import RunConfig

DEFAULT_METHODS = (
    "unit_scal", "uw_o", "mgda", "pcgrad", "cagrad", "imtl", "nash_mtl", "famo",
)  # fmt: skip


def main(methods: Sequence[str] = DEFAULT_METHODS, epochs: int = 50) -> None:
    base = RunConfig(
        problem="toy_regression",
        tasks="T1_T2",
        batch_size=64,
        lr=3e-3,
        epochs=epochs,
        scheduler="none",
    )
    with tempfile.TemporaryDirectory() as root:
        print(format_comparison(compare(methods, base, root)))
