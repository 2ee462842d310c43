"""The DeepLabV3 heads and the Cityscapes model: shapes, image pooling reaching every
position, torchvision's head names, gradients through encoder and heads, and the
from-scratch warning."""

from __future__ import annotations

import warnings

import pytest
import torch

from smto.errors import ConfigError, MissingExtraError
from smto.models.deeplab import ASPP, DeepLabHead, deeplab_model
from smto.models.resnet import DilatedResNet

TASKS = {"S": 19, "D": 1, "I": 2}


def torchvision_head_layout(in_channels: int, classes: int) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of torchvision's ``DeepLabHead(in_channels, classes)``
    (torchvision/models/segmentation/deeplabv3.py): 0 = ASPP with convs [1x1, three 3x3
    atrous, pooling (0 = AdaptiveAvgPool2d, 1 = conv, 2 = BN)] and project (5 x 256 -> 256),
    1 = 3x3 conv, 2 = BN, 4 = 1x1 classifier with bias."""
    layout: dict[str, tuple[int, ...]] = {}

    def bn(name: str) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{name}.{p}"] = (256,)
        layout[f"{name}.num_batches_tracked"] = ()

    layout["0.convs.0.0.weight"] = (256, in_channels, 1, 1)
    bn("0.convs.0.1")
    for branch in (1, 2, 3):
        layout[f"0.convs.{branch}.0.weight"] = (256, in_channels, 3, 3)
        bn(f"0.convs.{branch}.1")
    layout["0.convs.4.1.weight"] = (256, in_channels, 1, 1)
    bn("0.convs.4.2")
    layout["0.project.0.weight"] = (256, 5 * 256, 1, 1)
    bn("0.project.1")
    layout["1.weight"] = (256, 256, 3, 3)
    bn("2")
    layout["4.weight"] = (classes, 256, 1, 1)
    layout["4.bias"] = (classes,)
    return layout


def test_aspp_keeps_the_spatial_size():
    aspp = ASPP(64, rates=(2, 4), out_channels=32).eval()
    with torch.no_grad():
        out = aspp(torch.randn(2, 64, 7, 5))
    assert out.shape == (2, 32, 7, 5)
    assert len(aspp.convs) == 4  # 1x1, two atrous, pooling


def test_image_pooling_carries_one_corner_to_every_position():
    """At rates of 12 and more on a 9 x 9 map, the atrous taps of the far corner fall in
    the padding: only the pooling branch lets the corner pixel reach it."""
    torch.manual_seed(0)
    aspp = ASPP(16).eval()
    x = torch.randn(1, 16, 9, 9)
    y = x.clone()
    y[..., 0, 0] += 5.0
    with torch.no_grad():
        change = (aspp(x) - aspp(y)).abs().amax(dim=1)
    assert bool((change > 0).all())
    # Without the pooling branch's contribution the far corner would not move.
    with torch.no_grad():
        local = [branch(x) - branch(y) for branch in aspp.convs[:-1]]
    assert all(float(d[..., 8, 8].abs().max()) == 0.0 for d in local)


def test_head_output_has_the_label_size():
    head = DeepLabHead(64, 19, (32, 48)).eval()
    with torch.no_grad():
        out = head(torch.randn(2, 64, 4, 6))
    assert out.shape == (2, 19, 32, 48)
    depth = DeepLabHead(64, 1, (30, 50)).eval()
    with torch.no_grad():
        assert depth(torch.randn(2, 64, 4, 6)).shape == (2, 1, 30, 50)


def test_head_has_torchvisions_names_and_shapes():
    head = DeepLabHead(512, 19, (32, 64))
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == torchvision_head_layout(512, 19)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    with pytest.warns(UserWarning):
        return deeplab_model(TASKS, "resnet18", output_size=(32, 64))


def test_model_forward_shapes(model):
    model.eval()
    with torch.no_grad():
        features, outputs = model(torch.randn(2, 3, 32, 64))
    assert features.shape == (2, 512, 4, 8)
    assert list(outputs) == ["S", "D", "I"]
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "S": (2, 19, 32, 64),
        "D": (2, 1, 32, 64),
        "I": (2, 2, 32, 64),
    }


def test_backward_reaches_encoder_and_heads(model):
    model.train()
    model.zero_grad()
    _, outputs = model(torch.randn(2, 3, 32, 64))
    sum(out.square().mean() for out in outputs.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    assert any(n.startswith("encoder.layer4") for n, _ in model.named_parameters())


def test_from_scratch_warns_and_pretrained_does_not(tmp_path):
    with pytest.warns(UserWarning, match=r"scratch.*ImageNet.*--pretrained PATH"):
        deeplab_model({"S": 19}, "resnet18", (32, 64))
    torch.manual_seed(1)
    state = DilatedResNet(18).state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = deeplab_model({"S": 19}, "resnet18", (32, 64), pretrained=path)
    assert torch.equal(model.encoder.conv1.weight, state["conv1.weight"])


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match=r"resnet34.*resnet18.*resnet50"):
        deeplab_model(TASKS, "resnet34")


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="dropout"):
        deeplab_model(TASKS, dropout=1.0)
    with pytest.raises(ConfigError, match="output_size"):
        deeplab_model(TASKS, output_size=(0, 64))
    with pytest.raises(ConfigError, match="'S'"):
        deeplab_model({"S": 0})


def test_torchvision_weights_without_torchvision_is_a_missing_extra_error():
    try:
        import torchvision  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torchvision imports here")
    with pytest.raises(MissingExtraError, match="--pretrained PATH"):
        deeplab_model(TASKS, pretrained="torchvision")
