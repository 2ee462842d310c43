"""NYUv2: semantic segmentation (S, 13 classes), depth (D) and surface normals (N).

Elich et al.'s NYUv2 benchmark (App. A3), after MTAN and LibMTL. The data
(:mod:`smto.data.nyuv2`) is the preprocessed 288 x 384 NYUv2 of MTAN, with LibMTL's split
(636 train and 159 val images of the official train set, the official 654 test images) and
MTAN's augmentation (random scale and crop, horizontal flip). Models: SegNet
(:mod:`smto.models.segnet`, the default) or a dilated ResNet with one DeepLabV3 head per task
(:mod:`smto.models.deeplab`). Losses: cross-entropy ignoring unlabelled pixels (S), the L1
over the valid pixels (D), and 1 - the cosine similarity between the L2-normalized prediction
and the (unit) target over the valid pixels (N; Elich et al.'s eq. 24, MTAN's dot-product
loss); each 0 where a batch has no labelled pixel. The model's normals head is raw: the
problem normalizes it, in the loss and in the meter.

Metrics, each over all labelled pixels of the split (not averaged per batch): S mIoU and
pixel accuracy from one confusion matrix (:func:`~smto.problems.cityscapes.confusion_matrix`);
D absolute and relative error; N the mean and the median angle between prediction and target
in degrees and the fractions of pixels with an angle below 11.25, 22.5 and 30 degrees (strictly
below, as MTAN and LibMTL). The median is exact, as LibMTL's (``np.median`` of all angles):
the meter keeps every valid pixel's angle as float32 on the outputs' device (at most 4 bytes x
654 x 288 x 384 = 290 MB for the test split, a small share of an accelerator holding the
model), and takes the mean of the two middle values of an even count, as ``np.median``. A
histogram would bound the memory, but a median exact only to its bin width would not be the
number the papers report.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from numbers import Real
from os import PathLike
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from smto.errors import ConfigError
from smto.models.base import SharedEncoderModel
from smto.problems.base import (
    SPLITS,
    Batch,
    Meter,
    Metric,
    Problem,
    check_choices,
    check_common_options,
)
from smto.problems.cityscapes import (
    ABS_ERR,
    MIOU,
    PIXEL_ACCURACY,
    REL_ERR,
    CityscapesMeter,
    task_loss,
)
from smto.problems.images import check_replacement, to_uint8, to_unit_float
from smto.problems.loading import loader_batches

CLASSES = 13
OUTPUT_CHANNELS = {"S": CLASSES, "D": 1, "N": 3}
ARCHITECTURES = ("segnet", "deeplab")
BACKBONES = ("resnet18", "resnet50")
DEFAULT_BACKBONE = "resnet50"
DEFAULT_ASPP_DROPOUT = 0.5
SPLIT_MODES = ("libmtl", "seed")
SEGNET_DOWNSAMPLING = 32
"""SegNet pools five times: its input's height and width must be multiples of 32."""
ROOT_ENV = "SMTO_NYUV2"
THRESHOLDS = (11.25, 22.5, 30.0)
MEAN_ANGLE = Metric("mean_angle", higher_is_better=False)
MEDIAN_ANGLE = Metric("median_angle", higher_is_better=False)
WITHIN = tuple(Metric(f"within_{t:g}", higher_is_better=True) for t in THRESHOLDS)


