"""The Cityscapes model: a dilated ResNet shared by one DeepLabV3 head per task.

DeepLabV3 (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image
Segmentation"): atrous spatial pyramid pooling (ASPP) over the output-stride-8 features of
:class:`~smto.models.resnet.DilatedResNet`, a 3x3 conv, a 1x1 classifier, and bilinear
upsampling to the label size. The heads have torchvision's structure and sub-module names
(``torchvision.models.segmentation.deeplabv3``), so a torchvision DeepLabHead's state dict
loads into one.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from smto.errors import ConfigError
from smto.models.base import SharedEncoderModel
from smto.models.resnet import DilatedResNet, fetch_torchvision_weights, load_torchvision_weights

BACKBONES = {"resnet18": 18, "resnet50": 50}
"""The values of :func:`deeplab_model`'s ``backbone`` and their ResNet depths."""


class ASPPPooling(nn.Sequential):
    """Image pooling: global average, 1x1 conv+BN+ReLU, upsampled back to the input's size;
    it gives every position the context of the whole image."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(
            super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False
        )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 conv, one 3x3 conv of each dilation in
    ``rates``, and image pooling, each with BN+ReLU, concatenated and projected by a 1x1
    conv+BN+ReLU+Dropout to ``out_channels``; the spatial size is kept."""

    def __init__(
        self,
        in_channels: int,
        rates: Sequence[int] = (12, 24, 36),
        out_channels: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        branches: list[nn.Module] = [
            nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(),
            )
        ]
        for rate in rates:
            branches.append(
                nn.Sequential(
                    nn.Conv2d(
                        in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False
                    ),
                    nn.BatchNorm2d(out_channels),
                    nn.ReLU(),
                )
            )
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    """ASPP, 3x3 conv(256)+BN+ReLU, 1x1 conv to ``out_channels``, then bilinear upsampling
    to ``output_size`` (H, W): (B, out_channels, H, W), the channel kept for one-channel
    tasks (depth). Modules 0..4 as in torchvision's DeepLabHead."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        output_size: tuple[int, int],
        dropout: float = 0.5,
    ) -> None:
        super().__init__(
            ASPP(in_channels, dropout=dropout),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(),
            nn.Conv2d(256, out_channels, 1),
        )
        self.output_size = tuple(output_size)

    def forward(self, features: Tensor) -> Tensor:
        logits = super().forward(features)
        return F.interpolate(logits, size=self.output_size, mode="bilinear", align_corners=False)


def deeplab_model(
    task_channels: Mapping[str, int],
    backbone: str = "resnet18",
    output_size: tuple[int, int] = (256, 512),
    dropout: float = 0.5,
    pretrained: str | os.PathLike | Mapping[str, Tensor] | None = None,
) -> SharedEncoderModel:
    """A :class:`DilatedResNet` ``backbone`` shared by one :class:`DeepLabHead` per task
    (task name -> output channels, in order), each upsampling to ``output_size``.

    ``pretrained``: torchvision's ImageNet weights for the encoder, as a file or a state
    dict (:func:`~smto.models.resnet.load_torchvision_weights`), or "torchvision" to
    download them; ``None`` starts from scratch, with a warning, since the study's numbers
    assume ImageNet pre-training.
    """
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown backbone {backbone!r}; valid backbones: {list(BACKBONES)}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    if len(output_size) != 2 or not all(isinstance(s, int) and s > 0 for s in output_size):
        raise ConfigError(f"output_size must be two positive integers (H, W), got {output_size}")
    for task, channels in task_channels.items():
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ConfigError(f"task {task!r}: the output channels must be a positive integer")
    depth = BACKBONES[backbone]
    encoder = DilatedResNet(depth)
    if pretrained is None:
        warnings.warn(
            f"the {backbone} encoder starts from scratch, while the study's numbers assume "
            f"ImageNet pre-training: give torchvision's {backbone} weights file (smto train "
            "--pretrained PATH, the problem option pretrained)",
            UserWarning,
            stacklevel=2,
        )
    elif pretrained == "torchvision":
        load_torchvision_weights(encoder, fetch_torchvision_weights(depth))
    else:
        load_torchvision_weights(encoder, pretrained)
    heads = {
        task: DeepLabHead(encoder.out_channels, channels, output_size, dropout)
        for task, channels in task_channels.items()
    }
    return SharedEncoderModel(encoder, heads)
