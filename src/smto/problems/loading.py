"""Batches of an image problem through a ``torch.utils.data.DataLoader`` with workers.

Cityscapes and NYUv2 keep their decoded splits in memory and make each sample's targets (and
its augmentation) in a map-style Dataset; this turns such a Dataset into the problem's
batches. Training batches are augmented through the Dataset's ``epoch_seed``, drawn from the
engine's generator, so a resumed run sees the same batches and the number of workers does
not change them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import torch

from smto.problems.base import Batch, index_batches


def loader_batches(
    dataset: torch.utils.data.Dataset,
    tasks: Sequence[str],
    batch_size: int,
    generator: torch.Generator | None,
    workers: int,
    training: bool = False,
    augment: bool = False,
) -> Iterator[Batch]:
    """The batches of ``dataset`` (samples are dicts with "image" and one target per task),
    shuffled by ``generator`` when given. With ``training``, a last batch of one sample is
    dropped (BatchNorm cannot train on it, e.g. in the ASPP's image pooling) and, with
    ``augment``, the dataset's ``epoch_seed`` is drawn from ``generator``."""
    order = [idx.tolist() for idx in index_batches(len(dataset), batch_size, generator)]
    if training:
        if len(order) > 1 and len(order[-1]) == 1:
            order.pop()
        if augment and generator is not None:
            dataset = copy.copy(dataset)
            dataset.epoch_seed = int(torch.randint(0, 2**62, (), generator=generator))
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=order, num_workers=workers if len(order) > 1 else 0
    )
    for sample in loader:
        yield Batch(sample["image"], {t: sample[t] for t in tasks}, len(sample["image"]))
