"""The QM9 MPNN: the fast dense encoder computes the PyG-layer reference's function, with
the same parameters (either loads the other's state dict) and the same initialization, on
batches of molecules of mixed sizes; padding and the batch's order do not matter."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.nn import functional as F

from smto.data.molecules import Molecules, random_molecules
from smto.models.mpnn import (
    IMPLEMENTATIONS,
    QM9_TARGETS,
    FastMPNNEncoder,
    _size_groups,
    qm9_mpnn,
)

# Unsorted, from 2 and 3 atoms up to QM9's largest (29), one size twice.
SIZES = (17, 2, 29, 3, 9, 29, 12, 6)


def molecules(sizes, seed: int = 0, symmetric: bool = False, dtype=torch.float32) -> Molecules:
    """Random molecules of the given sizes, padded to the largest; edge features differ
    between i -> j and j -> i unless ``symmetric`` (catches a transposed edge direction)."""
    g = torch.Generator().manual_seed(seed)
    n = max(sizes)
    mask = torch.arange(n)[None, :] < torch.tensor(sizes)[:, None]
    pair = mask[:, :, None] & mask[:, None, :] & ~torch.eye(n, dtype=torch.bool)
    x = torch.rand(len(sizes), n, 11, generator=g, dtype=dtype) * mask[..., None]
    edges = torch.rand(len(sizes), n, n, 5, generator=g, dtype=dtype)
    if symmetric:
        edges = (edges + edges.transpose(1, 2)) / 2
    return Molecules(x, edges * pair[..., None], mask)


def pyg_encoder():
    pytest.importorskip("torch_geometric")
    from smto.models.mpnn import PyGMPNNEncoder

    return PyGMPNNEncoder


def outputs_and_gradients(model, data) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The encoder's output and the gradients of a random linear function of it."""
    out = model(data)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    grads = torch.autograd.grad((out * weights).sum(), list(model.parameters()))
    return out, list(grads)


def test_the_state_dicts_have_the_same_keys_and_shapes():
    reference = pyg_encoder()().state_dict()
    fast = FastMPNNEncoder().state_dict()
    assert list(fast) == list(reference)
    assert {k: v.shape for k, v in fast.items()} == {k: v.shape for k, v in reference.items()}
    assert "conv.lin.weight" in fast and "conv.lin.bias" not in fast


def test_one_seed_builds_the_same_weights():
    """The fast model draws the same random numbers as PyG's layers, in the same order."""
    pyg = pyg_encoder()
    torch.manual_seed(3)
    reference = pyg().state_dict()
    torch.manual_seed(3)
    fast = FastMPNNEncoder().state_dict()
    for key, value in reference.items():
        assert torch.equal(fast[key], value), key


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("size_groups", [1, 3, None])
@pytest.mark.parametrize("direction", ["pyg_to_fast", "fast_to_pyg"])
def test_fast_and_pyg_agree_on_outputs_and_every_gradient(direction, size_groups, symmetric):
    pyg = pyg_encoder()
    torch.manual_seed(1)
    reference = pyg()
    torch.manual_seed(2)
    fast = FastMPNNEncoder(size_groups=size_groups)
    data = molecules(SIZES, symmetric=symmetric)
    assert not torch.allclose(fast(data), reference(data))  # different weights so far
    if direction == "pyg_to_fast":
        fast.load_state_dict(reference.state_dict(), strict=True)
    else:
        reference.load_state_dict(fast.state_dict(), strict=True)
    out, grads = outputs_and_gradients(fast, data)
    expected, expected_grads = outputs_and_gradients(reference, data.to_pyg())
    assert out.shape == (len(SIZES), 64)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    names = [name for name, _ in fast.named_parameters()]
    assert names == [name for name, _ in reference.named_parameters()]
    for name, grad, want in zip(names, grads, expected_grads):
        assert want.abs().max() > 0, name
        torch.testing.assert_close(
            grad, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()), msg=name
        )


