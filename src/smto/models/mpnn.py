"""The QM9 message-passing network (Gilmer et al. 2017; PROTOCOL.md "QM9").

Needs the ``graph`` extra (PyTorch Geometric); importing this module without it is fine,
building the model raises a clear error.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from smto._optional import require
from smto.models.base import SharedEncoderModel

# Task names as in the main study's code (no underscores: "_" joins task names).
QM9_TARGETS = (
    "mu",
    "alpha",
    "homo",
    "lumo",
    "r2",
    "zpve",
    "U0Atom",
    "UAtom",
    "HAtom",
    "GAtom",
    "Cv",
)


def _require_pyg():
    return require("torch_geometric.nn", "graph", "the QM9 MPNN")


class MPNNEncoder(nn.Module):
    """Linear(11,64)+ReLU; 3 rounds of [NNConv(64,64, edge net Linear(5,128)-ReLU-
    Linear(128,64*64), mean aggregation) + ReLU + GRU] with shared weights; Set2Set(64, 3
    steps); Linear(128,64)+ReLU. Input: a PyG batch with x (11 features), edge_index,
    edge_attr (5 features) and batch."""

    def __init__(self, node_features: int = 11, edge_features: int = 5, dim: int = 64) -> None:
        super().__init__()
        pyg_nn = _require_pyg()
        self.lin0 = nn.Linear(node_features, dim)
        edge_net = nn.Sequential(
            nn.Linear(edge_features, 128), nn.ReLU(), nn.Linear(128, dim * dim)
        )
        self.conv = pyg_nn.NNConv(dim, dim, edge_net, aggr="mean")
        self.gru = nn.GRU(dim, dim)
        self.set2set = pyg_nn.Set2Set(dim, processing_steps=3)
        self.lin1 = nn.Linear(2 * dim, dim)

    def forward(self, data) -> Tensor:
        out = torch.relu(self.lin0(data.x))
        h = out.unsqueeze(0)
        for _ in range(3):
            m = torch.relu(self.conv(out, data.edge_index, data.edge_attr))
            out, h = self.gru(m.unsqueeze(0), h)
            out = out.squeeze(0)
        out = self.set2set(out, data.batch)
        return torch.relu(self.lin1(out))


class ScalarHead(nn.Module):
    """Linear(64,1), squeezed to one value per graph."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, 1)

    def forward(self, z: Tensor) -> Tensor:
        return self.lin(z).squeeze(-1)


def qm9_mpnn(targets: tuple[str, ...] = QM9_TARGETS, dim: int = 64) -> SharedEncoderModel:
    """The MPNN with one linear head per QM9 target."""
    unknown = [t for t in targets if t not in QM9_TARGETS]
    if unknown:
        raise ValueError(f"unknown QM9 targets {unknown}; valid targets: {QM9_TARGETS}")
    return SharedEncoderModel(MPNNEncoder(dim=dim), {t: ScalarHead(dim) for t in targets})


def random_molecules(n_graphs: int, n_atoms: int = 18, seed: int = 0, device: str = "cpu"):
    """A PyG batch of random complete graphs shaped like QM9 molecules (for benchmarks and
    tests): 11 node features, 5 edge features, every ordered pair of atoms connected."""
    _require_pyg()
    from torch_geometric.data import Batch, Data

    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(n_atoms)
    src, dst = torch.meshgrid(idx, idx, indexing="ij")
    keep = src != dst
    edge_index = torch.stack([src[keep], dst[keep]])
    graphs = [
        Data(
            x=torch.rand(n_atoms, 11, generator=g),
            edge_index=edge_index,
            edge_attr=torch.rand(edge_index.shape[1], 5, generator=g),
        )
        for _ in range(n_graphs)
    ]
    return Batch.from_data_list(graphs).to(device)
