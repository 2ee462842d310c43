"""The relative gain Delta_m (moved to :mod:`smto.problems.delta_m`, which training uses too;
kept here)."""

from smto.problems.delta_m import Values, delta_m

__all__ = ["Values", "delta_m"]
