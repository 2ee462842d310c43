"""The QM9 message-passing network (Gilmer et al. 2017; PROTOCOL.md "QM9"), two ways.

The model: Linear(11, 64)+ReLU; 3 rounds, sharing weights, of [NNConv(64, 64) with edge
network Linear(5, 128)-ReLU-Linear(128, 64 x 64) and mean aggregation, ReLU, GRU(64, 64)];
Set2Set(64, 3 steps); Linear(128, 64)+ReLU. :class:`PyGMPNNEncoder` builds it from PyTorch
Geometric's layers (the reference; needs the ``graph`` extra). :class:`FastMPNNEncoder`
computes the same function, with the same parameters under the same names (either loads the
other's state dict), in plain torch on a dense :class:`~smto.data.molecules.Molecules` batch,
through two exact reformulations: the edge network is evaluated once per forward, not in each
round, and its last Linear is factored out of the messages (x_j W(e) = sum_k h_k(e) x_j A_k +
x_j B), so that each round is one GEMM per node, P_j = x_j [A_1 .. A_128, B], and one batched
matrix product contracting P with each target's 129-d edge features.

At the study's batch (120 molecules of 9 to 27 atoms, 2,155 atoms and 39,934 directed
edges), PyG's forward spends 63 GMACs in the per-edge edge network (5 x 128 + 128 x 4096 per
edge, in each of 3 rounds); the fast one 4.7: 1.2 per round in the node GEMM, 0.4 in the
contraction, having sorted the batch by size and padded each group of similar sizes only to
its own largest molecule (7.4 padded as one batch).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from smto._optional import require
from smto.data.molecules import EDGE_FEATURES, NODE_FEATURES, Molecules
from smto.data.qm9 import TARGETS
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

IMPLEMENTATIONS = ("fast", "pyg")
"""The values of :func:`qm9_mpnn`'s ``implementation``."""

ROUNDS = 3
"""Message-passing rounds (one NNConv and one GRU step each, the same weights every round)."""

SET2SET_STEPS = 3
"""Set2Set's processing steps."""

EDGE_HIDDEN = 128
"""The width of the edge network's hidden layer."""


def _require_pyg():
    return require("torch_geometric.nn", "graph", "the PyG-layer QM9 MPNN")


class PyGMPNNEncoder(nn.Module):
    """The QM9 MPNN encoder built from PyTorch Geometric's layers: the reference.

    Linear(11,64)+ReLU; 3 rounds of [NNConv(64,64, edge net Linear(5,128)-ReLU-
    Linear(128,64*64), mean aggregation) + ReLU + GRU] with shared weights; Set2Set(64, 3
    steps); Linear(128,64)+ReLU. Input: a :class:`~smto.data.molecules.Molecules` batch
    (converted with ``to_pyg()`` at each call) or a PyG batch with x (11 features),
    edge_index, edge_attr (5 features) and batch. Needs the ``graph`` extra.
    """

    def __init__(
        self,
        node_features: int = NODE_FEATURES,
        edge_features: int = EDGE_FEATURES,
        dim: int = 64,
    ) -> None:
        super().__init__()
        pyg_nn = _require_pyg()
        self.lin0 = nn.Linear(node_features, dim)
        edge_net = nn.Sequential(
            nn.Linear(edge_features, EDGE_HIDDEN), nn.ReLU(), nn.Linear(EDGE_HIDDEN, dim * dim)
        )
        self.conv = pyg_nn.NNConv(dim, dim, edge_net, aggr="mean")
        self.gru = nn.GRU(dim, dim)
        self.set2set = pyg_nn.Set2Set(dim, processing_steps=SET2SET_STEPS)
        self.lin1 = nn.Linear(2 * dim, dim)

    def forward(self, data) -> Tensor:
        if isinstance(data, Molecules):
            data = data.to_pyg()
        out = torch.relu(self.lin0(data.x))
        h = out.unsqueeze(0)
        for _ in range(ROUNDS):
            m = torch.relu(self.conv(out, data.edge_index, data.edge_attr))
            out, h = self.gru(m.unsqueeze(0), h)
            out = out.squeeze(0)
        out = self.set2set(out, data.batch)
        return torch.relu(self.lin1(out))


class _NNConvParameters(nn.Module):
    """PyG's NNConv(dim, dim, edge net, aggr="mean") parameters under its names: the edge
    network ``nn``, the root weight ``lin`` (no bias) and ``bias``, initialised as
    NNConv.reset_parameters does (torch's default for the edge network, U(-1/sqrt(dim),
    1/sqrt(dim)) for the root weight, zeros for the bias), drawing the same random numbers
    in the same order as NNConv's construction."""

    def __init__(self, dim: int, edge_features: int) -> None:
        super().__init__()
        self.nn = nn.Sequential(
            nn.Linear(edge_features, EDGE_HIDDEN), nn.ReLU(), nn.Linear(EDGE_HIDDEN, dim * dim)
        )
        self.lin = nn.Linear(dim, dim, bias=False)
        self.bias = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draws the parameters as NNConv.reset_parameters does."""
        self.nn[0].reset_parameters()
        self.nn[2].reset_parameters()
        bound = 1.0 / math.sqrt(self.lin.in_features)
        nn.init.uniform_(self.lin.weight, -bound, bound)
        nn.init.zeros_(self.bias)


class _Set2SetParameters(nn.Module):
    """PyG's Set2Set(dim, steps) parameters: its LSTM(2 dim, dim), initialised (twice, as
    Set2Set's constructor does) by torch's default."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(2 * dim, dim)
        self.lstm.reset_parameters()


