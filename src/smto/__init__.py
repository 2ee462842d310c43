"""smto: specialized multi-task optimizers behind one interface, and a fair benchmark."""

from smto import methods as methods
from smto import optim as optim
from smto.capabilities import EpochEnd, HeadInputs, PostStep, ValidationStep
from smto.errors import NonFiniteError
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
    "EpochEnd",
    "GradientEngine",
    "GradientMethod",
    "GramMethod",
    "GramWeights",
    "HeadInputs",
    "LossMethod",
    "Method",
    "NonFiniteError",
    "PostStep",
    "RunContext",
    "Scale",
    "Space",
    "StepResult",
    "TaskGradients",
    "ValidationStep",
    "__version__",
    "available",
    "create",
    "spec",
]
