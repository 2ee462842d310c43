"""The Cityscapes encoder: a dilated ResNet-18 / ResNet-50 of output stride 8.

The residual network of He et al. 2016 ("Deep Residual Learning for Image Recognition"),
built as torchvision's ResNet v1.5 (the stride of a Bottleneck on its 3x3 conv2), without
the average pooling and the classifier, and with the parameter and buffer names of
torchvision's, so that its ImageNet weight files load strictly once ``fc`` is dropped.

Output stride 8 as in the dilated networks of Yu & Koltun 2016 ("Multi-Scale Context
Aggregation by Dilated Convolutions"), by the rule of the CSAIL semantic-segmentation code
that MTAN and LibMTL (``resnet_dilated``) use: layer3 is dilated by d = 2 and layer4 by
d = 4; there the conv that carried the stride 2 gets stride 1 and, if 3x3, dilation d // 2,
every other 3x3 conv gets dilation d (padding = dilation throughout), and the 1x1 downsample
conv gets stride 1. An H x W image gives a ceil(H/8) x ceil(W/8) feature map.

``DilatedResNet(depth, dilated=False)`` is the plain ResNet (output stride 32) that the
CelebA classifier pools (:mod:`smto.models.classifier`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from smto.errors import ConfigError, DataError, MissingError, MissingExtraError

DEPTHS = (18, 50)
"""The depths :class:`DilatedResNet` builds."""

_DILATIONS = (1, 1, 2, 4)
"""The dilation d of layer1..layer4 (1: the layer keeps its stride)."""


def _conv3x3(inplanes: int, planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs (the first carries the stride) and the identity or downsample shortcut;
    ``dilations`` are those of conv1 and conv2."""

    expansion = 1
    convs3x3 = 2

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        dilations: tuple[int, ...],
        downsample: nn.Module | None,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride, dilations[0])
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes, 1, dilations[1])
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride, v1.5), 1x1 expand by 4, and the shortcut;
    ``dilations`` holds that of conv2."""

    expansion = 4
    convs3x3 = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        dilations: tuple[int, ...],
        downsample: nn.Module | None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilations[0])
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_BLOCKS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


class DilatedResNet(nn.Module):
    """ResNet-``depth`` (18 or 50) up to layer4, of output stride 8 (module docstring);
    ``forward`` returns layer4's (B, out_channels, ceil(H/8), ceil(W/8)) feature map.

    ``dilated=False`` builds torchvision's plain ResNet instead (every layer keeps its stride
    and no conv is dilated: output stride 32, a ceil(H/32) x ceil(W/32) map), with the same
    parameter names."""

    def __init__(self, depth: int, dilated: bool = True) -> None:
        super().__init__()
        if depth not in _BLOCKS:
            raise ConfigError(f"no dilated ResNet of depth {depth!r}; valid depths: {DEPTHS}")
        block, counts = _BLOCKS[depth]
        self.depth = depth
        self.dilated = bool(dilated)
        dilations = _DILATIONS if self.dilated else (1, 1, 1, 1)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, counts[0], 1, dilations[0])
        self.layer2 = self._make_layer(block, 128, counts[1], 2, dilations[1])
        self.layer3 = self._make_layer(block, 256, counts[2], 2, dilations[2])
        self.layer4 = self._make_layer(block, 512, counts[3], 2, dilations[3])
        self.out_channels = 512 * block.expansion
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        count: int,
        stride: int,
        dilation: int,
    ) -> nn.Sequential:
        """``count`` blocks; with ``dilation`` d > 1 the stride becomes 1, the first block's
        strided conv gets dilation d // 2 and every other 3x3 conv d."""
        if dilation > 1:
            stride = 1
            first = (dilation // 2,) + (dilation,) * (block.convs3x3 - 1)
        else:
            first = (1,) * block.convs3x3
        width = planes * block.expansion
        downsample = None
        if stride != 1 or self.inplanes != width:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, width, 1, stride=stride, bias=False),
                nn.BatchNorm2d(width),
            )
        layers = [block(self.inplanes, planes, stride, first, downsample)]
        self.inplanes = width
        rest = (dilation,) * block.convs3x3
        layers += [block(width, planes, 1, rest, None) for _ in range(1, count)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


_CLASSIFIER = ("fc.weight", "fc.bias")
_SHOWN = 3
"""How many missing or unexpected keys an error message names."""


def _reason(error: Exception) -> str:
    """The error's type and first sentence, for a one-line message (torch's own advice in
    the rest of a weights-only failure, to load with weights_only=False, is not ours)."""
    first = str(error).split("\n")[0].split(". ")[0][:120]
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _shape(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


def _keys(keys: list[str]) -> str:
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def load_torchvision_weights(
    encoder: DilatedResNet, source: str | os.PathLike | Mapping[str, Tensor]
) -> None:
    """Loads torchvision's ResNet weights (a file saved with ``torch.save``, e.g.
    ``resnet18-f37072fd.pth``, or a state dict) into ``encoder``, strictly, without ``fc``.

    A file that is absent is a :class:`~smto.errors.MissingError`; one that cannot be read,
    or whose keys or shapes are not those of the encoder (e.g. ResNet-50 weights for a
    ResNet-18), a :class:`~smto.errors.DataError` naming the file.
    """
    if isinstance(source, Mapping):
        name, state = "the given state dict", source
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise MissingError(
                f"no ResNet weights file at {path}: pass torchvision's "
                "resnet18-f37072fd.pth or resnet50-*.pth (--pretrained PATH)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise DataError(
                f"cannot read the ResNet weights file {path} ({_reason(error)}): pass a "
                "state dict saved with torch.save, such as torchvision's resnet18/50 .pth"
            ) from error
        if not isinstance(state, Mapping):
            raise DataError(
                f"the ResNet weights file {path} holds a {type(state).__name__}, not a state "
                "dict: pass torchvision's resnet18/resnet50 .pth"
            )
    state = {k: v for k, v in state.items() if k not in _CLASSIFIER}
    expected = encoder.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {_shape(v)} (the encoder's is {_shape(expected[k])})"
        for k, v in state.items()
        if k in expected and (not isinstance(v, Tensor) or v.shape != expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_keys(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes {_keys(wrong)}")
    if problems:
        depth = encoder.depth
        raise DataError(
            f"{name} is not torchvision's ResNet-{depth} weights: {'; '.join(problems)}; pass "
            f"torchvision's resnet{depth} ImageNet .pth (or choose the backbone it belongs to)"
        )
    encoder.load_state_dict(state, strict=True)


def fetch_torchvision_weights(depth: int) -> dict[str, Tensor]:
    """torchvision's ImageNet ResNet-``depth`` state dict (IMAGENET1K_V1, with ``fc``),
    downloaded to torch's hub cache on first use. Needs a working torchvision: without one,
    a :class:`~smto.errors.MissingExtraError` that points to a local weights file."""
    if depth not in DEPTHS:
        raise ConfigError(f"no torchvision ResNet weights of depth {depth!r}; valid: {DEPTHS}")
    advice = (
        f"downloading ImageNet ResNet-{depth} weights needs torchvision (pip install the "
        "torchvision that matches your torch), or pass a local weights file (--pretrained PATH)"
    )
    try:
        import torchvision.models as models

        weights = getattr(models, f"ResNet{depth}_Weights").IMAGENET1K_V1
    except (ImportError, RuntimeError, OSError, AttributeError) as error:
        raise MissingExtraError(f"{advice} ({_reason(error)})", name="torchvision") from error
    try:
        return weights.get_state_dict(progress=True)
    except OSError as error:
        raise MissingError(
            f"could not download torchvision's ResNet-{depth} weights ({error}): pass a local "
            "weights file (--pretrained PATH)"
        ) from error