def test_fast_and_pyg_agree_to_1e_10_in_float64():
    pyg = pyg_encoder()
    torch.manual_seed(0)
    reference = pyg().double()
    fast = FastMPNNEncoder().double()
    fast.load_state_dict(reference.state_dict(), strict=True)
    data = molecules(SIZES, dtype=torch.float64)
    out, grads = outputs_and_gradients(fast, data)
    expected, expected_grads = outputs_and_gradients(reference, data.to_pyg())
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    for grad, want in zip(grads, expected_grads):
        torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12 * float(want.abs().max()))


def test_the_edge_direction_matters():
    """Transposing non-symmetric edge features changes the output (so the agreement above
    checks the direction): messages run from source i to target j of edge_attr[b, i, j]."""
    torch.manual_seed(0)
    fast = FastMPNNEncoder()
    data = molecules(SIZES)
    flipped = Molecules(data.x, data.edge_attr.transpose(1, 2), data.mask)
    assert (fast(data) - fast(flipped)).abs().max() > 1e-4


def batch(*parts: Molecules, n: int) -> Molecules:
    """The molecules of ``parts`` in one batch, padded to n atoms."""
    xs, edges, masks = [], [], []
    for part in parts:
        extra = n - part.mask.shape[1]
        xs.append(F.pad(part.x, (0, 0, 0, extra)))
        edges.append(F.pad(part.edge_attr, (0, 0, 0, extra, 0, extra)))
        masks.append(F.pad(part.mask, (0, extra), value=False))
    return Molecules(torch.cat(xs), torch.cat(edges), torch.cat(masks))


@pytest.mark.parametrize("size_groups", [1, None])
def test_padding_and_companions_do_not_change_a_molecule(size_groups):
    """A molecule's output is the same alone, batched with a larger molecule (more
    padding), and with arbitrary values in its padding and on the diagonal (self loops are
    no edges)."""
    torch.manual_seed(0)
    fast = FastMPNNEncoder(size_groups=size_groups).double()
    small = molecules((5, 9), seed=4, dtype=torch.float64)
    large = molecules((29,), seed=5, dtype=torch.float64)
    together = batch(small, large, n=29)
    g = torch.Generator().manual_seed(6)
    noisy = Molecules(together.x.clone(), together.edge_attr.clone(), together.mask)
    padding = ~together.mask
    noisy.x[padding] = 5 * torch.rand(int(padding.sum()), 11, generator=g, dtype=torch.float64)
    no_edge = ~(together.mask[:, :, None] & together.mask[:, None, :]) | torch.eye(29).bool()
    noisy.edge_attr[no_edge] = torch.rand(int(no_edge.sum()), 5, generator=g).double()
    expected = torch.cat([fast(small), fast(large)])
    torch.testing.assert_close(fast(together), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast(noisy), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size_groups", [1, None])
def test_permuting_the_molecules_permutes_the_outputs(size_groups):
    torch.manual_seed(0)
    fast = FastMPNNEncoder(size_groups=size_groups).double()
    data = molecules(SIZES, dtype=torch.float64)
    perm = torch.randperm(len(SIZES), generator=torch.Generator().manual_seed(0))
    assert not torch.equal(perm, torch.arange(len(SIZES)))
    permuted = Molecules(data.x[perm], data.edge_attr[perm], data.mask[perm])
    torch.testing.assert_close(fast(permuted), fast(data)[perm], rtol=1e-12, atol=1e-12)


def test_size_groups_do_not_change_the_outputs():
    torch.manual_seed(0)
    fast = FastMPNNEncoder(size_groups=1).double()
    data = random_molecules(40, (3, 29), seed=2)
    data = Molecules(data.x.double(), data.edge_attr.double(), data.mask)
    expected = fast(data)
    for groups in (2, 5, 8, 40):
        fast.size_groups = groups
        torch.testing.assert_close(fast(data), expected, rtol=1e-12, atol=1e-12)


def padded_cost(ordered: list[int], runs) -> int:
    """The fast encoder's work model: each molecule costs m (64 + m), m its group's size."""
    return sum((end - start) * ordered[end - 1] * (64 + ordered[end - 1]) for start, end in runs)


def test_the_size_groups_are_the_cheapest_contiguous_partition():
    """Checked against every partition of the distinct sizes into at most G runs."""
    g = torch.Generator().manual_seed(0)
    for trial in range(20):
        sizes = torch.randint(1, 30, (int(torch.randint(1, 25, (1,), generator=g)),), generator=g)
        sizes = sizes.tolist()
        max_groups = 1 + trial % 5
        runs = _size_groups(sizes, max_groups)
        ordered = sorted(sizes)
        assert runs[0][0] == 0 and runs[-1][1] == len(sizes)
        assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(runs))
        assert len(runs) <= max_groups
        # Equal sizes stay together.
        assert all(ordered[end - 1] != ordered[end] for _, end in runs[:-1])

        distinct = sorted(set(ordered))
        ends = [sum(1 for s in ordered if s <= d) for d in distinct]
        best = math.inf
        for k in range(min(max_groups, len(distinct))):
            for cuts in itertools.combinations(ends[:-1], k):
                bounds = [0, *cuts, len(ordered)]
                best = min(best, padded_cost(ordered, itertools.pairwise(bounds)))
        assert padded_cost(ordered, runs) == best


