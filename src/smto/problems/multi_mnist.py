"""Multi-MNIST: classify and reconstruct the left and right digits of a composite image.

PROTOCOL.md "Multi-MNIST" (after Sener & Koltun 2018). Tasks: CL / CR classify the left /
right digit (NLL of log-softmax; metric accuracy), RL / RR reconstruct the left / right
28x28 digit (MSE per sample; metric MSE). The main study's task pairs are CL_CR, CL_RR and
RL_RR.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional

from smto.errors import ConfigError
from smto.models.base import SharedEncoderModel
from smto.models.lenet import multi_lenet
from smto.problems.base import (
    SPLITS,
    Batch,
    Meter,
    Metric,
    Problem,
    batch_slices,
    check_common_options,
    index_batches,
)

CLASSIFICATION = ("CL", "CR")
ACCURACY = Metric("accuracy", higher_is_better=True)
MSE = Metric("mse", higher_is_better=False)
RIGHT_INDICES = ("seed", "original")


class MultiMNIST(Problem):
    """The Multi-MNIST problem over the selected tasks.

    Args:
        tasks: e.g. "CL_RR" or ["CL", "RR"].
        data_dir: where MNIST lives (``mnist/`` inside it, or the files themselves); default
            the ``SMTO_DATA`` environment variable, else the user cache (downloading).
        right_indices: "seed" (right digits drawn with ``seed``) or "original" (the main
            study's index files, from ``split_dir`` or ``<data_dir>/seed_splits/multi_mnist``).
        seed: the seed of the right-digit draw (an integer >= 0; only with "seed").
        split_dir: the directory of the original index files (only with "original").
        limits: ``(train, val, test)``, at most this many samples of each split (a positive
            integer, or None for the whole split), for quick runs.
        download: fetch missing MNIST files from the public mirrors.

    Every option is checked (:meth:`check_options`) before any data is loaded.
    """

    name = "multi_mnist"
    all_tasks = ("CL", "CR", "RL", "RR")

    def __init__(
        self,
        tasks: Sequence[str] | str = "CL_RR",
        data_dir: str | PathLike[str] | None = None,
        right_indices: str = "seed",
        seed: int = 0,
        split_dir: str | PathLike[str] | None = None,
        limits: Sequence[int | None] = (None, None, None),
        download: bool = True,
    ) -> None:
        super().__init__(tasks)
        self.check_options(
            data_dir=data_dir,
            right_indices=right_indices,
            seed=seed,
            split_dir=split_dir,
            limits=limits,
            download=download,
        )
        from smto.data.multi_mnist import load_multi_mnist, normalize

        splits = load_multi_mnist(
            data_dir=data_dir,
            right_indices=right_indices,
            seed=seed,
            split_dir=split_dir,
            download=download,
        )
        self._inputs: dict[str, Tensor] = {}
        self._residents: dict[str, MultiMNIST] = {}
        self._targets: dict[str, dict[str, Tensor]] = {}
        for split, limit in zip(SPLITS, limits):
            data = splits[split]
            n = len(data.images) if limit is None else min(limit, len(data.images))
            self._inputs[split] = normalize(data.images[:n]).unsqueeze(1)
            source = {
                "CL": data.left_labels,
                "CR": data.right_labels,
                "RL": data.left,
                "RR": data.right,
            }
            self._targets[split] = {
                t: source[t][:n] if t in CLASSIFICATION else normalize(source[t][:n])
                for t in self.tasks
            }

    @classmethod
    def check_options(cls, **options: Any) -> None:
        values = cls.options_with_defaults(options)
        mode, seed = values["right_indices"], values["seed"]
        if mode not in RIGHT_INDICES:
            raise ConfigError(f"right_indices must be 'seed' or 'original', got {mode!r}")
        check_common_options(values, paths=("data_dir", "split_dir"))
        if mode == "original" and seed != 0:
            raise ConfigError(
                f"seed={seed!r} has no effect with right_indices='original' (the study's files "
                "fix the right digits); drop it, or use right_indices='seed'"
            )
        if mode == "seed" and values["split_dir"] is not None:
            raise ConfigError(
                "split_dir is read only with right_indices='original'; drop it, or set "
                "right_indices='original'"
            )

    def split_size(self, split: str) -> int:
        return len(self._inputs[split])

    def resident(self, device: torch.device | str) -> MultiMNIST:
        """This problem with every split on ``device`` (copied once and kept for later runs),
        or itself on the CPU or when the splits would take more than half of the device's
        free memory. Batches then come from the device in the same order (the permutation is
        drawn on the CPU), so a run's numbers are those it has with its data on the host."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        key = str(device)
        if key not in self._residents:
            tensors = [
                *self._inputs.values(),
                *(v for t in self._targets.values() for v in t.values()),
            ]
            size = sum(t.numel() * t.element_size() for t in tensors)
            self._residents[key] = self._moved(device) if _fits(size, device) else self
        return self._residents[key]

    def _moved(self, device: torch.device) -> MultiMNIST:
        """A shallow copy whose splits are on ``device``."""
        moved = copy.copy(self)
        moved._inputs = {s: x.to(device) for s, x in self._inputs.items()}
        moved._targets = {
            s: {t: v.to(device) for t, v in targets.items()} for s, targets in self._targets.items()
        }
        moved._residents = {}
        return moved

    def batches(
        self, split: str, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Shuffled batches are gathered with ``index_select`` on the data's device (see
        :meth:`resident`); unshuffled ones are slices (views, no copy). Either way the same
        samples in the same order as indexing with each batch's indices."""
        inputs, targets = self._inputs[split], self._targets[split]
        if generator is None:
            for part in batch_slices(len(inputs), batch_size):
                size = part.stop - part.start
                yield Batch(inputs[part], {t: v[part] for t, v in targets.items()}, size)
            return
        for idx in index_batches(len(inputs), batch_size, generator, inputs.device):
            picked = {t: v.index_select(0, idx) for t, v in targets.items()}
            yield Batch(inputs.index_select(0, idx), picked, len(idx))

    def make_model(self, dropout: float = 0.0) -> SharedEncoderModel:
        return multi_lenet(self.tasks, dropout)

    def losses(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([_loss(t, outputs[t], targets[t]) for t in self.tasks])

    @classmethod
    def task_metrics(cls, task: str) -> tuple[Metric, ...]:
        return (ACCURACY,) if task in CLASSIFICATION else (MSE,)

    def loss_types(self) -> tuple[str, ...]:
        return tuple("classification" if t in CLASSIFICATION else "mse" for t in self.tasks)

    def new_meter(self) -> Meter:
        return _MultiMNISTMeter(self.tasks)


def _fits(size: int, device: torch.device) -> bool:
    """Whether ``size`` bytes take at most half of ``device``'s free memory (CUDA reports
    it; other accelerators are assumed to have room)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return size <= free // 2


def _loss(task: str, output: Tensor, target: Tensor) -> Tensor:
    if task in CLASSIFICATION:
        return functional.nll_loss(output, target)
    return ((output - target) ** 2).mean()


class _MultiMNISTMeter(Meter):
    """Sums of correct predictions and squared errors, kept on the outputs' device."""

    def __init__(self, tasks: Sequence[str]) -> None:
        self.tasks = tuple(tasks)
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = dict.fromkeys(self.tasks, 0)

    def update(self, outputs: Mapping[str, Tensor], batch: Batch) -> None:
        for t in self.tasks:
            out, target = outputs[t].detach(), batch.targets[t]
            if t in CLASSIFICATION:
                value = (out.argmax(dim=1) == target).sum()
                count = batch.size
            else:
                value = ((out - target) ** 2).sum()
                count = target.numel()
            self.sums[t] = self.sums[t] + value if t in self.sums else value
            self.counts[t] += count

    def compute(self) -> dict[str, dict[str, float]]:
        result = {}
        for t in self.tasks:
            value = float(self.sums[t]) / self.counts[t]
            result[t] = {"accuracy" if t in CLASSIFICATION else "mse": value}
        return result
