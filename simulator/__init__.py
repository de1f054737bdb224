"""Analytical tile-level cost model of Generalized Neighborhood Attention (NumPy only).

``simulate`` counts the KV tiles each Q tile of a GNA kernel visits under a static, dynamic or
1-D tiling and derives the speedup bounds of the GNA paper; ``recommend`` searches strides and
tile shapes. Importable without JAX; matplotlib is needed only for plots.
"""

from simulator import geometry
from simulator.engine import TILINGS, simulate
from simulator.recommend import Recommendation, recommend
from simulator.result import SimulationResult, amdahl

__all__ = [
    "TILINGS",
    "Recommendation",
    "SimulationResult",
    "amdahl",
    "geometry",
    "recommend",
    "simulate",
]
