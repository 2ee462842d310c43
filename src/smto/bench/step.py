"""The step benchmark: one training step of every method, against two baselines.

For each model (the Multi-MNIST LeNet, K = 2; the QM9 MPNN, K = 11, and its PyG-layer
reference; the Cityscapes DeepLab models, K = 3; the CelebA ResNet-18, K = 40) it times a
full step (the engine's training step: zero_grad, forward, the method's backward, Adam step,
and the extra work some methods declare: Auto-Lambda's meta step, FAMO's second forward) and
reports the median over repeats and two ratios measured in the same run:

* to Unit. Scal. (forward + one backward + step), the target for loss-based methods;
* to the Jacobian floor: forward + the fastest exact K-task Jacobian of the shared parameters
  (sequential or batched) + the heads' gradients + step, with the trivial mean as aggregation.
  Gradient-based methods can only add their aggregation on top of it.

Random inputs of the right shapes: the timings do not depend on the data.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from smto import registry
from smto.bench.libmtl_peers import has_libmtl_peer, libmtl_peer
from smto.bench.peers import TorchjdPeer, has_peer
from smto.capabilities import EpochEnd, HeadTargets, optimizer_groups
from smto.errors import ConfigError
from smto.jacobian import GradientEngine
from smto.method import Aggregation, GradientMethod, Method, Scale
from smto.models.base import SharedEncoderModel
from smto.train.step import training_step

FLOOR = "Jacobian floor"
FLOOR_MODES = ("sequential", "batched")
"""The Jacobian strategies the floor is timed with (the faster one is the floor)."""


class _MeanOfJacobian(GradientMethod):
    """The floor's "method": the exact per-task Jacobian, aggregated by a plain mean."""

    display_name = FLOOR
    scale = Scale.MEAN

    def aggregate(self, matrix: Tensor, losses: Tensor) -> Aggregation:
        weights = torch.full((matrix.shape[0],), 1.0 / matrix.shape[0], device=matrix.device)
        return Aggregation(matrix.mean(dim=0), weights)


@dataclass
class Workload:
    """A model, one batch, and the per-task loss function of a benchmark problem."""

    name: str
    make_model: Callable[[], SharedEncoderModel]
    inputs: object
    losses: Callable[[dict[str, Tensor]], Tensor]
    n_tasks: int


@dataclass
class Timing:
    """The median step time of one method on one workload, in seconds."""

    workload: str
    method: str
    display_name: str
    space: str
    median_s: float


def lenet_workload(
    batch_size: int = 256, device: str = "cpu", tasks: Sequence[str] = ("CL", "RR")
) -> Workload:
    """The Multi-MNIST LeNet on ``tasks`` (CL_RR: K = 2; CL_CR_RL_RR: K = 4), random inputs."""
    from smto.models.lenet import CLASSIFICATION_TASKS, multi_lenet

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 1, 28, 28, generator=g).to(device)
    labels = torch.randint(0, 10, (batch_size,), generator=g).to(device)
    images = torch.randn(batch_size, 28, 28, generator=g).to(device)

    def losses(out: dict[str, Tensor]) -> Tensor:
        return torch.stack(
            [
                nn.functional.nll_loss(out[t], labels)
                if t in CLASSIFICATION_TASKS
                else ((out[t] - images) ** 2).mean()
                for t in tasks
            ]
        )

    name = "lenet" if tuple(tasks) == ("CL", "RR") else f"lenet-{'_'.join(tasks)}"
    return Workload(name, lambda: multi_lenet(tasks).to(device), x, losses, n_tasks=len(tasks))


def heavy_heads_workload(batch_size: int = 256, device: str = "cpu") -> Workload:
    """A model whose heads dominate: a Linear(784, 50)-ReLU encoder and three heads of three
    256-wide layers (K = 3, MSE to random targets), like the dense heads of Cityscapes."""
    from smto.models.base import SharedEncoderModel

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 784, generator=g).to(device)
    targets = torch.randn(3, batch_size, 256, generator=g).to(device)

    def head() -> nn.Module:
        return nn.Sequential(
            nn.Linear(50, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256)
        )

    def make_model() -> SharedEncoderModel:
        encoder = nn.Sequential(nn.Linear(784, 50), nn.ReLU())
        return SharedEncoderModel(encoder, {f"T{k}": head() for k in range(3)}).to(device)

    def losses(out: dict[str, Tensor]) -> Tensor:
        return torch.stack([((out[f"T{k}"] - targets[k]) ** 2).mean() for k in range(3)])

    return Workload("heavy_heads", make_model, x, losses, n_tasks=3)


