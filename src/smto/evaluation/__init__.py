"""Evaluation: relative gain Delta_m against single-task references."""

from smto.evaluation.delta_m import delta_m

__all__ = ["delta_m"]
