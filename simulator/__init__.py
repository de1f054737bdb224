"""Analytical tile-level cost model of Generalized Neighborhood Attention (NumPy only)."""

from simulator import geometry

__all__ = ["geometry"]
