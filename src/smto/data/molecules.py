"""A batch of molecules as dense, padded tensors: what the QM9 MPNN reads.

QM9's graphs are small (at most 29 atoms) and, after the main study's ``Complete`` transform,
complete: every ordered pair of distinct atoms is an edge. A batch of B molecules is
therefore kept dense, padded to the largest molecule's n atoms, which turns message passing
into batched matrix products (smto.models.mpnn). :meth:`Molecules.to_pyg` gives the same
batch in PyTorch Geometric's sparse layout, edge for edge as the study's transforms make it,
for the PyG-layer reference model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from smto._optional import require

NODE_FEATURES = 11
EDGE_FEATURES = 5


@dataclass
class Molecules:
    """B molecules padded to n atoms.

    ``edge_attr[b, i, j]`` is the edge from atom i (source) to atom j (target): the one-hot
    bond type (single, double, triple, aromatic; zero for a non-bonded pair) and the distance
    in Angstrom. It is zero on the diagonal and on padding; ``mask[b, i]`` is True for the
    real atoms, which come first.
    """

    x: Tensor
    """(B, n, 11) float node features (PyG's QM9 features); zero on padding."""
    edge_attr: Tensor
    """(B, n, n, 5) float edge features."""
    mask: Tensor
    """(B, n) bool: which atoms are real."""

    def __post_init__(self) -> None:
        b, n = self.mask.shape
        if self.x.shape[:2] != (b, n) or self.edge_attr.shape[:3] != (b, n, n):
            raise ValueError(
                f"inconsistent molecule batch: x {tuple(self.x.shape)}, edge_attr "
                f"{tuple(self.edge_attr.shape)}, mask {tuple(self.mask.shape)}"
            )

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    @property
    def n_atoms(self) -> Tensor:
        """(B,) the number of atoms of each molecule."""
        return self.mask.sum(dim=1)

    def to(self, device: torch.device | str) -> Molecules:
        """The batch on ``device``."""
        return Molecules(self.x.to(device), self.edge_attr.to(device), self.mask.to(device))

    def to_pyg(self):
        """The batch as a PyTorch Geometric ``Batch`` of complete graphs without self loops.

        Nodes are the real atoms, molecule after molecule; edges run, per molecule, over
        sources i then targets j != i (row-major), as the study's ``Complete`` transform
        followed by ``remove_self_loops`` orders them; ``edge_attr`` holds the same 5
        features; ``batch`` maps each node to its molecule.
        """
        pyg_data = require("torch_geometric.data", "graph", "Molecules.to_pyg")
        device = self.mask.device
        counts = self.n_atoms
        offsets = torch.cumsum(counts, 0) - counts
        pair = self.mask[:, :, None] & self.mask[:, None, :]
        pair &= ~torch.eye(self.mask.shape[1], dtype=torch.bool, device=device)
        b, i, j = pair.nonzero(as_tuple=True)  # row-major: molecule, source, target
        edge_index = torch.stack([offsets[b] + i, offsets[b] + j])
        return pyg_data.Batch(
            x=self.x[self.mask],
            edge_index=edge_index,
            edge_attr=self.edge_attr[b, i, j],
            batch=torch.repeat_interleave(torch.arange(len(self), device=device), counts),
            ptr=torch.cat([offsets, offsets[-1:] + counts[-1:]]),
        )


def random_molecules(
    n_graphs: int, n_atoms: int | tuple[int, int] = 18, seed: int = 0, device: str = "cpu"
) -> Molecules:
    """Random molecules shaped like QM9's (for benchmarks and tests): uniform node and edge
    features, symmetric edge features. ``n_atoms`` is one size for all, or a (low, high)
    range to draw each molecule's size from (inclusive)."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(n_atoms, int):
        counts = torch.full((n_graphs,), n_atoms)
    else:
        low, high = n_atoms
        counts = torch.randint(low, high + 1, (n_graphs,), generator=g)
    n = int(counts.max())
    mask = torch.arange(n)[None, :] < counts[:, None]
    pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool)
    x = torch.rand(n_graphs, n, NODE_FEATURES, generator=g) * mask[..., None]
    upper = torch.rand(n_graphs, n, n, EDGE_FEATURES, generator=g)
    upper = upper * torch.triu(torch.ones(n, n), diagonal=1)[None, :, :, None]
    edge_attr = (upper + upper.transpose(1, 2)) * pair[..., None]
    return Molecules(x, edge_attr, mask).to(device)