def mpnn_workload(
    batch_size: int = 16, device: str = "cpu", implementation: str = "fast"
) -> Workload:
    """The QM9 MPNN with 11 targets (K = 11) on random molecules of 9 to 27 atoms (QM9's
    mean is 18): the fast dense encoder, or with ``implementation="pyg"`` the PyG-layer
    reference (given the batch already converted to PyG's layout)."""
    from smto.data.molecules import random_molecules
    from smto.models.mpnn import QM9_TARGETS, qm9_mpnn

    data = random_molecules(batch_size, (9, 27), seed=0, device=device)
    inputs = data.to_pyg() if implementation == "pyg" else data
    targets = torch.randn(batch_size, len(QM9_TARGETS), generator=torch.Generator().manual_seed(0))
    targets = targets.to(device)

    def losses(out: dict[str, Tensor]) -> Tensor:
        # One loss per head, stacked: the engine then traverses each head once.
        return torch.stack([((o - targets[:, i]) ** 2).mean() for i, o in enumerate(out.values())])

    name = "mpnn" if implementation == "fast" else f"mpnn_{implementation}"
    return Workload(
        name,
        lambda: qm9_mpnn(implementation=implementation).to(device),
        inputs,
        losses,
        len(QM9_TARGETS),
    )


def deeplab_workload(
    batch_size: int = 8,
    device: str = "cpu",
    backbone: str = "resnet18",
    shape: tuple[int, int] = (256, 128),
) -> Workload:
    """Cityscapes S_D_I (K = 3): the dilated ResNet with three DeepLab heads on random
    (width, height) ``shape`` images, 19 classes, the problem's own losses (cross-entropy
    ignoring a tenth of the pixels, L1 over the labelled ones)."""
    from smto.models.deeplab import deeplab_model
    from smto.problems.cityscapes import task_loss

    width, height = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, height, width, generator=g).to(device)
    classes = torch.randint(-1, 19, (batch_size, height, width), generator=g)
    disparity = torch.rand(batch_size, height, width, generator=g) * 100
    offsets = torch.randn(batch_size, 2, height, width, generator=g) * 20
    offsets[:, :, : height // 2] = torch.nan  # instance pixels: a part of the image
    targets = {"S": classes.to(device), "D": disparity.to(device), "I": offsets.to(device)}

    def losses(out: dict[str, Tensor]) -> Tensor:
        return torch.stack([task_loss(t, out[t], targets[t]) for t in ("S", "D", "I")])

    def make_model() -> SharedEncoderModel:
        channels = {"S": 19, "D": 1, "I": 2}
        with warnings.catch_warnings():  # from scratch: the timings do not depend on weights
            warnings.simplefilter("ignore", UserWarning)
            return deeplab_model(channels, backbone, (height, width)).to(device)

    name = f"deeplab-r{backbone.removeprefix('resnet')}"
    return Workload(name, make_model, x, losses, n_tasks=3)


def celeba_workload(batch_size: int = 64, device: str = "cpu", size: int = 64) -> Workload:
    """CelebA's 40 attributes (K = 40): the pooled ResNet-18 with one linear logit per
    attribute on random ``size`` x ``size`` images and random 0/1 targets, the problem's
    binary cross-entropy."""
    from smto.data.celeba import TASKS
    from smto.models.classifier import resnet_classifier
    from smto.problems.celeba import task_loss

    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, size, size, generator=g).to(device)
    labels = torch.randint(0, 2, (len(TASKS), batch_size), generator=g).float().to(device)

    def losses(out: dict[str, Tensor]) -> Tensor:
        return torch.stack([task_loss(out[t], labels[i]) for i, t in enumerate(TASKS)])

    def make_model() -> SharedEncoderModel:
        return resnet_classifier(TASKS).to(device)

    return Workload("celeba-r18", make_model, x, losses, n_tasks=len(TASKS))


