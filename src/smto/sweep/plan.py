"""A sweep's plan: its configurations (grid points) and slots (configuration x seed).

A slot is one run to do. Its key is the run's id (``RunConfig.run_id()``: the configuration
and the seed), so a slot's run directory is ``root/key`` and running a slot again resumes or
returns the same run. A TPE sweep plans no grid: its stage-1 configurations are the ones its
searches suggest (:func:`configuration`), each one slot at the first seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from smto.evaluation.selection import configuration_key
from smto.sweep.spec import Sweep, point_settings, points, run_config
from smto.train.config import RunConfig

Values = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Configuration:
    """One grid point of one method: ``settings`` are the swept values (shared ones by field
    name, the method's own as ``method.name``), ``config`` the run at the first seed."""

    tasks: str
    method: str
    settings: dict[str, Any]
    config: RunConfig

    @property
    def key(self) -> str:
        """The configuration's key (smto.evaluation.selection.configuration_key)."""
        return configuration_key(self.config.to_dict())

    def with_seed(self, seed: int) -> RunConfig:
        """The run configuration of this configuration with ``seed``."""
        return dataclasses.replace(self.config, seed=seed)


@dataclass(frozen=True)
class Slot:
    """One planned run: a configuration at one seed, in stage 1 (the grid) or 2 (extra seeds
    of the chosen configuration)."""

    key: str
    stage: int
    method: str
    configuration: str
    seed: int
    settings: dict[str, Any]
    config: dict[str, Any]

    def attrs(self) -> dict[str, Any]:
        """The user attributes of the slot's trials (everything a worker needs but its run
        root, which is the worker's own: anyone who can write to the storage could change
        what it holds)."""
        return {
            "slot": self.key,
            "stage": self.stage,
            "method": self.method,
            "configuration": self.configuration,
            "seed": self.seed,
            "settings": self.settings,
            "config": self.config,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Slot:
        """The slot a trial's user attributes describe (:meth:`attrs`)."""
        fields = ("stage", "method", "configuration", "seed", "settings", "config")
        return cls(key=attrs["slot"], **{name: attrs[name] for name in fields})


def configurations(sweep: Sweep, reference: Values | None = None) -> list[Configuration]:
    """Every configuration of a grid sweep; multi-task runs pick their best epoch against the
    single-task validation ``reference`` (RunConfig.reference)."""
    return [
        _configuration(sweep, tasks, method, shared, own, reference)
        for tasks, method, shared, own in points(sweep)
    ]


def configuration(
    sweep: Sweep, tasks: str, method: str, settings: dict[str, Any], reference: Values | None
) -> Configuration:
    """The configuration of ``method`` with the swept ``settings`` (names as in
    :meth:`Sweep.space`: shared fields, then ``method.name``), e.g. a TPE suggestion."""
    own_names = sweep.method_grids.get(method, {})
    shared = {k: settings[k] for k in sweep.grid}
    own = {k: settings[f"{method}.{k}"] for k in own_names}
    return _configuration(sweep, tasks, method, shared, own, reference)


def _configuration(
    sweep: Sweep,
    tasks: str,
    method: str,
    shared: dict[str, Any],
    own: dict[str, Any],
    reference: Values | None,
) -> Configuration:
    ref = None if sweep.single_task else reference
    config = run_config(sweep, tasks, method, shared, own, ref)
    return Configuration(tasks, method, point_settings(method, shared, own), config)


def slots(configs: Iterable[Configuration], seeds: Iterable[int], stage: int) -> list[Slot]:
    """The slots of ``configs`` at each of ``seeds``."""
    result = []
    seeds = list(seeds)
    for configuration in configs:
        key = configuration.key
        for seed in seeds:
            config = configuration.with_seed(seed)
            result.append(
                Slot(
                    key=config.run_id(),
                    stage=stage,
                    method=configuration.method,
                    configuration=key,
                    seed=seed,
                    settings=configuration.settings,
                    config=config.to_dict(),
                )
            )
    return result
