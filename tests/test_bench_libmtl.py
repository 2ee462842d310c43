"""LibMTL's weightings as peers of the step benchmark: they run in smto's step, and where the
conventions agree (GLS, PCGrad at two tasks, DWA) they give smto's update."""

from __future__ import annotations

import pytest
import torch

import smto
from smto.bench.libmtl_peers import LIBMTL, has_libmtl_peer, libmtl_peer
from smto.bench.step import lenet_workload, run_benchmark


def _gradients(method, workload) -> list[torch.Tensor]:
    """Every model parameter's gradient after ``method.backward`` on the workload's batch,
    from the seeded initial weights."""
    torch.manual_seed(0)
    model = workload.make_model()
    head_inputs = getattr(method, "head_inputs", None)
    features, outputs = model(workload.inputs, head_inputs=head_inputs)
    method.backward(workload.losses(outputs), list(model.shared_parameters()), features)
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["gls", "pcgrad"])
def test_a_libmtl_peer_writes_smtos_gradients(name):
    """GLS (the gradient of (prod L)^(1/K)) and PCGrad (at K = 2 the projections do not depend
    on the drawn order; both sum the projected gradients): every parameter's gradient, the
    heads' included, equals smto's."""
    workload = lenet_workload(batch_size=8)
    ours = _gradients(smto.create(name, 2), workload)
    theirs = _gradients(libmtl_peer(2, name), workload)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_the_dwa_peer_keeps_libmtls_epoch_buffer_and_weighs_as_smto():
    """DWA over three epochs of given losses: LibMTL's train_loss_buffer holds each epoch's
    mean, and from the third epoch on both weigh by K softmax(L(t-1) / L(t-2) / T)."""
    ours, peer = smto.create("dwa", 2), libmtl_peer(2, "dwa")
    param = torch.nn.Parameter(torch.ones(()))
    epochs = [[(2.0, 1.0), (4.0, 3.0)], [(1.0, 1.0), (2.0, 2.0)], [(1.0, 1.0)]]
    for epoch in epochs:
        for values in epoch:
            for method in (ours, peer):
                losses = torch.tensor(values) * param
                method.backward(losses, [param])
                param.grad = None
            torch.testing.assert_close(peer.last_weights.float(), ours.last_weights.float())
        ours.end_epoch()
        peer.end_epoch()
    torch.testing.assert_close(
        torch.as_tensor(peer.weighting.train_loss_buffer[:, :2]),
        torch.tensor([[3.0, 1.5], [2.0, 1.5]], dtype=torch.float64),
    )
    ratio = torch.tensor([1.5 / 3.0, 1.5 / 2.0])
    torch.testing.assert_close(ours.last_weights.float(), 2 * torch.softmax(ratio / 2.0, dim=0))


def test_libmtl_peers_run_in_the_same_step_beside_their_method():
    """Each method with a LibMTL weighting gets a row after its own; CAGrad has none at two
    tasks (1.1.5's objective is written for three), SI none at all; the representation
    weightings (GradDrop) run on per-task copies of the representation."""
    methods = ["gls", "graddrop", "gradnorm", "cagrad", "si"]
    timings = run_benchmark(
        lenet_workload(batch_size=4), methods, repeats=1, warmup=2, peers=("libmtl",), floor=()
    )
    names = [t.method for t in timings]
    assert names == [
        "unit_scal",
        "libmtl:unit_scal",
        "gls",
        "libmtl:gls",
        "graddrop",
        "libmtl:graddrop",
        "gradnorm",
        "libmtl:gradnorm",
        "cagrad",
        "si",
    ]
    spaces = {t.method: t.space for t in timings}
    assert spaces["libmtl:gls"] == "losses" and spaces["libmtl:graddrop"] == "features"
    assert has_libmtl_peer("cagrad", 3) and not has_libmtl_peer("cagrad", 2)
    assert set(LIBMTL) <= set(smto.available())


def test_the_gradnorm_peer_leaves_its_first_epoch_after_end_epoch():
    """LibMTL's GradNorm sums the losses in epoch 0; after one epoch it weighs by its learnable
    K softmax(w), which starts uniform and moves with its own gradient."""
    peer = libmtl_peer(2, "gradnorm")
    workload = lenet_workload(batch_size=8)
    _gradients(peer, workload)
    assert peer.last_weights.tolist() == [1.0, 1.0]
    assert peer.weighting.loss_scale.grad is None
    peer.end_epoch()
    _gradients(peer, workload)
    torch.testing.assert_close(peer.last_weights.float(), torch.ones(2))
    assert peer.weighting.loss_scale.grad is not None
    assert peer.weighting.loss_scale.grad.abs().sum() > 0