def _size_groups(n_atoms: list[int], max_groups: int, dim: int = 64) -> list[tuple[int, int]]:
    """The partition of a batch, sorted by size, into at most ``max_groups`` runs that
    minimises the fast encoder's padded work: (first, end) positions in the sorted order.

    A molecule padded to m atoms costs about m (dim + m) (the node GEMM of a round is m dim
    x 129 dim per molecule, the contraction m^2 x 129 dim); the partition is found over the
    distinct sizes by dynamic programming.
    """
    sizes = sorted(n_atoms)
    if not sizes:
        return []
    distinct = sorted(set(sizes))
    ends = [0] * len(distinct)  # the end position of each distinct size in the sorted order
    position = 0
    for i, size in enumerate(distinct):
        while position < len(sizes) and sizes[position] == size:
            position += 1
        ends[i] = position
    groups = min(max_groups, len(distinct))
    s = len(distinct)

    def cost(first: int, last: int) -> float:  # distinct sizes first..last in one group
        count = ends[last] - (ends[first - 1] if first else 0)
        return count * distinct[last] * (dim + distinct[last])

    best = [[math.inf] * s for _ in range(groups + 1)]
    cut = [[0] * s for _ in range(groups + 1)]
    for last in range(s):
        best[1][last] = cost(0, last)
    for g in range(2, groups + 1):
        for last in range(g - 1, s):
            for first in range(g - 1, last + 1):
                value = best[g - 1][first - 1] + cost(first, last)
                if value < best[g][last]:
                    best[g][last], cut[g][last] = value, first
    runs = []
    last = s - 1
    for g in range(groups, 1, -1):
        first = cut[g][last]
        runs.append((ends[first - 1], ends[last]))
        last = first - 1
    runs.append((0, ends[last]))
    return runs[::-1]


