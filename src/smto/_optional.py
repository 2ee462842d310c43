"""Optional dependencies: imported where they are used, with an error that names the extra.

The core of smto (the methods, the solvers, training) needs only torch, numpy and scipy.
The rest comes with extras of the package (pyproject.toml): ``bench`` (pandas for tables and
run frames, tqdm for progress bars), ``plots`` (matplotlib), ``sweep`` (Optuna), ``graph``
(PyTorch Geometric). :func:`require` imports one of them or says which extra installs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from smto.errors import MissingExtraError


def require(module: str, extra: str, needed_by: str) -> ModuleType:
    """The module ``module`` (e.g. "pandas", "tqdm.auto"), imported.

    Without it, a :class:`~smto.errors.MissingExtraError` (an ImportError, and an error the
    command line prints on one line) that says what needs it and how to install it, e.g.
    ``smto.report needs pandas: pip install 'smto[bench]'``; the original error is chained
    (and quoted when the package is there but fails to import).
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.partition(".")[0]
        message = f"{needed_by} needs {package}: pip install 'smto[{extra}]'"
        if getattr(error, "name", None) not in (package, module):
            message += f" ({error})"
        raise MissingExtraError(message, name=package) from error
