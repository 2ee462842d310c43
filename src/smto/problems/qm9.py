"""QM9: regress molecular properties of small organic molecules (PROTOCOL.md "QM9").

The main study's 11 targets (PyG indices 0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11): mu, alpha,
homo, lumo, r2, zpve, U0Atom, UAtom, HAtom, GAtom, Cv; any of PyG's 19 can be chosen, by the
study's names. Targets are standardized with the mean and std over the whole dataset; the
loss is the MSE per task on standardized targets, the metric the MAE in PyG's units, x1000
(meV) for homo, lumo, zpve and the four atomization energies, as the study reports them.
Split: the study's shuffled order (``seed_splits/QM9/indices.txt``): the first 10,000
molecules test, the next 10,000 val, the rest (110,831) train. Model: the MPNN of
smto.models.mpnn (the exact fast formulation by default, PyG's layers as the reference).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from smto.data.qm9 import TARGETS
from smto.errors import ConfigError
from smto.models.base import SharedEncoderModel
from smto.models.mpnn import QM9_TARGETS
from smto.problems.base import (
    Batch,
    Meter,
    Metric,
    Problem,
    check_choices,
    check_common_options,
    index_batches,
)

MAE = Metric("mae", higher_is_better=False)
STUDY_TARGETS = QM9_TARGETS
"""The main study's 11 targets (PyG indices 0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11)."""
# Reported x1000 (meV instead of eV): the study's metric (PyG indices 2, 3, 6, 12..15).
MILLI = frozenset({"homo", "lumo", "zpve", "U0Atom", "UAtom", "HAtom", "GAtom"})
SOURCES = ("auto", "pyg", "qm9pack")
SPLIT_MODES = ("original", "seed")
MODELS = ("fast", "pyg")


class QM9(Problem):
    """The QM9 problem over the selected targets.

    Args:
        tasks: e.g. "mu_alpha" or the study's 11 (the default).
        data_dir: the data directory: PyG's QM9 root is ``QM9`` in it, the split file
            ``seed_splits/QM9/indices.txt``; default ``SMTO_DATA``, else the user cache (the
            offline build is cached in smto's cache directory).
        source: "pyg" (PyTorch Geometric's QM9), "qm9pack" (the offline build) or "auto"
            (see :func:`smto.data.qm9.load_qm9`).
        split: "original" (the study's index file, from ``split_file`` or the data
            directory) or "seed" (the study's loader without that file:
            ``random.Random(seed)`` shuffling the molecules).
        split_file: the index file (only with "original").
        seed: the shuffle's seed (only with "seed").
        limits: ``(train, val, test)``, at most this many molecules of each split, for quick
            runs (standardization still uses the whole dataset).
        model: "fast" (smto's exact dense MPNN) or "pyg" (PyG's NNConv/Set2Set layers).
        download: let PyG download QM9 when its root is empty.
    """

    name = "qm9"
    all_tasks = TARGETS

    def __init__(
        self,
        tasks: Sequence[str] | str = STUDY_TARGETS,
        data_dir: str | PathLike[str] | None = None,
        source: str = "auto",
        split: str = "original",
        split_file: str | PathLike[str] | None = None,
        seed: int = 0,
        limits: Sequence[int | None] = (None, None, None),
        model: str = "fast",
        download: bool = True,
    ) -> None:
        super().__init__(tasks)
        self.check_options(
            source=source,
            split=split,
            split_file=split_file,
            seed=seed,
            limits=limits,
            model=model,
            download=download,
        )
        from smto.data import paths
        from smto.data import qm9 as qm9_data

        self.model_kind = model
        data = qm9_data.load_qm9(source, data_dir=data_dir, download=download)
        if split == "original":
            path = (
                Path(split_file).expanduser()
                if split_file is not None
                else paths.data_dir(data_dir) / qm9_data.SPLIT_FILE
            )
            order = qm9_data.read_split_indices(path, len(data))
        else:
            order = qm9_data.seeded_order(len(data), seed)
        columns = [qm9_data.TARGETS.index(t) for t in self.tasks]
        y = data.y[:, columns]
        # the study: mean and std (unbiased) over the whole dataset, in float32
        self.mean = y.mean(dim=0)
        self.std = y.std(dim=0)
        standardized = (y - self.mean) / self.std
        self._store = qm9_data.PaddedQM9(data)
        self._order: dict[str, Tensor] = {}
        self._targets: dict[str, Tensor] = {}
        for (split_name, indices), limit in zip(qm9_data.split_order(order).items(), limits):
            chosen = indices if limit is None else indices[:limit]
            self._order[split_name] = chosen
            self._targets[split_name] = standardized[chosen]

    @classmethod
    def check_options(cls, **options: Any) -> None:
        values = cls.options_with_defaults(options)
        check_choices(values, {"source": SOURCES, "split": SPLIT_MODES, "model": MODELS})
        check_common_options(values, paths=("data_dir", "split_file"))
        seed = values["seed"]
        if values["split"] == "original" and seed != 0:
            raise ConfigError(
                f"seed={seed!r} has no effect with split='original' (the index file fixes the "
                "order); drop it, or use split='seed'"
            )
        if values["split"] == "seed" and values["split_file"] is not None:
            raise ConfigError("split_file is read only with split='original'; drop it")

    def split_size(self, split: str) -> int:
        return len(self._order[split])

    def batches(
        self, split: str, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        order, targets = self._order[split], self._targets[split]
        for idx in index_batches(len(order), batch_size, generator):
            molecules = self._store.batch(order[idx])
            y = targets[idx]
            yield Batch(molecules, {t: y[:, k] for k, t in enumerate(self.tasks)}, len(idx))

    def make_model(self, dropout: float = 0.0) -> SharedEncoderModel:
        if dropout != 0:
            raise ConfigError(
                f"the QM9 MPNN has no dropout (the study trains it with p = 0); got {dropout!r}"
            )
        from smto.models.mpnn import qm9_mpnn

        return qm9_mpnn(self.tasks, implementation=self.model_kind)

    def losses(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([((outputs[t] - targets[t]) ** 2).mean() for t in self.tasks])

    @classmethod
    def task_metrics(cls, task: str) -> tuple[Metric, ...]:
        return (MAE,)

    def loss_types(self) -> tuple[str, ...]:
        return ("mse",) * self.n_tasks

    def new_meter(self) -> Meter:
        scale = torch.tensor([1000.0 if t in MILLI else 1.0 for t in self.tasks])
        return _MAEMeter(self.tasks, self.std * scale)


class _MAEMeter(Meter):
    """Sums of absolute errors in the original units (times the report scale)."""

    def __init__(self, tasks: Sequence[str], scale: Tensor) -> None:
        self.tasks = tuple(tasks)
        self.scale = scale
        self.sums: Tensor | None = None
        self.count = 0

    def update(self, outputs: Mapping[str, Tensor], batch: Batch) -> None:
        errors = torch.stack(
            [(outputs[t].detach() - batch.targets[t]).abs().sum() for t in self.tasks]
        )
        self.sums = errors if self.sums is None else self.sums + errors
        self.count += batch.size

    def compute(self) -> dict[str, dict[str, float]]:
        assert self.sums is not None, "no batch was added"
        values = (self.sums.cpu().double() * self.scale.double() / self.count).tolist()
        return {t: {"mae": v} for t, v in zip(self.tasks, values)}


__all__ = ["MILLI", "QM9", "STUDY_TARGETS"]
