"""smto's exception types.

:class:`SmtoError` is a failure that the user can fix (a bad option, a missing or corrupt
file, a run directory in use): the command line prints its message on one line and exits
with status 2, while any other exception is a bug and keeps its traceback. Its subclasses
also derive from the built-in type a caller would expect (``ValueError``,
``FileNotFoundError``), so ``except ValueError`` keeps working. :class:`NonFiniteError` is the
one exception every method raises on non-finite input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class SmtoError(Exception):
    """A failure the user can fix; its message says what is wrong and what to do."""


class MissingExtraError(SmtoError, ImportError):
    """An optional dependency (an extra of the package) that is not installed; the message
    names the extra to install."""


class ConfigError(SmtoError, ValueError):
    """An invalid option, configuration, hyperparameter or input file content."""


class MissingError(SmtoError, FileNotFoundError):
    """A file or directory the user named (or that a run needs) does not exist."""


class DataError(SmtoError, ValueError):
    """A dataset or cache file that is corrupt, forged or of another format."""


class RunStateError(SmtoError, RuntimeError):
    """A run directory whose state cannot be trusted or used: a checkpoint of another run,
    a corrupt checkpoint or record, or a directory another process is training in."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that a run stops as "interrupted" (and resumes)."""


class NonFiniteError(FloatingPointError):
    """A task loss, a method's objective term or a task gradient is NaN or infinite.

    ``tasks`` are the indices of the tasks concerned and ``quantity`` what was non-finite
    ("loss", "objective term", "gradient"). A trainer maps the indices to task names with
    :meth:`describe` and records the run as diverged; nothing has been written into
    ``.grad`` of the shared parameters when a gradient method raises it.
    """

    def __init__(
        self, quantity: str, tasks: Sequence[int], values: Sequence[float] | None = None
    ) -> None:
        self.quantity = quantity
        self.tasks = list(tasks)
        self.values = None if values is None else [float(v) for v in values]
        super().__init__(self.describe())

    def describe(self, task_names: Sequence[str] | None = None) -> str:
        """The message, with the tasks named by ``task_names`` (indices by default)."""
        names = [
            task_names[k] if task_names is not None and k < len(task_names) else f"task {k}"
            for k in self.tasks
        ]
        shown = ", ".join(
            f"{n} = {v:.4g}" if self.values is not None else n
            for n, v in zip(names, self.values or [0.0] * len(names))
        )
        return (
            f"non-finite {self.quantity} of {shown}: the training diverged (lower the learning "
            "rate, check the inputs and targets for NaN, or clip the gradients)"
        )


def check_finite(quantity: str, values: Tensor) -> None:
    """Raises :class:`NonFiniteError` naming the entries of the (K,) tensor ``values`` that
    are NaN or infinite. One host synchronization."""
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return
    bad = (~finite).nonzero().flatten().tolist()
    flat = values.detach().flatten()
    raise NonFiniteError(quantity, bad, [float(flat[k]) for k in bad])


def check_rows(quantity: str, matrix: Tensor) -> None:
    """Raises :class:`NonFiniteError` naming the rows (tasks) of the K x N ``matrix`` that
    hold a NaN or an infinity. One host synchronization."""
    finite = torch.isfinite(matrix).all(dim=1)
    if bool(finite.all()):
        return
    raise NonFiniteError(quantity, (~finite).nonzero().flatten().tolist())
