"""The dilated ResNet: output stride 8 by the CSAIL / LibMTL rule, torchvision's parameter
names and counts, and its weight files loading strictly (or failing with a one-line error)."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from smto.errors import ConfigError, DataError, MissingError, MissingExtraError
from smto.models.resnet import DilatedResNet, fetch_torchvision_weights, load_torchvision_weights

# torchvision's published parameter counts (ResNet18_Weights / ResNet50_Weights "num_params")
# less the classifier: 512 x 1000 + 1000 and 2048 x 1000 + 1000.
PARAMETERS = {18: 11_689_512 - 513_000, 50: 25_557_032 - 2_049_000}


@pytest.fixture(scope="module")
def encoders() -> dict[int, DilatedResNet]:
    torch.manual_seed(0)
    return {depth: DilatedResNet(depth).eval() for depth in (18, 50)}


def torchvision_layout(depth: int) -> dict[str, tuple[int, ...]]:
    """The keys and shapes of torchvision's ``resnet{depth}().state_dict()``, fc included,
    written out from torchvision/models/resnet.py: a 7x7 stem, four layers of BasicBlocks
    (two 3x3 convs) or Bottlenecks (1x1, 3x3, 1x1 x4), a downsample (1x1 conv, BN) on a
    layer's first block when the stride or the width changes, then fc(512 x expansion, 1000)."""
    layout: dict[str, tuple[int, ...]] = {}

    def conv(name: str, out: int, inp: int, k: int) -> None:
        layout[f"{name}.weight"] = (out, inp, k, k)

    def bn(name: str, c: int) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{name}.{p}"] = (c,)
        layout[f"{name}.num_batches_tracked"] = ()

    bottleneck = depth == 50
    expansion = 4 if bottleneck else 1
    counts = (3, 4, 6, 3) if bottleneck else (2, 2, 2, 2)
    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    inplanes = 64
    for layer, (planes, count) in enumerate(zip((64, 128, 256, 512), counts), start=1):
        for b in range(count):
            p = f"layer{layer}.{b}"
            if bottleneck:
                conv(f"{p}.conv1", planes, inplanes, 1)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", planes * 4, planes, 1)
                bn(f"{p}.bn3", planes * 4)
            else:
                conv(f"{p}.conv1", planes, inplanes, 3)
                bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3)
                bn(f"{p}.bn2", planes)
            if b == 0 and (layer > 1 or inplanes != planes * expansion):
                conv(f"{p}.downsample.0", planes * expansion, inplanes, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            inplanes = planes * expansion
    layout["fc.weight"] = (1000, inplanes)
    layout["fc.bias"] = (1000,)
    return layout


def random_state(depth: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        key: torch.randint(0, 100, shape, generator=g)
        if key.endswith("num_batches_tracked")
        else torch.rand(shape, generator=g) + 0.5
        for key, shape in torchvision_layout(depth).items()
    }


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize(
    ("size", "expected"), [((64, 32), (8, 4)), ((128, 256), (16, 32)), ((60, 44), (8, 6))]
)
def test_output_stride_is_8(encoders, depth, size, expected):
    encoder = encoders[depth]
    with torch.no_grad():
        out = encoder(torch.randn(1, 3, *size))
    assert out.shape == (1, encoder.out_channels, *expected)
    assert expected == tuple(math.ceil(s / 8) for s in size)


def test_out_channels(encoders):
    assert encoders[18].out_channels == 512
    assert encoders[50].out_channels == 2048


@pytest.mark.parametrize("depth", [18, 50])
def test_parameter_counts_are_torchvisions_without_fc(encoders, depth):
    count = sum(p.numel() for p in encoders[depth].parameters())
    assert count == PARAMETERS[depth]
    # The hand-written layout agrees with the published count as well.
    layout = torchvision_layout(depth)
    params = [
        math.prod(shape)
        for key, shape in layout.items()
        if not key.startswith("fc.") and key.rsplit(".", 1)[1] in ("weight", "bias")
    ]
    assert sum(params) == PARAMETERS[depth]


@pytest.mark.parametrize("depth", [18, 50])
def test_state_dict_has_torchvisions_keys_and_shapes(encoders, depth):
    layout = torchvision_layout(depth)
    del layout["fc.weight"], layout["fc.bias"]
    assert {k: tuple(v.shape) for k, v in encoders[depth].state_dict().items()} == layout


@pytest.mark.parametrize("depth", [18, 50])
def test_a_torchvision_weights_file_loads_strictly(tmp_path, depth):
    state = random_state(depth)
    path = tmp_path / f"resnet{depth}.pth"
    torch.save(state, path)
    encoder = DilatedResNet(depth)
    load_torchvision_weights(encoder, path)
    loaded = encoder.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key


def test_a_state_dict_loads_too():
    state = random_state(18, seed=1)
    encoder = DilatedResNet(18)
    load_torchvision_weights(encoder, state)
    assert torch.equal(encoder.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


def test_weights_of_another_depth_are_a_data_error_naming_the_file(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(random_state(50), path)
    with pytest.raises(DataError, match=re.escape(str(path))) as info:
        load_torchvision_weights(DilatedResNet(18), path)
    message = str(info.value)
    assert "\n" not in message
    assert "ResNet-18" in message and "unexpected keys" in message


def test_a_missing_key_is_a_data_error_naming_it(tmp_path):
    state = random_state(18)
    del state["layer2.0.downsample.1.running_mean"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match=r"partial\.pth.*layer2\.0\.downsample\.1\.running_mean"):
        load_torchvision_weights(DilatedResNet(18), path)


def test_a_wrong_shape_is_a_data_error(tmp_path):
    state = random_state(18)
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    path = tmp_path / "gray.pth"
    torch.save(state, path)
    with pytest.raises(DataError, match=r"gray\.pth.*wrong shapes conv1\.weight"):
        load_torchvision_weights(DilatedResNet(18), path)


def test_a_missing_or_unreadable_file(tmp_path):
    missing = tmp_path / "nothing.pth"
    with pytest.raises(MissingError, match=re.escape(str(missing))):
        load_torchvision_weights(DilatedResNet(18), missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(DataError, match=re.escape(str(garbage))):
        load_torchvision_weights(DilatedResNet(18), garbage)


def torchvision_stride(name: str, depth: int) -> int:
    """The stride of conv ``name`` in torchvision's (undilated) ResNet v1.5: 2 on the stem,
    on a layer's first block's downsample and its conv1 (BasicBlock) / conv2 (Bottleneck),
    in layers 2 to 4."""
    if name == "conv1":
        return 2
    layer, block, conv = name.split(".", 2)
    strided = "conv2" if depth == 50 else "conv1"
    if layer != "layer1" and block == "0" and conv in (strided, "downsample.0"):
        return 2
    return 1


@pytest.mark.parametrize("depth", [18, 50])
def test_every_conv_follows_the_nostride_dilate_rule(encoders, depth):
    """LibMTL's / CSAIL's ``_nostride_dilate``, applied to torchvision's strides: in layer3
    (d = 2) and layer4 (d = 4) a strided conv gets stride 1 and, if 3x3, dilation = padding =
    d // 2; any other 3x3 conv dilation = padding = d."""
    for name, module in encoders[depth].named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        stride = torchvision_stride(name, depth)
        k = module.kernel_size[0]
        dilation, padding = 1, k // 2
        d = {"layer3": 2, "layer4": 4}.get(name.split(".")[0])
        if d is not None:
            if stride == 2:
                stride = 1
                if k == 3:
                    dilation = padding = d // 2
            elif k == 3:
                dilation = padding = d
        assert module.stride == (stride, stride), name
        assert module.dilation == (dilation, dilation), name
        assert module.padding == (padding, padding), name


def test_dilations_of_resnet50(encoders):
    modules = dict(encoders[50].named_modules())
    assert modules["layer4.0.conv2"].stride == (1, 1)
    assert modules["layer4.0.conv2"].dilation == (2, 2)
    assert modules["layer4.1.conv2"].dilation == (4, 4)
    assert modules["layer3.0.conv2"].dilation == (1, 1)
    assert modules["layer3.1.conv2"].dilation == (2, 2)
    assert modules["layer3.0.downsample.0"].stride == (1, 1)
    assert modules["layer2.0.conv2"].stride == (2, 2)
    assert modules["layer2.0.conv1"].stride == (1, 1)


def test_dilations_of_resnet18(encoders):
    modules = dict(encoders[18].named_modules())
    assert (modules["layer3.0.conv1"].stride, modules["layer3.0.conv1"].dilation) == ((1, 1),) * 2
    assert modules["layer3.0.conv2"].dilation == (2, 2)
    assert modules["layer4.0.conv1"].dilation == (2, 2)
    assert modules["layer4.1.conv1"].dilation == (4, 4)


def test_initialization_is_torchvisions(encoders):
    encoder = encoders[50]
    bn = encoder.layer2[0].bn3
    assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    # kaiming_normal_(fan_out, relu): std = sqrt(2 / (out_channels x k x k)).
    conv = encoder.layer3[1].conv2
    expected = math.sqrt(2 / (256 * 9))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)


def test_unknown_depth_is_a_config_error():
    with pytest.raises(ConfigError, match=r"34.*\(18, 50\)"):
        DilatedResNet(34)


def test_fetching_without_torchvision_is_a_missing_extra_error():
    try:
        import torchvision  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torchvision imports here")
    with pytest.raises(MissingExtraError, match=r"torchvision.*--pretrained PATH"):
        fetch_torchvision_weights(18)
