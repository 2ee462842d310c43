"""smto: specialized multi-task optimizers behind one interface, and a fair benchmark."""

from smto import methods as methods
from smto import optim as optim
from smto.capabilities import EpochEnd, HeadInputs, PostStep, ValidationStep
from smto.errors import (
    ConfigError,
    DataError,
    MissingError,
    NonFiniteError,
    RunStateError,
    SmtoError,
)
from smto.jacobian import GradientEngine, TaskGradients
from smto.method import (
    Aggregation,
    GradientMethod,
    GramMethod,
    GramWeights,
    LossMethod,
    Method,
    RunContext,
    Scale,
    Space,
    StepResult,
)
from smto.registry import available, create, spec

__version__ = "0.1.0"

__all__ = [
    "Aggregation",
    "ConfigError",
    "DataError",
    "EpochEnd",
    "GradientEngine",
    "GradientMethod",
    "GramMethod",
    "GramWeights",
    "HeadInputs",
    "LossMethod",
    "Method",
    "MissingError",
    "NonFiniteError",
    "PostStep",
    "RunContext",
    "RunStateError",
    "Scale",
    "SmtoError",
    "Space",
    "StepResult",
    "TaskGradients",
    "ValidationStep",
    "__version__",
    "available",
    "create",
    "spec",
]
