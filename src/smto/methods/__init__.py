"""All methods, one module each, and their registry lines."""

from smto.methods.fixed import FixedWeights
from smto.methods.unit_scal import UnitScal
from smto.registry import register

register("unit_scal", UnitScal, aliases=("uniform", "ew", "equal_weighting"))
register("fixed", FixedWeights, aliases=("fixed_weights", "fw"))

__all__ = ["FixedWeights", "UnitScal"]
