"""Models of the benchmark problems: a shared encoder and one head per task."""

from smto.models.base import SharedEncoderModel
from smto.models.lenet import multi_lenet

__all__ = ["SharedEncoderModel", "multi_lenet"]