class NYUv2(Problem):
    """The NYUv2 problem over the selected tasks.

    Args:
        tasks: e.g. "S_D_N" (the default) or "S_D".
        root: the preprocessed tree (``train/`` and ``val/``, each with ``image/``,
            ``label/``, ``depth/``, ``normal/``); default ``$SMTO_NYUV2``, else
            ``<data dir>/nyuv2``.
        data_dir: the data directory (``SMTO_DATA`` by default); the cache goes beside it.
        split: "libmtl" (LibMTL's fixed 159 val images, as Elich et al.) or "seed" (4/5 and
            1/5 of the official train images found in the tree, 636 / 159 of the 795, drawn
            with ``seed``; not LibMTL's images).
        seed: the draw's seed (only with "seed").
        shape: (width, height) of the arrays, checked in every file: the preprocessed set's
            (384, 288); another size only for a tree built at it (the tests' small fakes).
        limits: ``(train, val, test)``, at most this many images of each split (for quick
            runs: only those are read and cached).
        augment: MTAN's random scale-crop and flip on training batches (Elich et al. use it).
        workers: the DataLoader's worker processes.
        architecture: "segnet" (MTAN's SegNet, from scratch) or "deeplab" (a dilated ResNet
            with DeepLabV3 heads).
        backbone: "resnet18" or "resnet50" (deeplab only; default "resnet50", LibMTL's).
        pretrained: torchvision's ImageNet weights for the deeplab backbone: a weights file,
            "torchvision", or None (from scratch, with a warning).
        aspp_dropout: the dropout of each DeepLab head's ASPP (deeplab only; default 0.5).
    """

    name = "nyuv2"
    all_tasks = ("S", "D", "N")

    def __init__(
        self,
        tasks: Sequence[str] | str = "S_D_N",
        root: str | PathLike[str] | None = None,
        data_dir: str | PathLike[str] | None = None,
        split: str = "libmtl",
        seed: int = 0,
        shape: Sequence[int] = (384, 288),
        limits: Sequence[int | None] = (None, None, None),
        augment: bool = True,
        workers: int = 2,
        architecture: str = "segnet",
        backbone: str | None = None,
        pretrained: str | PathLike[str] | None = None,
        aspp_dropout: float | None = None,
    ) -> None:
        super().__init__(tasks)
        self.check_options(
            root=root,
            data_dir=data_dir,
            split=split,
            seed=seed,
            shape=shape,
            limits=limits,
            augment=augment,
            workers=workers,
            architecture=architecture,
            backbone=backbone,
            pretrained=pretrained,
            aspp_dropout=aspp_dropout,
        )
        from smto.data import nyuv2 as data
        from smto.data import paths

        self.shape = (int(shape[0]), int(shape[1]))
        self.augment = augment
        self.workers = int(workers)
        self.architecture = architecture
        self.backbone = backbone or DEFAULT_BACKBONE
        self.pretrained = pretrained
        self.aspp_dropout = DEFAULT_ASPP_DROPOUT if aspp_dropout is None else float(aspp_dropout)
        if root is None:
            root = os.environ.get(ROOT_ENV) or paths.data_dir(data_dir) / "nyuv2"
        root = data.find_root(root)
        if split == "libmtl":
            entries = data.libmtl_splits()
        else:
            counts = [data.official_count(root, official) for official in ("train", "test")]
            entries = data.seeded_splits(seed, *counts)
        entries = {s: e if n is None else e[:n] for (s, e), n in zip(entries.items(), limits)}
        files = {s: data.check_files(root, entries[s], s) for s in SPLITS}
        cache = paths.cache_dir(None, data_dir) / "nyuv2"
        self._datasets = {
            s: data.NYUv2Split(data.load_split(files[s], self.shape, cache, s)) for s in SPLITS
        }

    @classmethod
    def check_options(cls, **options: Any) -> None:
        values = cls.options_with_defaults(options)
        check_common_options(values, paths=("root", "data_dir"))
        check_choices(values, {"split": SPLIT_MODES, "architecture": ARCHITECTURES})
        if values["backbone"] is not None and values["backbone"] not in BACKBONES:
            raise ConfigError(
                f"backbone must be one of {', '.join(map(repr, BACKBONES))}, "
                f"got {values['backbone']!r}"
            )
        if not isinstance(values["augment"], bool):
            raise ConfigError(f"augment must be True or False, got {values['augment']!r}")
        dropout = values["aspp_dropout"]
        if dropout is not None and (
            isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0 <= dropout < 1
        ):
            raise ConfigError(f"aspp_dropout must be a number in [0, 1), got {dropout!r}")
        if values["architecture"] == "segnet":
            given = [n for n in ("backbone", "pretrained", "aspp_dropout") if values[n] is not None]
            if given:
                raise ConfigError(
                    f"{', '.join(given)} apply to architecture='deeplab' only (SegNet has no "
                    "backbone to choose and is trained from scratch, as in MTAN and LibMTL); "
                    "drop them, or set architecture='deeplab'"
                )
            if any(int(v) % SEGNET_DOWNSAMPLING for v in values["shape"]):
                raise ConfigError(
                    f"shape {list(values['shape'])}: SegNet needs a width and a height that "
                    f"are multiples of {SEGNET_DOWNSAMPLING}"
                )
        if values["split"] == "libmtl" and values["seed"] != 0:
            raise ConfigError(
                f"seed={values['seed']!r} has no effect with split='libmtl' (LibMTL's list fixes "
                "the images); drop it, or use split='seed'"
            )

    def split_size(self, split: str) -> int:
        return len(self._datasets[split])

    def batches(
        self, split: str, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """The split's batches through a DataLoader; training batches (the train split with a
        generator) are augmented when ``augment`` is on."""
        training = split == "train" and generator is not None
        yield from loader_batches(
            self._datasets[split],
            self.tasks,
            batch_size,
            generator,
            self.workers,
            training=training,
            augment=self.augment,
        )

    def split_images(self, split: str) -> np.ndarray:
        """The split's images as (N, H, W, 3) uint8 RGB, for :mod:`smto.problems.images`:
        the stored [0, 1] floats rounded to 1/255."""
        return to_uint8(self._datasets[split].arrays["image"])

    def with_split_images(self, split: str, images: np.ndarray) -> NYUv2:
        """A copy reading ``images`` (uint8, back to [0, 1] floats) for ``split``; the targets
        and the other splits are shared."""
        current = self._datasets[split].arrays["image"]
        check_replacement(split, np.empty(current.shape, np.uint8), images)
        dataset = copy.copy(self._datasets[split])
        dataset.arrays = {**dataset.arrays, "image": to_unit_float(images)}
        problem = copy.copy(self)
        problem._datasets = {**self._datasets, split: dataset}
        return problem

    def make_model(self, dropout: float = 0.0) -> SharedEncoderModel:
        channels = {t: OUTPUT_CHANNELS[t] for t in self.tasks}
        if self.architecture == "segnet":
            if dropout != 0:
                raise ConfigError(f"SegNet has no dropout; got dropout={dropout!r}")
            from smto.models.segnet import segnet_model

            return segnet_model(channels)
        if dropout != 0:
            raise ConfigError(
                f"the DeepLab model's dropout is the heads' ASPP dropout: set the problem "
                f"option aspp_dropout instead of dropout={dropout!r}"
            )
        from smto.models.deeplab import deeplab_model

        width, height = self.shape
        return deeplab_model(
            channels,
            backbone=self.backbone,
            output_size=(height, width),
            dropout=self.aspp_dropout,
            pretrained=self.pretrained,
        )

    def losses(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        return torch.stack([nyuv2_loss(t, outputs[t], targets[t]) for t in self.tasks])

    @classmethod
    def task_metrics(cls, task: str) -> tuple[Metric, ...]:
        return {
            "S": (MIOU, PIXEL_ACCURACY),
            "D": (ABS_ERR, REL_ERR),
            "N": (MEAN_ANGLE, MEDIAN_ANGLE, *WITHIN),
        }[task]

    def loss_types(self) -> tuple[str, ...]:
        return tuple({"S": "classification", "D": "l1", "N": "cosine"}[t] for t in self.tasks)

    def new_meter(self) -> Meter:
        return NYUv2Meter(self.tasks)


def normal_loss(output: Tensor, target: Tensor) -> Tensor:
    """1 - the cosine similarity between the L2-normalized (B, 3, H, W) ``output`` and the
    unit ``target`` (NaN where invalid), averaged over the valid pixels; 0 where there are
    none."""
    valid = ~torch.isnan(target[:, 0])
    cosine = (functional.normalize(output, dim=1) * target.nan_to_num()).sum(1)
    return torch.where(valid, 1.0 - cosine, 0.0).sum() / valid.sum().clamp(min=1)


def nyuv2_loss(task: str, output: Tensor, target: Tensor) -> Tensor:
    """The loss of ``task``: Cityscapes' :func:`~smto.problems.cityscapes.task_loss` for S
    (cross-entropy ignoring -1) and D (L1 over the pixels whose target is not NaN), and
    :func:`normal_loss` for N."""
    return normal_loss(output, target) if task == "N" else task_loss(task, output, target)


def normal_angles(output: Tensor, target: Tensor) -> Tensor:
    """The angle in degrees between the normalized ``output`` and the ``target`` at each
    valid pixel (target not NaN), flattened."""
    valid = ~torch.isnan(target[:, 0])
    cosine = (functional.normalize(output.float(), dim=1) * target.nan_to_num()).sum(1)
    return torch.rad2deg(torch.acos(cosine.clamp(-1.0, 1.0)))[valid]


def median(values: Tensor) -> float:
    """The median of a 1-D tensor, the mean of the two middle values for an even count (as
    ``np.median``); NaN for none."""
    n = len(values)
    if n == 0:
        return math.nan
    low = values.kthvalue((n + 1) // 2).values.double()
    high = values.kthvalue(n // 2 + 1).values.double()
    return float((low + high) / 2)


def angle_scores(angles: Tensor) -> dict[str, float]:
    """The normals' metrics of the angles (degrees) of all valid pixels of a split."""
    if len(angles) == 0:
        return {m.name: math.nan for m in (MEAN_ANGLE, MEDIAN_ANGLE, *WITHIN)}
    scores = {"mean_angle": float(angles.double().mean()), "median_angle": median(angles)}
    for metric, threshold in zip(WITHIN, THRESHOLDS):
        scores[metric.name] = float((angles < threshold).double().mean())
    return scores


class NYUv2Meter(Meter):
    """Over a split: one confusion matrix (S) and sums of depth errors over valid pixels (D),
    as :class:`~smto.problems.cityscapes.CityscapesMeter`, and every valid pixel's normal
    angle (N, float32 on the outputs' device, for the exact median)."""

    def __init__(self, tasks: Sequence[str]) -> None:
        self.tasks = tuple(tasks)
        self.dense = CityscapesMeter([t for t in self.tasks if t != "N"], CLASSES)
        self.angles: list[Tensor] = []

    def update(self, outputs: Mapping[str, Tensor], batch: Batch) -> None:
        self.dense.update(outputs, batch)
        if "N" in self.tasks:
            self.angles.append(normal_angles(outputs["N"].detach(), batch.targets["N"]))

    def compute(self) -> dict[str, dict[str, float]]:
        result = self.dense.compute()
        if "N" in self.tasks:
            angles = torch.cat(self.angles) if self.angles else torch.zeros(0)
            result["N"] = angle_scores(angles)
        return {t: result[t] for t in self.tasks}


__all__ = [
    "NYUv2",
    "NYUv2Meter",
    "angle_scores",
    "median",
    "normal_angles",
    "normal_loss",
    "nyuv2_loss",
]
