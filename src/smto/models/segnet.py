"""The SegNet of the dense-prediction benchmark: a shared encoder-decoder, one conv head per task.

SegNet (Badrinarayanan, Kendall, Cipolla 2017, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation", TPAMI) as the "SegNet split" (standard) of MTAN (Liu,
Johns, Davison 2019, "End-to-End Multi-Task Learning with Attention", CVPR;
``im2im_pred/model_segnet_split.py``; CAGrad's ``model_segnet_split.py`` is the same), with
hard parameter sharing as Elich et al. ("Examining Common Paradigms in Multi-Task Learning")
describe their SegNet (LibMTL's ``examples/nyu``, on which they build, trains MTAN's attention
variant instead; which one they ran is not stated): a VGG-16-like
encoder of five stages (filters 64, 128, 256, 512, 512; 2, 2, 3, 3, 3 conv3x3+BN+ReLU layers),
each ending in a 2x2 max-pooling that keeps its indices, and a mirrored decoder of five stages
that each start with the max-unpooling at those indices, so that the decoder puts values back
where the encoder found its maxima. All of it is shared (LibMTL's encoder); each task gets a
3x3 conv(64, 64) and a 1x1 conv(64, C), with no normalization or activation between them, as
in the source (LibMTL's decoders). The sub-module names are MTAN's.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from smto.errors import ConfigError
from smto.models.base import SharedEncoderModel

FILTERS = (64, 128, 256, 512, 512)
"""The channels of the five encoder stages (and, mirrored, of the decoder's)."""

DOWNSAMPLING = 2 ** len(FILTERS)
"""The factor the encoder pools by: the input's height and width must be multiples of it."""


def _conv_layer(in_channels: int, out_channels: int) -> nn.Sequential:
    """MTAN's ``conv_layer``: a 3x3 conv (with bias), BN, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _conv_block(channels: int, layers: int) -> nn.Sequential:
    """MTAN's ``conv_block_enc[i]`` / ``conv_block_dec[i]``: one conv layer, or a Sequential
    of ``layers`` of them (the nesting, and so the parameter names, as in the source)."""
    if layers == 1:
        return _conv_layer(channels, channels)
    return nn.Sequential(*(_conv_layer(channels, channels) for _ in range(layers)))


def _init_weights(module: nn.Module) -> None:
    """MTAN's initialization: Xavier-normal conv weights and zero biases, BN weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SegNetEncoder(nn.Module):
    """The shared encoder-decoder: a (B, 3, H, W) image gives (B, 64, H, W) features.

    Encoder stage i is ``encoder_block[i]`` (the conv that changes the channels) then
    ``conv_block_enc[i]`` and a max-pooling; decoder stage i, run deepest first, is the
    max-unpooling at encoder stage i's indices, ``decoder_block[i]`` (the conv back to the
    channels of stage i's input, 64 at stage 0) and ``conv_block_dec[i]``. H and W must be
    multiples of 32: with an odd size on the way, the unpooled map would not match the pooled
    one (MTAN's code then fails or returns a smaller map); this class raises a ValueError.
    """

    out_channels = FILTERS[0]
    """The channels of the shared representation."""

    def __init__(self) -> None:
        super().__init__()
        f = FILTERS
        self.encoder_block = nn.ModuleList(
            [_conv_layer(3, f[0])] + [_conv_layer(f[i], f[i + 1]) for i in range(4)]
        )
        self.conv_block_enc = nn.ModuleList(
            [_conv_block(f[0], 1), _conv_block(f[1], 1)] + [_conv_block(f[i], 2) for i in (2, 3, 4)]
        )
        self.decoder_block = nn.ModuleList(
            [_conv_layer(f[0], f[0])] + [_conv_layer(f[i + 1], f[i]) for i in range(4)]
        )
        self.conv_block_dec = nn.ModuleList(
            [_conv_block(f[0], 1), _conv_block(f[0], 1)] + [_conv_block(f[i], 2) for i in (1, 2, 3)]
        )
        self.down_sampling = nn.MaxPool2d(kernel_size=2, stride=2, return_indices=True)
        self.up_sampling = nn.MaxUnpool2d(kernel_size=2, stride=2)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"SegNet takes (B, 3, H, W) images, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % DOWNSAMPLING or width % DOWNSAMPLING:
            raise ValueError(
                f"SegNet needs the height and width to be multiples of {DOWNSAMPLING} (five "
                f"2x2 max-poolings undone by max-unpooling), got {height} x {width}"
            )
        indices = []
        for block, convs in zip(self.encoder_block, self.conv_block_enc):
            x, idx = self.down_sampling(convs(block(x)))
            indices.append(idx)
        for block, convs, idx in zip(
            reversed(self.decoder_block), reversed(self.conv_block_dec), reversed(indices)
        ):
            x = convs(block(self.up_sampling(x, idx)))
        return x


class SegNetHead(nn.Sequential):
    """A task's head: 3x3 conv(64, 64) then 1x1 conv(64, ``out_channels``), both with bias and
    nothing between them, as in MTAN's ``pred_task*`` and LibMTL's decoders: (B, 64, H, W)
    features give (B, out_channels, H, W).

    The output is raw, unlike MTAN's, which applies log-softmax to the segmentation logits and
    normalizes the normals inside the model: smto's problems take cross-entropy of logits and
    normalize normals in their losses (a documented difference).
    """

    def __init__(self, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(FILTERS[0], FILTERS[0], 3, padding=1),
            nn.Conv2d(FILTERS[0], out_channels, 1),
        )
        _init_weights(self)


def segnet_model(task_channels: Mapping[str, int]) -> SharedEncoderModel:
    """A :class:`SegNetEncoder` shared by one :class:`SegNetHead` per task (task name ->
    output channels, in order), e.g. ``{"S": 13, "D": 1, "N": 3}`` for NYUv2; from scratch,
    as in MTAN and LibMTL."""
    for task, channels in task_channels.items():
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ConfigError(f"task {task!r}: the output channels must be a positive integer")
    encoder = SegNetEncoder()
    heads = {task: SegNetHead(channels) for task, channels in task_channels.items()}
    return SharedEncoderModel(encoder, heads)
