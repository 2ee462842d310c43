"""Cityscapes: semantic segmentation (S), disparity (D) and instance offsets (I).

PROTOCOL.md "Cityscapes (S_D_I)", after Sener & Koltun 2018 and the main study. The data
(:mod:`smto.data.cityscapes`) is read from the official layout at 512 x 256 or 256 x 128
(any size can be asked for), with the study's split files (2,380 train and 595 val images
from the official train set, the official val set of 500 as test) and its augmentation.
Model: a dilated ResNet-18 or -50 (output stride 8) with one DeepLabV3 head per task
(:mod:`smto.models.deeplab`), or MTAN's SegNet (:mod:`smto.models.segnet`, Elich et al.'s
other network). Losses: cross-entropy ignoring -1 for S, the L1 over the
labelled pixels for D and I. Metrics: S pixel accuracy and mIoU from one confusion matrix
over the split; D absolute and relative error; I absolute error (all over labelled pixels of
the whole split, not averaged per batch). The confusion matrix is one ``torch.bincount`` per
batch on the outputs' device, which is what torchmetrics' confusion-matrix metrics compute
internally: exact, no extra dependency, and the mIoU rule (the mean over the classes present
in the targets or the predictions, Cityscapes' own) is explicit here. The relative disparity
error is over the labelled pixels with d > 0 (raw disparity 1 gives d = 0).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping, Sequence
from numbers import Real
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from smto.data.cityscapes import CLASSES
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
from smto.problems.images import check_replacement
from smto.problems.loading import loader_batches

PIXEL_ACCURACY = Metric("pixel_accuracy", higher_is_better=True)
MIOU = Metric("miou", higher_is_better=True)
ABS_ERR = Metric("abs_err", higher_is_better=False)
REL_ERR = Metric("rel_err", higher_is_better=False)
BACKBONES = ("resnet18", "resnet50")
SPLIT_MODES = ("original", "seed")
AUGMENT = ("rotate_flip", "scale_crop", "none")
ARCHITECTURES = ("deeplab", "segnet")
SEGNET_DOWNSAMPLING = 32
"""SegNet pools five times: its input's height and width must be multiples of 32."""
SPLIT_DIR = Path("seed_splits") / "cityscapes"
OUTPUT_CHANNELS = {"D": 1, "I": 2}
ROOT_ENV = "SMTO_CITYSCAPES"


