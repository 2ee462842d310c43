"""The CelebA model: a plain ResNet, globally average-pooled, with one linear head per task.

Elich et al. (App. A3) train "a ResNet-18 with an additional single linear layer for each
head" on CelebA. The encoder is torchvision's ResNet (He et al. 2016) up to its average
pooling: :class:`~smto.models.resnet.DilatedResNet` with ``dilated=False`` (output stride
32), the global average pool and a flatten, giving (B, 512) for ResNet-18. Its parameters
keep torchvision's names, so torchvision's ImageNet weight files load into it with
:func:`~smto.models.resnet.load_torchvision_weights` (``fc`` dropped). Each head is one
``nn.Linear(512, 1)`` whose output is squeezed to (B,): one logit per attribute.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from torch import Tensor, nn
from torch.nn import functional

from smto.errors import ConfigError
from smto.models.base import SharedEncoderModel
from smto.models.resnet import DilatedResNet, fetch_torchvision_weights, load_torchvision_weights


class PooledResNet(DilatedResNet):
    """torchvision's plain ResNet-``depth`` up to its global average pooling: ``forward``
    gives (B, out_channels) features (512 for ResNet-18, 2048 for ResNet-50)."""

    def __init__(self, depth: int = 18) -> None:
        super().__init__(depth, dilated=False)

    def forward(self, x: Tensor) -> Tensor:
        return functional.adaptive_avg_pool2d(super().forward(x), 1).flatten(1)


class LogitHead(nn.Module):
    """One linear layer to a single logit, squeezed to (B,); its parameters are ``linear.*``."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features).squeeze(-1)


def resnet_classifier(
    tasks: Sequence[str],
    depth: int = 18,
    pretrained: str | os.PathLike | Mapping[str, Tensor] | None = None,
) -> SharedEncoderModel:
    """A :class:`PooledResNet` shared by one :class:`LogitHead` per task (in order).

    ``pretrained``: torchvision's ImageNet weights for the encoder (a file or a state dict,
    :func:`~smto.models.resnet.load_torchvision_weights`), "torchvision" to download them, or
    None (from scratch, without a warning: Elich et al. do not say they pre-train on CelebA).
    """
    if not tasks:
        raise ConfigError("a classifier needs at least one task")
    encoder = PooledResNet(depth)
    if pretrained == "torchvision":
        load_torchvision_weights(encoder, fetch_torchvision_weights(depth))
    elif pretrained is not None:
        load_torchvision_weights(encoder, pretrained)
    heads = {task: LogitHead(encoder.out_channels) for task in tasks}
    return SharedEncoderModel(encoder, heads)


__all__ = ["LogitHead", "PooledResNet", "resnet_classifier"]