def test_initialization_follows_pyg():
    """NNConv: torch's default for the edge network, U(+-1/sqrt(64)) for the root weight,
    zero bias; torch's default for the GRU and Set2Set's LSTM."""
    torch.manual_seed(0)
    fast = FastMPNNEncoder()
    assert torch.equal(fast.conv.bias, torch.zeros(64))
    bounds = {
        "lin0.weight": 1 / math.sqrt(11),
        "conv.nn.0.weight": 1 / math.sqrt(5),
        "conv.nn.2.weight": 1 / math.sqrt(128),
        "conv.nn.2.bias": 1 / math.sqrt(128),
        "conv.lin.weight": 1 / math.sqrt(64),
        "gru.weight_ih_l0": 1 / math.sqrt(64),
        "set2set.lstm.weight_ih_l0": 1 / math.sqrt(64),
        "set2set.lstm.weight_hh_l0": 1 / math.sqrt(64),
        "lin1.weight": 1 / math.sqrt(128),
    }
    parameters = dict(fast.named_parameters())
    for name, bound in bounds.items():
        largest = float(parameters[name].detach().abs().max())
        assert 0.9 * bound < largest <= bound, (name, largest, bound)
    # Uniform: the mean of |w| is half the bound (4096 draws: within a few percent).
    mean = float(fast.conv.lin.weight.detach().abs().mean()) / (1 / math.sqrt(64))
    assert abs(mean - 0.5) < 0.03, mean


def test_qm9_mpnn_builds_either_implementation():
    torch.manual_seed(0)
    model = qm9_mpnn(("mu", "alpha"))
    assert isinstance(model.encoder, FastMPNNEncoder)
    features, out = model(molecules((4, 7, 2)))
    assert features.shape == (3, 64)
    assert set(out) == {"mu", "alpha"} and all(o.shape == (3,) for o in out.values())
    assert len(qm9_mpnn().heads) == len(QM9_TARGETS)
    pyg = pyg_encoder()
    assert isinstance(qm9_mpnn(implementation="pyg").encoder, pyg)
    assert IMPLEMENTATIONS == ("fast", "pyg")


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match=r"unknown MPNN implementation 'dense'; valid .*'pyg'"):
        qm9_mpnn(implementation="dense")
    with pytest.raises(ValueError, match="unknown QM9 targets"):
        qm9_mpnn(("U0_atom",))
    with pytest.raises(ValueError, match="size_groups must be at least 1"):
        FastMPNNEncoder(size_groups=0)


def test_the_pyg_encoder_reads_molecules_and_pyg_batches_alike():
    torch.manual_seed(0)
    reference = pyg_encoder()()
    data = molecules((3, 8))
    torch.testing.assert_close(reference(data), reference(data.to_pyg()), rtol=0, atol=0)
