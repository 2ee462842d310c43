"""Datasets: where they live (``paths``), MNIST (``mnist``) and Multi-MNIST (``multi_mnist``)."""

from smto.data.mnist import (
    MNIST,
    ChecksumError,
    DatasetNotFoundError,
    IdxFormatError,
    load_mnist,
    read_idx,
)
from smto.data.multi_mnist import MultiMNISTSplit, load_multi_mnist, normalize
from smto.data.paths import cache_dir, data_dir

__all__ = [
    "MNIST",
    "ChecksumError",
    "DatasetNotFoundError",
    "IdxFormatError",
    "MultiMNISTSplit",
    "cache_dir",
    "data_dir",
    "load_mnist",
    "load_multi_mnist",
    "normalize",
    "read_idx",
]
