"""CelebA: 40 binary face attributes (K = 40), after Elich et al. (App. A3).

The data (:mod:`smto.data.celeba`): the aligned images resized to 64 x 64 (any ``size`` can
be asked for), the original split of 162,770 / 19,867 / 19,962 images, no augmentation (the
paper names none for CelebA). Tasks: the 40 attributes in the official order, named without
their underscores (:data:`~smto.data.celeba.TASKS`, e.g. "5oClockShadow", "Smiling",
"Male"); all 40 by default. Model: a plain ResNet-18 pooled to (B, 512) with one linear
logit per attribute (:func:`~smto.models.classifier.resnet_classifier`). Loss: binary
cross-entropy with logits per attribute, the mean over the batch. Metrics over the whole
split, from counts kept in the meter (a logit > 0 predicts the attribute): ``accuracy`` and
``f1``, the F1 score of the positive class, 2 TP / (2 TP + FP + FN); where the split has no
positive label and no positive prediction (0 / 0) it is 0, scikit-learn's ``f1_score`` value
for ``zero_division`` left at its default ("warn", which returns 0).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping, Sequence
from numbers import Integral
from os import PathLike
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from smto.data.celeba import TASKS
from smto.errors import ConfigError
from smto.models.base import SharedEncoderModel
from smto.problems.base import (
    SPLITS,
    Batch,
    Meter,
    Metric,
    Problem,
    check_common_options,
    index_batches,
)
from smto.problems.images import check_replacement

ACCURACY = Metric("accuracy", higher_is_better=True)
F1 = Metric("f1", higher_is_better=True)
ROOT_ENV = "SMTO_CELEBA"
MIN_SIZE = 16


class CelebA(Problem):
    """The CelebA problem over the selected attributes.

    Args:
        tasks: task names joined by "_" (e.g. "Smiling_Male") or a list; default all 40.
        root: the CelebA tree (``img_align_celeba/``, ``list_attr_celeba.txt``,
            ``list_eval_partition.txt``, directly or under ``celeba/``); default
            ``$SMTO_CELEBA``, else ``<data dir>/celeba``.
        data_dir: the data directory (``SMTO_DATA`` by default); the cache goes beside it.
        limits: ``(train, val, test)``, at most this many images of each split (the first
            in the lists' order: only those are decoded and cached).
        workers: the DataLoader's worker processes (also the processes that build the cache).
        size: the side of the square images (the study's 64).
        pretrained: torchvision's ImageNet ResNet-18 weights for the encoder: a weights file
            (``resnet18-f37072fd.pth``), "torchvision" (fetched with torchvision where it is
            installed), or None (from scratch, the default, without a warning: Elich et al.
            do not say they pre-train).
    """

    name = "celeba"
    all_tasks = TASKS

    def __init__(
        self,
        tasks: Sequence[str] | str = "_".join(TASKS),
        root: str | PathLike[str] | None = None,
        data_dir: str | PathLike[str] | None = None,
        limits: Sequence[int | None] = (None, None, None),
        workers: int = 2,
        size: int = 64,
        pretrained: str | PathLike[str] | None = None,
    ) -> None:
        super().__init__(tasks)
        self.check_options(
            root=root,
            data_dir=data_dir,
            limits=limits,
            workers=workers,
            size=size,
            pretrained=pretrained,
        )
        from smto.data import celeba as data
        from smto.data import paths

        self.size = int(size)
        self.workers = int(workers)
        self.pretrained = pretrained
        base = paths.data_dir(data_dir)
        if root is None:
            root = os.environ.get(ROOT_ENV) or base / "celeba"
        layout = data.find_layout(root)
        splits = data.read_splits(layout)
        splits = {
            s: (names if n is None else names[:n], attributes if n is None else attributes[:n])
            for (s, (names, attributes)), n in zip(splits.items(), limits)
        }
        files = {s: data.check_images(layout, splits[s][0], s) for s in SPLITS}
        cache = paths.cache_dir(None, data_dir) / "celeba"
        self._datasets = {
            s: data.CelebASplit(
                data.load_images(files[s], self.size, cache, s, self.workers),
                splits[s][1],
                self.tasks,
            )
            for s in SPLITS
        }

    @classmethod
    def check_options(cls, **options: Any) -> None:
        values = cls.options_with_defaults(options)
        check_common_options(values, paths=("root", "data_dir"))
        size = values["size"]
        if isinstance(size, bool) or not isinstance(size, Integral) or size < MIN_SIZE:
            raise ConfigError(
                f"size must be an integer >= {MIN_SIZE} (the side of the square images; the "
                f"study's is 64), got {size!r}"
            )

    def split_size(self, split: str) -> int:
        return len(self._datasets[split])

    def batches(
        self, split: str, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """The split's batches through a DataLoader: each worker indexes a whole batch of
        the cached arrays at once (``batch_size=None`` over a sampler of index lists)."""
        dataset = self._datasets[split]
        order = [idx.tolist() for idx in index_batches(len(dataset), batch_size, generator)]
        loader = torch.utils.data.DataLoader(
            dataset,
            sampler=order,
            batch_size=None,
            num_workers=self.workers if len(order) > 1 else 0,
        )
        for sample in loader:
            targets = {t: sample[t] for t in self.tasks}
            yield Batch(sample["image"], targets, len(sample["image"]))

    def split_images(self, split: str) -> np.ndarray:
        """The split's (N, size, size, 3) uint8 RGB images, for
        :mod:`smto.problems.images`."""
        return self._datasets[split].images

    def with_split_images(self, split: str, images: np.ndarray) -> CelebA:
        """A copy reading ``images`` for ``split`` (the attributes and other splits shared)."""
        check_replacement(split, self.split_images(split), images)
        dataset = copy.copy(self._datasets[split])
        dataset.images = images
        problem = copy.copy(self)
        problem._datasets = {**self._datasets, split: dataset}
        return problem

    def make_model(self, dropout: float = 0.0) -> SharedEncoderModel:
        if dropout != 0:
            raise ConfigError(
                f"the CelebA model (a ResNet-18 with linear heads) has no dropout; got "
                f"dropout={dropout!r}"
            )
        from smto.models.classifier import resnet_classifier

        return resnet_classifier(self.tasks, depth=18, pretrained=self.pretrained)

    def losses(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([task_loss(outputs[t], targets[t]) for t in self.tasks])

    @classmethod
    def task_metrics(cls, task: str) -> tuple[Metric, ...]:
        return (ACCURACY, F1)

    def loss_types(self) -> tuple[str, ...]:
        return ("classification",) * len(self.tasks)

    def new_meter(self) -> Meter:
        return CelebAMeter(self.tasks)


def task_loss(output: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of the (B,) logits against the 0/1 targets, the batch mean."""
    return functional.binary_cross_entropy_with_logits(output, target.to(output.dtype))


def binary_scores(
    true_positive: int, false_positive: int, false_negative: int, count: int
) -> dict[str, float]:
    """Accuracy and the positive class's F1 from the counts of a split of ``count`` samples;
    F1 is 0 when it is 0 / 0 (no positive label, no positive prediction), as scikit-learn's
    default ``zero_division``."""
    if count < 1:
        return {"accuracy": float("nan"), "f1": float("nan")}
    true_negative = count - true_positive - false_positive - false_negative
    denominator = 2 * true_positive + false_positive + false_negative
    return {
        "accuracy": (true_positive + true_negative) / count,
        "f1": 2 * true_positive / denominator if denominator > 0 else 0.0,
    }


class CelebAMeter(Meter):
    """Per task, the counts of true positives, false positives and false negatives and the
    number of samples over a split (a logit > 0 predicts the attribute), kept on the
    outputs' device."""

    def __init__(self, tasks: Sequence[str]) -> None:
        self.tasks = tuple(tasks)
        self.counts: Tensor | None = None  # (K, 3): TP, FP, FN
        self.count = 0

    def update(self, outputs: Mapping[str, Tensor], batch: Batch) -> None:
        predicted = torch.stack([outputs[t].detach() > 0 for t in self.tasks])
        actual = torch.stack([batch.targets[t] > 0.5 for t in self.tasks])
        counts = torch.stack(
            [
                (predicted & actual).sum(1),
                (predicted & ~actual).sum(1),
                (~predicted & actual).sum(1),
            ],
            dim=1,
        )
        self.counts = counts if self.counts is None else self.counts + counts
        self.count += int(predicted.shape[1])

    def compute(self) -> dict[str, dict[str, float]]:
        if self.counts is None:
            return {t: binary_scores(0, 0, 0, 0) for t in self.tasks}
        counts = self.counts.cpu().tolist()
        return {t: binary_scores(*counts[i], self.count) for i, t in enumerate(self.tasks)}


__all__ = ["CelebA", "CelebAMeter", "binary_scores", "task_loss"]
