"""The registry: method names to method classes, with their hyperparameters.

Names are matched loosely: case, spaces, dots, dashes and underscores are ignored, so
"Nash-MTL", "nash_mtl" and "nashmtl" are the same method.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from smto.errors import ConfigError
from smto.method import Method, RunContext


@dataclass(frozen=True)
class Hyperparameter:
    """One constructor argument of a method: its name, default and annotation."""

    name: str
    default: Any
    annotation: str


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: its canonical name, class and registry-level defaults."""

    name: str
    cls: type[Method]
    defaults: dict[str, Any] = field(default_factory=dict)
    display_name: str = ""

    @property
    def hyperparameters(self) -> dict[str, Hyperparameter]:
        """The method's hyperparameters (constructor arguments other than ``n_tasks``)."""
        result = {}
        for name, param in inspect.signature(self.cls.__init__).parameters.items():
            if name in ("self", "n_tasks") or param.kind in (
                param.VAR_KEYWORD,
                param.VAR_POSITIONAL,
            ):
                continue
            default = self.defaults.get(name, param.default)
            if default is inspect.Parameter.empty:
                default = None
            annotation = (
                param.annotation
                if isinstance(param.annotation, str)
                else getattr(param.annotation, "__name__", str(param.annotation))
            )
            result[name] = Hyperparameter(name, default, annotation)
        return result


_REGISTRY: dict[str, MethodSpec] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def register(
    name: str,
    cls: type[Method],
    *,
    aliases: tuple[str, ...] = (),
    display_name: str = "",
    **defaults: Any,
) -> None:
    """Registers ``cls`` under ``name`` (and ``aliases``), with registry-level defaults."""
    spec = MethodSpec(name, cls, dict(defaults), display_name or cls.display_name)
    unknown = set(defaults) - set(spec.hyperparameters)
    if unknown:
        raise ValueError(f"{name}: defaults for unknown hyperparameters {sorted(unknown)}")
    for key in (_key(name), *(_key(a) for a in aliases)):
        if key in _ALIASES and _ALIASES[key] != name:
            raise ValueError(f"method name {key!r} is already registered for {_ALIASES[key]!r}")
        _ALIASES[key] = name
    _REGISTRY[name] = spec


def available() -> list[str]:
    """The canonical names of all registered methods."""
    return sorted(_REGISTRY)


def spec(name: str) -> MethodSpec:
    """The registered method called ``name``; a clear error listing valid names otherwise."""
    canonical = _ALIASES.get(_key(name))
    if canonical is None:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(available())}")
    return _REGISTRY[canonical]


def create(
    name: str, n_tasks: int, context: RunContext | None = None, **hyperparameters: Any
) -> Method:
    """Builds the method ``name`` for ``n_tasks`` tasks with the given hyperparameters.

    ``context`` (a trainer's :class:`smto.method.RunContext`) supplies the defaults a method
    derives from the run (:meth:`smto.method.Method.defaults_from`); registry defaults come
    below them, the given hyperparameters above. Unknown hyperparameters and values of the
    wrong type are clear errors that list what is valid; each method checks the range of its
    values itself.
    """
    method_spec = spec(name)
    valid = method_spec.hyperparameters
    unknown = sorted(set(hyperparameters) - set(valid))
    if unknown:
        listing = ", ".join(f"{h.name}={h.default!r}" for h in valid.values()) or "none"
        raise ConfigError(
            f"unknown hyperparameter(s) {unknown} for method {method_spec.name!r}; "
            f"valid (with defaults): {listing}"
        )
    for key, value in hyperparameters.items():
        _check_type(method_spec.name, valid[key], value)
    derived = {} if context is None else method_spec.cls.defaults_from(context)
    arguments = {**method_spec.defaults, **derived, **hyperparameters}
    try:
        method = method_spec.cls(n_tasks, **arguments)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(str(error)) from error
    method.display_name = method_spec.display_name  # variants: "MGDA-UB", "RLW-Dirichlet"
    return method


def _check_type(method: str, hp: Hyperparameter, value: Any) -> None:
    default = hp.default
    if default is None or value is None:
        return
    expected: tuple[type, ...]
    if isinstance(default, bool):
        expected = (bool,)
    elif isinstance(default, int):
        expected = (int,)
    elif isinstance(default, float):
        expected = (int, float)
    elif isinstance(default, str):
        expected = (str,)
    elif isinstance(default, (tuple, list)):
        expected = (tuple, list)
    else:
        return
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        raise ConfigError(
            f"hyperparameter {hp.name!r} of method {method!r} must be of type "
            f"{'/'.join(t.__name__ for t in expected)} (default {default!r}), got {value!r}"
        )