class Cityscapes(Problem):
    """The Cityscapes problem over the selected tasks.

    Args:
        tasks: e.g. "S_D_I" (the default) or "S_D".
        root: the Cityscapes tree (``leftImg8bit/``, ``gtFine/``, ``disparity/``); default
            ``$SMTO_CITYSCAPES``, else ``<data dir>/cityscapes`` (the environment variable
            keeps a machine's path out of the run configurations).
        data_dir: the data directory (``SMTO_DATA`` by default): the split files are
            ``seed_splits/cityscapes/{train,val,test}.txt`` in it; the cache goes beside it.
        split: "original" (the study's split files, from ``split_dir`` or the data
            directory) or "seed" (the same rule, 80 % / 20 % of the official train set,
            shuffled with ``seed``; not the study's images).
        split_dir: the directory of the split files (only with "original").
        seed: the shuffle's seed (only with "seed").
        shape: (width, height) of images and labels; the study uses (512, 256) and
            (256, 128).
        classes: 19 (Cityscapes' train ids) or 7 (its categories).
        architecture: "deeplab" (the dilated ResNet with one DeepLabV3 head per task, the
            main study's) or "segnet" (MTAN's SegNet from scratch, one of Elich et al.'s two).
        backbone: "resnet18" or "resnet50", dilated to output stride 8 (deeplab only).
        pretrained: torchvision's ImageNet weights for the backbone: a weights file
            (``resnet18-f37072fd.pth``), "torchvision" (fetched with torchvision where it is
            installed), or None (from scratch, with a warning: the study pre-trains).
        augment: the training batches' augmentation: "rotate_flip" (the main study's),
            "scale_crop" (Elich et al.'s, MTAN's ``RandomScaleCrop`` and a flip) or "none".
        limits: ``(train, val, test)``, at most this many images of each split (for quick
            runs: only those are decoded and cached).
        workers: the DataLoader's worker processes (also the processes that build the cache).
        aspp_dropout: the dropout of each DeepLab head's ASPP (torchvision's 0.5; deeplab
            only).
    """

    name = "cityscapes"
    all_tasks = ("S", "D", "I")

    def __init__(
        self,
        tasks: Sequence[str] | str = "S_D_I",
        root: str | PathLike[str] | None = None,
        data_dir: str | PathLike[str] | None = None,
        split: str = "original",
        split_dir: str | PathLike[str] | None = None,
        seed: int = 0,
        shape: Sequence[int] = (512, 256),
        classes: int = 19,
        backbone: str = "resnet18",
        pretrained: str | PathLike[str] | None = None,
        augment: str = "rotate_flip",
        limits: Sequence[int | None] = (None, None, None),
        workers: int = 2,
        aspp_dropout: float = 0.5,
        architecture: str = "deeplab",
    ) -> None:
        super().__init__(tasks)
        self.check_options(
            root=root,
            data_dir=data_dir,
            split=split,
            split_dir=split_dir,
            seed=seed,
            shape=shape,
            classes=classes,
            backbone=backbone,
            pretrained=pretrained,
            augment=augment,
            limits=limits,
            workers=workers,
            aspp_dropout=aspp_dropout,
            architecture=architecture,
        )
        from smto.data import cityscapes as data
        from smto.data import paths

        self.shape = (int(shape[0]), int(shape[1]))
        self.classes = int(classes)
        self.backbone = backbone
        self.pretrained = pretrained
        self.augment = augment
        self.workers = int(workers)
        self.aspp_dropout = float(aspp_dropout)
        self.architecture = architecture
        base = paths.data_dir(data_dir)
        if root is None:
            root = os.environ.get(ROOT_ENV) or base / "cityscapes"
        layout = data.find_layout(root)
        if split == "original":
            folder = Path(split_dir).expanduser() if split_dir is not None else base / SPLIT_DIR
            entries = {s: data.read_split_file(folder / data.SPLIT_FILES[s]) for s in SPLITS}
        else:
            entries = data.seeded_splits(layout, seed)
        entries = {s: e if n is None else e[:n] for (s, e), n in zip(entries.items(), limits)}
        files = {s: data.check_files(layout, entries[s], s) for s in SPLITS}
        cache = paths.cache_dir(None, data_dir) / "cityscapes"
        self._datasets = {
            s: data.CityscapesSplit(
                data.load_split(files[s], self.shape, cache, s, self.workers),
                self.classes,
                "scale_crop" if augment == "scale_crop" else "rotate_flip",
            )
            for s in SPLITS
        }

    @classmethod
    def check_options(cls, **options: Any) -> None:
        values = cls.options_with_defaults(options)
        check_common_options(values, paths=("root", "data_dir", "split_dir"))
        check_choices(
            values,
            {
                "split": SPLIT_MODES,
                "backbone": BACKBONES,
                "classes": CLASSES,
                "augment": AUGMENT,
                "architecture": ARCHITECTURES,
            },
        )
        if values["architecture"] == "segnet":
            defaults = cls.option_defaults()
            given = [
                n for n in ("backbone", "pretrained", "aspp_dropout") if values[n] != defaults[n]
            ]
            if given:
                raise ConfigError(
                    f"{', '.join(given)} apply to architecture='deeplab' only (SegNet has no "
                    "backbone to choose and is trained from scratch, as in MTAN); drop them, or "
                    "set architecture='deeplab'"
                )
            if any(int(v) % SEGNET_DOWNSAMPLING for v in values["shape"]):
                raise ConfigError(
                    f"shape {list(values['shape'])}: SegNet needs a width and a height that "
                    f"are multiples of {SEGNET_DOWNSAMPLING}"
                )
        dropout = values["aspp_dropout"]
        if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0 <= dropout < 1:
            raise ConfigError(f"aspp_dropout must be a number in [0, 1), got {dropout!r}")
        if values["split"] == "original" and values["seed"] != 0:
            raise ConfigError(
                f"seed={values['seed']!r} has no effect with split='original' (the split files "
                "fix the images); drop it, or use split='seed'"
            )
        if values["split"] == "seed" and values["split_dir"] is not None:
            raise ConfigError("split_dir is read only with split='original'; drop it")

    def split_size(self, split: str) -> int:
        return len(self._datasets[split])

    def batches(
        self, split: str, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """The split's batches through a DataLoader; training batches (the train split with a
        generator) are augmented unless ``augment`` is "none"."""
        training = split == "train" and generator is not None
        yield from loader_batches(
            self._datasets[split],
            self.tasks,
            batch_size,
            generator,
            self.workers,
            training=training,
            augment=self.augment != "none",
        )

    def split_images(self, split: str) -> np.ndarray:
        """The split's (N, H, W, 3) uint8 RGB images, for
        :mod:`smto.problems.images`."""
        return self._datasets[split].arrays["image"]

    def with_split_images(self, split: str, images: np.ndarray) -> Cityscapes:
        """A copy reading ``images`` for ``split`` (the targets and other splits shared)."""
        check_replacement(split, self.split_images(split), images)
        dataset = copy.copy(self._datasets[split])
        dataset.arrays = {**dataset.arrays, "image": images}
        problem = copy.copy(self)
        problem._datasets = {**self._datasets, split: dataset}
        return problem

    def make_model(self, dropout: float = 0.0) -> SharedEncoderModel:
        if dropout != 0 and self.architecture == "segnet":
            raise ConfigError(f"SegNet has no dropout; got dropout={dropout!r}")
        if dropout != 0:
            raise ConfigError(
                f"the Cityscapes model's dropout is the heads' ASPP dropout: set the problem "
                f"option aspp_dropout instead of dropout={dropout!r}"
            )
        channels = {t: self.classes if t == "S" else OUTPUT_CHANNELS[t] for t in self.tasks}
        if self.architecture == "segnet":
            from smto.models.segnet import segnet_model

            return segnet_model(channels)
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
        return torch.stack([task_loss(t, outputs[t], targets[t]) for t in self.tasks])

    @classmethod
    def task_metrics(cls, task: str) -> tuple[Metric, ...]:
        return {"S": (PIXEL_ACCURACY, MIOU), "D": (ABS_ERR, REL_ERR), "I": (ABS_ERR,)}[task]

    def loss_types(self) -> tuple[str, ...]:
        return tuple("classification" if t == "S" else "l1" for t in self.tasks)

    def new_meter(self) -> Meter:
        return CityscapesMeter(self.tasks, self.classes)


def task_loss(task: str, output: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy over the non-ignored pixels (S), or the mean absolute error over the
    labelled entries, NaN marking the others (D, I); 0 where a batch has none."""
    if task == "S":
        total = functional.cross_entropy(output, target, ignore_index=-1, reduction="sum")
        return total / (target >= 0).sum().clamp(min=1)
    prediction = output.squeeze(1) if task == "D" else output
    labelled = ~torch.isnan(target)
    errors = torch.where(labelled, prediction - target.nan_to_num(), 0.0).abs()
    return errors.sum() / labelled.sum().clamp(min=1)


def confusion_matrix(prediction: Tensor, target: Tensor, classes: int) -> Tensor:
    """(classes, classes) counts, rows the true class, columns the predicted one, over the
    pixels whose target is not ignored (-1)."""
    kept = target >= 0
    index = target[kept] * classes + prediction[kept]
    return torch.bincount(index, minlength=classes * classes).view(classes, classes)


def segmentation_scores(confusion: Tensor) -> dict[str, float]:
    """Pixel accuracy and mIoU of a confusion matrix; the mean IoU is over the classes present
    in the targets or the predictions (a class absent from both has no IoU, as in
    Cityscapes' evaluation; one only predicted counts 0)."""
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    present = union > 0
    return {
        "pixel_accuracy": float(true_positive.sum() / confusion.sum()),
        "miou": float((true_positive[present] / union[present]).mean()),
    }


class CityscapesMeter(Meter):
    """One confusion matrix (S) and sums of errors over labelled pixels (D, I) over a split,
    kept on the outputs' device."""

    def __init__(self, tasks: Sequence[str], classes: int) -> None:
        self.tasks = tuple(tasks)
        self.classes = classes
        self.sums: dict[str, Tensor] = {}

    def _add(self, name: str, value: Tensor) -> None:
        self.sums[name] = self.sums[name] + value if name in self.sums else value

    def update(self, outputs: Mapping[str, Tensor], batch: Batch) -> None:
        for task in self.tasks:
            output, target = outputs[task].detach(), batch.targets[task]
            if task == "S":
                self._add("confusion", confusion_matrix(output.argmax(1), target, self.classes))
                continue
            prediction = output.squeeze(1) if task == "D" else output
            labelled = ~torch.isnan(target)
            error = (prediction - target).abs()[labelled].double()
            self._add(f"{task}_abs", error.sum())
            self._add(f"{task}_count", labelled.sum())
            if task == "D":
                positive = labelled & (target > 0)
                relative = ((prediction - target).abs() / target)[positive].double()
                self._add("D_rel", relative.sum())
                self._add("D_rel_count", positive.sum())

    def compute(self) -> dict[str, dict[str, float]]:
        sums = {k: v.cpu() for k, v in self.sums.items()}
        result: dict[str, dict[str, float]] = {}
        for task in self.tasks:
            if task == "S":
                result[task] = segmentation_scores(sums["confusion"])
                continue
            result[task] = {"abs_err": _ratio(sums[f"{task}_abs"], sums[f"{task}_count"])}
            if task == "D":
                result[task]["rel_err"] = _ratio(sums["D_rel"], sums["D_rel_count"])
        return result


def _ratio(total: Tensor, count: Tensor) -> float:
    return float(total) / int(count) if int(count) > 0 else float("nan")


__all__ = ["Cityscapes", "CityscapesMeter", "confusion_matrix", "segmentation_scores", "task_loss"]