class FastMPNNEncoder(nn.Module):
    """The QM9 MPNN encoder of :class:`PyGMPNNEncoder`, exactly, in plain torch on a
    :class:`~smto.data.molecules.Molecules` batch (no PyTorch Geometric needed).

    Same parameters, names and shapes (either model loads the other's state dict, strict)
    and the same initialization (the same random draws: under one seed both build the same
    weights). Per forward, the edge network's first layer is evaluated once on every edge
    and its last Linear is folded into a (dim, 129 dim) weight [A_1 .. A_128, B]; each
    round is then one GEMM per node and one batched matrix product per molecule (see the
    module docstring). Padded atoms never reach real ones: their edge features are zeroed
    in the contraction and masked (-inf) in Set2Set's softmax.

    ``size_groups``: the batch is sorted by molecule size and cut (by dynamic programming
    over the sizes) into at most this many groups, each padded only to its own largest
    molecule; the outputs come back in the batch's order. On a CPU, 8 groups make the
    study's batch (120 molecules of 9 to 27 atoms) 2.5 times faster than one padded batch
    (less padding, and intermediates that stay in cache); more gain nothing. 1 computes the
    batch as given (no sorting, no host synchronisation: what a GPU, bound by kernel
    launches at these sizes, should prefer; not measured). ``None`` (the default) chooses
    by the input's device: 1 on CUDA, 8 elsewhere.
    """

    def __init__(
        self,
        node_features: int = NODE_FEATURES,
        edge_features: int = EDGE_FEATURES,
        dim: int = 64,
        size_groups: int | None = None,
    ) -> None:
        super().__init__()
        if size_groups is not None and size_groups < 1:
            raise ValueError(f"size_groups must be at least 1 (or None), got {size_groups}")
        self.dim = dim
        self.size_groups = size_groups
        self.lin0 = nn.Linear(node_features, dim)
        self.conv = _NNConvParameters(dim, edge_features)
        self.gru = nn.GRU(dim, dim)
        self.set2set = _Set2SetParameters(dim)
        self.lin1 = nn.Linear(2 * dim, dim)

    def _groups(self, molecules: Molecules) -> int:
        if self.size_groups is not None:
            return self.size_groups
        return 1 if molecules.mask.device.type == "cuda" else 8

    def forward(self, molecules: Molecules) -> Tensor:
        d = self.dim
        first, last = self.conv.nn[0], self.conv.nn[2]
        # The first layer, with a constant 129th output (weight 0, bias 1) that carries B.
        edge_weight = torch.cat([first.weight, first.weight.new_zeros(1, first.in_features)])
        edge_bias = torch.cat([first.bias, first.bias.new_ones(1)])
        # W(e) = (A h + b).view(d in, d out): weight[i, k, o] = A[i d + o, k], then b[i d + o].
        a = last.weight.view(d, d, EDGE_HIDDEN).transpose(1, 2)
        weight = torch.cat([a, last.bias.view(d, 1, d)], 1).reshape(d, (EDGE_HIDDEN + 1) * d)
        groups = self._groups(molecules)
        if groups == 1:
            x, edge_attr, mask = molecules.x, molecules.edge_attr, molecules.mask
            return self._dense(x, edge_attr, mask, edge_weight, edge_bias, weight)
        n_atoms = molecules.n_atoms
        order = torch.argsort(n_atoms, stable=True)
        sizes = n_atoms[order].tolist()
        outputs = []
        for start, end in _size_groups(sizes, groups, d):
            index = order[start:end]
            n = sizes[end - 1]
            outputs.append(
                self._dense(
                    molecules.x[:, :n].index_select(0, index),
                    molecules.edge_attr[:, :n, :n].index_select(0, index),
                    molecules.mask[:, :n].index_select(0, index),
                    edge_weight,
                    edge_bias,
                    weight,
                )
            )
        return torch.cat(outputs).index_select(0, torch.argsort(order))

    def _dense(
        self,
        x: Tensor,
        edge_attr: Tensor,
        mask: Tensor,
        edge_weight: Tensor,
        edge_bias: Tensor,
        weight: Tensor,
    ) -> Tensor:
        """The encoder on one padded group: x (B, n, 11), edge_attr (B, n, n, 5) with
        edge_attr[b, i, j] the edge i -> j, mask (B, n)."""
        b, n, _ = x.shape
        d = self.dim
        k = EDGE_HIDDEN + 1
        eye = torch.eye(n, dtype=torch.bool, device=x.device)
        real = mask[:, :, None] & mask[:, None, :] & ~eye  # [b, target, source]
        degree = (mask.sum(1) - 1).clamp(min=1).to(x.dtype)
        scale = real.to(x.dtype) / degree[:, None, None]
        # edges[b, t, s] = [relu(L1(e_st)), 1] / deg_t for real s != t, else 0 (relu
        # commutes with the positive scale): the edge network, before its last Linear, once.
        edges = F.linear(edge_attr.transpose(1, 2), edge_weight, edge_bias)
        edges = edges.mul_(scale[..., None]).relu_().view(b, n, n * k)
        out = torch.relu(self.lin0(x)).reshape(b * n, d)
        h = out.unsqueeze(0)
        for _ in range(ROUNDS):
            # P[b, (s, k), :] = x_s @ [A_k | B]; messages[b, t] = sum_{s, k} edges * P.
            p = (out @ weight).view(b, n * k, d)
            messages = torch.bmm(edges, p).view(b * n, d)
            m = torch.relu(messages + self.conv.lin(out) + self.conv.bias)
            out, h = self.gru(m.unsqueeze(0), h)
            out = out.squeeze(0)
        return torch.relu(self.lin1(self._set2set(out.view(b, n, d), mask)))

    def _set2set(self, x: Tensor, mask: Tensor) -> Tensor:
        """PyG's Set2Set on a padded batch (B, n, d): q from the LSTM on q*, attention
        softmax(<x_i, q>) over each molecule's atoms, r = sum a_i x_i, q* = [q, r]."""
        b, _, d = x.shape
        state = (x.new_zeros(1, b, d), x.new_zeros(1, b, d))
        q_star = x.new_zeros(b, 2 * d)
        for _ in range(SET2SET_STEPS):
            q, state = self.set2set.lstm(q_star.unsqueeze(0), state)
            q = q.view(b, d)
            scores = (x * q[:, None, :]).sum(-1).masked_fill(~mask, -math.inf)
            attention = torch.softmax(scores, dim=1)
            r = torch.bmm(attention.unsqueeze(1), x).squeeze(1)
            q_star = torch.cat([q, r], dim=-1)
        return q_star


class ScalarHead(nn.Module):
    """Linear(64,1), squeezed to one value per graph."""

    def __init__(self, dim: int = 64) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, 1)

    def forward(self, z: Tensor) -> Tensor:
        return self.lin(z).squeeze(-1)


def qm9_mpnn(
    targets: tuple[str, ...] = QM9_TARGETS, dim: int = 64, implementation: str = "fast"
) -> SharedEncoderModel:
    """The MPNN with one linear head per QM9 target (any of PyG's 19, by the study's names:
    :data:`smto.data.qm9.TARGETS`; by default the study's 11); ``implementation`` "fast"
    (:class:`FastMPNNEncoder`, plain torch, reads :class:`~smto.data.molecules.Molecules`)
    or "pyg" (:class:`PyGMPNNEncoder`, the PyG-layer reference; needs the ``graph``
    extra). Under one seed both build the same weights."""
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"unknown QM9 targets {unknown}; valid targets: {TARGETS}")
    if implementation == "fast":
        encoder: nn.Module = FastMPNNEncoder(dim=dim)
    elif implementation == "pyg":
        encoder = PyGMPNNEncoder(dim=dim)
    else:
        raise ValueError(
            f"unknown MPNN implementation {implementation!r}; valid implementations: "
            f"{IMPLEMENTATIONS}"
        )
    return SharedEncoderModel(encoder, {t: ScalarHead(dim) for t in targets})
