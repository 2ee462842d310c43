"""smto: specialized multi-task optimizers behind one interface, and a fair benchmark."""

from smto import methods as methods
from smto import optim as optim
from smto.jacobian import GradientEngine, TaskGradients
from smto.method import Aggregation, GradientMethod, LossMethod, Method, Scale, Space, StepResult
from smto.registry import available, create, spec

__version__ = "0.1.0"

__all__ = [
    "Aggregation",
    "GradientEngine",
    "GradientMethod",
    "LossMethod",
    "Method",
    "Scale",
    "Space",
    "StepResult",
    "TaskGradients",
    "__version__",
    "available",
    "create",
    "spec",
]
