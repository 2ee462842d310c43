"""The LeNet variant of the Multi-MNIST problem (PROTOCOL.md, after Sener & Koltun 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from smto.models.base import SharedEncoderModel

CLASSIFICATION_TASKS = ("CL", "CR")
RECONSTRUCTION_TASKS = ("RL", "RR")


class LeNetEncoder(nn.Module):
    """Conv(1,10,5)-MaxPool2-ReLU-Conv(10,20,5)-Dropout2d(p)-MaxPool2-ReLU-Linear(320,50)-ReLU.

    The convolutions run in the channels-last layout (the parameters stay contiguous): on a
    CPU, oneDNN's convolutions and max pooling are 2-3x faster in it for these few channels,
    and the values are the same up to float rounding. ``flatten`` restores the NCHW order.
    Under ``vmap`` (vectorized runs) a layout cannot be set, and the input is left as it is."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.drop = nn.Dropout2d(dropout)
        self.fc = nn.Linear(320, 50)

    def forward(self, x: Tensor) -> Tensor:
        if not torch._C._functorch.is_batchedtensor(x):
            x = x.to(memory_format=torch.channels_last)
        x = torch.relu(nn.functional.max_pool2d(self.conv1(x), 2))
        x = torch.relu(nn.functional.max_pool2d(self.drop(self.conv2(x)), 2))
        return torch.relu(self.fc(x.flatten(1)))


class ClassificationHead(nn.Module):
    """Linear(50,50)-ReLU-Dropout(p)-Linear(50,10)-log_softmax."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(50, 50), nn.ReLU(), nn.Dropout(dropout), nn.Linear(50, 10)
        )

    def forward(self, z: Tensor) -> Tensor:
        return torch.log_softmax(self.net(z), dim=1)


class ReconstructionHead(nn.Module):
    """Linear(50,256)-ReLU-Dropout(p)-Linear(256,784), reshaped to 28x28, no activation."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(50, 256), nn.ReLU(), nn.Dropout(dropout), nn.Linear(256, 784)
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, 28, 28)


def multi_lenet(tasks: Sequence[str] = ("CL", "RR"), dropout: float = 0.0) -> SharedEncoderModel:
    """The Multi-MNIST LeNet with one head per task (CL, CR: classification; RL, RR:
    reconstruction) and dropout ``p`` in the encoder and heads."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    heads: dict[str, nn.Module] = {}
    for task in tasks:
        if task in CLASSIFICATION_TASKS:
            heads[task] = ClassificationHead(dropout)
        elif task in RECONSTRUCTION_TASKS:
            heads[task] = ReconstructionHead(dropout)
        else:
            valid = CLASSIFICATION_TASKS + RECONSTRUCTION_TASKS
            raise ValueError(f"unknown Multi-MNIST task {task!r}; valid tasks: {valid}")
    return SharedEncoderModel(LeNetEncoder(dropout), heads)