def nyuv2_workload(
    batch_size: int = 2,
    device: str = "cpu",
    architecture: str = "segnet",
    shape: tuple[int, int] = (384, 288),
) -> Workload:
    """NYUv2 S_D_N (K = 3, Elich et al.'s benchmark): MTAN's SegNet, or the dilated ResNet-50
    with three DeepLab heads (``architecture="deeplab"``), on random (width, height) ``shape``
    images, the problem's own losses (13-class cross-entropy ignoring a tenth of the pixels,
    L1 depth and the cosine normal loss over the valid ones)."""
    from smto.problems.nyuv2 import CLASSES, OUTPUT_CHANNELS, SEGNET_DOWNSAMPLING, nyuv2_loss

    width, height = shape
    if architecture == "segnet" and (width % SEGNET_DOWNSAMPLING or height % SEGNET_DOWNSAMPLING):
        raise ConfigError(
            f"--nyuv2-shape {width} {height}: SegNet needs a width and a height that are "
            f"multiples of {SEGNET_DOWNSAMPLING}"
        )
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 3, height, width, generator=g).to(device)
    classes = torch.randint(-1, CLASSES, (batch_size, height, width), generator=g)
    depth = torch.rand(batch_size, height, width, generator=g) * 10
    depth[:, : height // 10] = torch.nan  # invalid pixels: a band of the image
    normal = torch.nn.functional.normalize(
        torch.randn(batch_size, 3, height, width, generator=g), dim=1
    )
    normal[:, :, : height // 10] = torch.nan
    targets = {"S": classes.to(device), "D": depth.to(device), "N": normal.to(device)}

    def losses(out: dict[str, Tensor]) -> Tensor:
        return torch.stack([nyuv2_loss(t, out[t], targets[t]) for t in ("S", "D", "N")])

    def make_model() -> SharedEncoderModel:
        if architecture == "segnet":
            from smto.models.segnet import segnet_model

            return segnet_model(OUTPUT_CHANNELS).to(device)
        from smto.models.deeplab import deeplab_model

        with warnings.catch_warnings():  # from scratch: the timings do not depend on weights
            warnings.simplefilter("ignore", UserWarning)
            return deeplab_model(OUTPUT_CHANNELS, "resnet50", (height, width)).to(device)

    name = "nyuv2-segnet" if architecture == "segnet" else "nyuv2-deeplab-r50"
    return Workload(name, make_model, x, losses, n_tasks=3)


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "lenet": lenet_workload,
    "lenet4": lambda batch_size=256, device="cpu": lenet_workload(
        batch_size, device, ("CL", "CR", "RL", "RR")
    ),
    "heavy_heads": heavy_heads_workload,
    "mpnn": mpnn_workload,
    "mpnn_pyg": lambda batch_size=16, device="cpu": mpnn_workload(batch_size, device, "pyg"),
    "deeplab-r18": deeplab_workload,
    "deeplab-r50": lambda batch_size=8, device="cpu", shape=(256, 128): deeplab_workload(
        batch_size, device, "resnet50", shape
    ),
    "celeba-r18": celeba_workload,
    "nyuv2-segnet": nyuv2_workload,
    "nyuv2-deeplab-r50": lambda batch_size=2, device="cpu", shape=(384, 288): nyuv2_workload(
        batch_size, device, "deeplab", shape
    ),
}
"""The step benchmark's models by name: each takes (batch_size, device)."""


def _synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Stepper:
    """One method training its own copy of the workload's model (same initial weights),
    through the engine's :func:`~smto.train.step.training_step`."""

    def __init__(self, workload: Workload, method: Method, device: str = "cpu") -> None:
        torch.manual_seed(0)
        self.workload = workload
        self.model = workload.make_model()
        self.method = method.to(device)
        lr = 1e-4
        self.optimizer = torch.optim.Adam(
            [{"params": list(self.model.parameters())}, *optimizer_groups(method, lr)], lr=lr
        )
        self.shared = list(self.model.shared_parameters())
        self.device = device
        self.times: list[float] = []

    def step(self) -> None:
        """One full training step (Auto-Lambda uses the training batch as its validation
        batch: the cost is the same)."""
        inputs = self.workload.inputs
        training_step(
            self.model,
            self.method,
            self.optimizer,
            lambda outputs, _: self.workload.losses(outputs),
            inputs,
            None,
            self.shared,
            validation=(inputs, None),
        )

    def timed_step(self) -> None:
        _synchronize(self.device)
        start = time.perf_counter()
        self.step()
        _synchronize(self.device)
        self.times.append(time.perf_counter() - start)


def run_benchmark(
    workload: Workload,
    methods: Sequence[str],
    repeats: int,
    warmup: int,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    peers: bool | Sequence[str] = False,
    floor: Sequence[str] = FLOOR_MODES,
) -> list[Timing]:
    """Times the floor (with each Jacobian strategy of ``floor``; none when empty), Unit.
    Scal. and each method; with ``peers`` (True: ``("torchjd",)``; or any of "torchjd" and
    "libmtl"), also torchjd's aggregator (:mod:`smto.bench.peers`) and LibMTL's weighting
    (:mod:`smto.bench.libmtl_peers`) of each method they have, in the same step.

    The steps are interleaved (one step of every method per round), so that a slow phase of
    a noisy machine affects all methods alike and the ratios stay comparable. Each warm-up
    step ends an epoch of the methods with per-epoch statistics (DWA, GradNorm, STCH and the
    LibMTL peers), so that after a few (``warmup`` >= 4 for STCH's warm-up) they are timed in
    their steady phase rather than their first epoch's. Methods that need the targets by task
    (:class:`~smto.capabilities.HeadTargets`: BayesAgg-MTL) are left out.
    """
    peer_libraries = ("torchjd",) if peers is True else tuple(peers or ())
    entries: list[tuple[str, str, str, Stepper]] = []
    for mode in floor:
        mean = _MeanOfJacobian(workload.n_tasks)
        mean.engine = GradientEngine(mode)
        entries.append(
            (f"floor:{mode}", f"{FLOOR} ({mode})", "params", Stepper(workload, mean, device))
        )
    for name in ["unit_scal", *[m for m in methods if m != "unit_scal"]]:
        method = registry.create(name, workload.n_tasks)
        if isinstance(method, HeadTargets):  # the workloads give no targets by task name
            continue
        stepper = Stepper(workload, method, device)
        entries.append((name, method.display_name, method.space.value, stepper))
        if "torchjd" in peer_libraries and has_peer(name, workload.n_tasks):
            peer = TorchjdPeer(workload.n_tasks, name)
            entries.append(
                (f"torchjd:{name}", peer.display_name, "params", Stepper(workload, peer, device))
            )
        if "libmtl" in peer_libraries and has_libmtl_peer(name, workload.n_tasks):
            libmtl = libmtl_peer(workload.n_tasks, name)
            libmtl_stepper = Stepper(workload, libmtl, device)
            entries.append(
                (f"libmtl:{name}", libmtl.display_name, libmtl.spec.space, libmtl_stepper)
            )
    for _ in range(warmup):
        for *_, stepper in entries:
            stepper.step()
            if isinstance(stepper.method, EpochEnd):
                stepper.method.end_epoch()
    for round_index in range(repeats):
        for *_, stepper in entries:
            stepper.timed_step()
        if progress:
            progress(f"{workload.name}: round {round_index + 1}/{repeats} done")
    return [
        Timing(workload.name, name, display, space, statistics.median(stepper.times))
        for name, display, space, stepper in entries
    ]


def format_table(timings: Sequence[Timing]) -> str:
    """A Markdown table: median step time and the two ratios, per workload and method."""
    lines = [
        "| model | method | works on | median step (ms) | / Unit. Scal. | / Jacobian floor |",
        "|---|---|---|---:|---:|---:|",
    ]
    for workload in dict.fromkeys(t.workload for t in timings):
        rows = [t for t in timings if t.workload == workload]
        unit = next(t.median_s for t in rows if t.method == "unit_scal")
        floors = [t.median_s for t in rows if t.method.startswith("floor:")]
        for t in rows:
            to_floor = f"{t.median_s / min(floors):.2f}" if floors else "-"
            lines.append(
                f"| {workload} | {t.display_name} | {t.space} | {t.median_s * 1e3:.1f} | "
                f"{t.median_s / unit:.2f} | {to_floor} |"
            )
    return "\n".join(lines)
