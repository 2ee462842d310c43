"""The SegNet of the dense-prediction benchmark: shapes at NYUv2's and Cityscapes' resolutions,
parameter counts worked out by hand, the unpooling at the encoder's argmax positions, MTAN's
initialization, raw head outputs, gradients, and the errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from smto.errors import ConfigError
from smto.models.segnet import SegNetEncoder, SegNetHead, segnet_model


def conv_bn_relu(cin: int, cout: int) -> int:
    """A 3x3 conv with bias (9 * cin * cout + cout) and a BN (weight and bias: 2 * cout)."""
    return 9 * cin * cout + cout + 2 * cout


def test_nyuv2_shapes():
    model = segnet_model({"S": 13, "D": 1, "N": 3}).eval()
    with torch.no_grad():
        rep, out = model(torch.randn(1, 3, 288, 384))
    assert rep.shape == (1, 64, 288, 384)
    assert list(out) == ["S", "D", "N"] == model.task_names
    assert {t: tuple(o.shape) for t, o in out.items()} == {
        "S": (1, 13, 288, 384),
        "D": (1, 1, 288, 384),
        "N": (1, 3, 288, 384),
    }


def test_cityscapes_shapes_and_raw_outputs():
    model = segnet_model({"S": 7, "D": 1}).eval()
    with torch.no_grad():
        rep, out = model(torch.randn(2, 3, 128, 256))
    assert rep.shape == (2, 64, 128, 256)
    assert out["S"].shape == (2, 7, 128, 256)
    assert out["D"].shape == (2, 1, 128, 256)
    # logits, not MTAN's log-probabilities: they do not log-sum-exp to 0 over the classes
    assert not torch.allclose(out["S"].logsumexp(dim=1), torch.zeros(2, 128, 256), atol=1e-3)


def test_parameter_counts_by_hand():
    model = segnet_model({"S": 13, "D": 1, "N": 3})
    encoder = (
        conv_bn_relu(3, 64) + conv_bn_relu(64, 64)  # stage 1: 2 layers
        + conv_bn_relu(64, 128) + conv_bn_relu(128, 128)  # stage 2: 2 layers
        + conv_bn_relu(128, 256) + 2 * conv_bn_relu(256, 256)  # stage 3: 3 layers
        + conv_bn_relu(256, 512) + 2 * conv_bn_relu(512, 512)  # stage 4: 3 layers
        + 3 * conv_bn_relu(512, 512)  # stage 5: 3 layers
    )  # fmt: skip
    decoder = (
        3 * conv_bn_relu(512, 512)  # stage 5 (deepest first)
        + conv_bn_relu(512, 256) + 2 * conv_bn_relu(256, 256)  # stage 4
        + conv_bn_relu(256, 128) + 2 * conv_bn_relu(128, 128)  # stage 3
        + conv_bn_relu(128, 64) + conv_bn_relu(64, 64)  # stage 2
        + conv_bn_relu(64, 64) + conv_bn_relu(64, 64)  # stage 1
    )  # fmt: skip
    assert encoder == 14_723_136 and decoder == 10_220_160
    shared = sum(p.numel() for p in model.shared_parameters())
    assert shared == encoder + decoder == 24_943_296

    def head(classes: int) -> int:
        return (9 * 64 * 64 + 64) + (64 * classes + classes)  # 3x3 conv + 1x1 conv, biases

    assert sum(p.numel() for p in model.heads["S"].parameters()) == head(13) == 37_773
    assert sum(p.numel() for p in model.heads["N"].parameters()) == head(3)
    total = sum(p.numel() for p in model.parameters())
    assert total == shared + head(13) + head(1) + head(3)
    # 13 conv layers each way, as VGG-16's 13 convs
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == len(bns) == 26


def test_decoder_unpools_at_the_encoder_argmax_positions():
    """Each decoder stage's input is zero except at the positions where the matching encoder
    stage's 2x2 max-pooling found its maxima, which hold the deeper stage's output: nearest or
    bilinear upsampling would fill all four positions of each window."""
    torch.manual_seed(0)
    encoder = SegNetEncoder().eval()
    pre_pool: dict[int, torch.Tensor] = {}
    unpooled: dict[int, torch.Tensor] = {}
    decoded: dict[int, torch.Tensor] = {}
    handles = []
    for k in range(5):
        handles.append(
            encoder.conv_block_enc[k].register_forward_hook(
                lambda _m, _i, out, k=k: pre_pool.__setitem__(k, out.clone())
            )
        )
        handles.append(
            encoder.decoder_block[k].register_forward_pre_hook(
                lambda _m, inputs, k=k: unpooled.__setitem__(k, inputs[0].clone())
            )
        )
        handles.append(
            encoder.conv_block_dec[k].register_forward_hook(
                lambda _m, _i, out, k=k: decoded.__setitem__(k, out.clone())
            )
        )
    with torch.no_grad():
        out = encoder(torch.randn(2, 3, 64, 96))
    for h in handles:
        h.remove()
    assert torch.equal(out, decoded[0])
    for k in range(5):
        pooled, idx = F.max_pool2d(pre_pool[k], 2, return_indices=True)
        source = pooled if k == 4 else decoded[k + 1]
        expected = torch.zeros_like(pre_pool[k]).flatten(2)
        expected.scatter_(2, idx.flatten(2), source.flatten(2))
        assert torch.equal(unpooled[k], expected.view_as(pre_pool[k])), k
        assert (unpooled[k] != 0).float().mean() <= 0.25


def test_mtan_initialization():
    torch.manual_seed(0)
    encoder = SegNetEncoder()
    head = SegNetHead(13)
    for module in [*encoder.modules(), *head.modules()]:
        if isinstance(module, torch.nn.Conv2d):
            assert torch.count_nonzero(module.bias) == 0
        elif isinstance(module, torch.nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.count_nonzero(module.bias) == 0
    weight = encoder.conv_block_enc[4][0][0].weight  # 512 -> 512, 3x3
    xavier_std = math.sqrt(2.0 / (9 * 512 + 9 * 512))
    assert weight.std().item() == pytest.approx(xavier_std, rel=0.02)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = segnet_model({"S": 13, "D": 1, "N": 3}).train()
    rep, out = model(torch.randn(2, 3, 32, 64))
    assert rep.shape == (2, 64, 32, 64)
    sum((o**2).mean() for o in out.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # the biases of the convs followed by a BN get no gradient in training mode (BN
        # subtracts the batch mean); every other parameter gets a non-zero one
        if not (name.startswith("encoder.") and name.endswith(".0.bias")):
            assert torch.count_nonzero(p.grad) > 0, name


@pytest.mark.parametrize("size", [(33, 64), (32, 48), (288, 380)])
def test_sizes_not_multiple_of_32_are_refused(size):
    encoder = SegNetEncoder().eval()
    with pytest.raises(ValueError, match="multiples of 32"):
        encoder(torch.zeros(1, 3, *size))


def test_bad_inputs_and_channels():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        SegNetEncoder()(torch.zeros(1, 1, 32, 32))
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ConfigError, match="'D'"):
            segnet_model({"S": 13, "D": bad})
    with pytest.raises(ValueError, match="at least one head"):
        segnet_model({})
