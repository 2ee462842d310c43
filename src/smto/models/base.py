"""The model shape every smto problem uses: one shared encoder, one head per task."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from torch import Tensor, nn


class SharedEncoderModel(nn.Module):
    """A shared encoder ("rep") followed by one head per task.

    ``forward`` returns the shared representation (what representation-level methods such as
    MGDA-UB differentiate) and the heads' outputs by task name.
    """

    def __init__(self, encoder: nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a multi-task model needs at least one head")
        self.encoder = encoder
        self.heads = nn.ModuleDict(dict(heads))

    @property
    def task_names(self) -> list[str]:
        return list(self.heads.keys())

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """The encoder's parameters: the ones whose per-task gradients methods combine."""
        return self.encoder.parameters()

    def forward(self, inputs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.encoder(inputs)
        return features, {name: head(features) for name, head in self.heads.items()}
