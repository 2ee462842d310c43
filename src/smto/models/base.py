"""The model shape every smto problem uses: one shared encoder, one head per task."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
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
        """The names of the tasks, in the order of the heads."""
        return list(self.heads.keys())

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        """The encoder's parameters: the ones whose per-task gradients methods combine."""
        return self.encoder.parameters()

    def forward(
        self, inputs: Any, head_inputs: Callable[[Tensor], list[Tensor]] | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Returns the shared representation and each head's output. ``head_inputs`` maps
        the representation to one input per head (a method's ``head_inputs``, e.g.
        RotoGrad's rotations); by default every head sees the representation itself."""
        features = self.encoder(inputs)
        per_head = head_inputs(features) if head_inputs is not None else None
        if per_head is None:
            return features, {name: head(features) for name, head in self.heads.items()}
        if len(per_head) != len(self.heads):
            raise ValueError(f"head_inputs gave {len(per_head)} inputs for {len(self.heads)} heads")
        return features, {name: head(z) for (name, head), z in zip(self.heads.items(), per_head)}
