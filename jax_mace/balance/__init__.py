"""Balanced data distribution for multi-device training on many small graphs (host-side NumPy).

``plan_epoch`` / ``EpochPlanner`` pack graphs into static-shape device batches with little padding
and equal predicted work per device in every step; ``baselines`` holds the schemes it is
measured against; ``CostModel`` / ``fit_cost_model`` model the per-batch cost.
"""

from .cost import CostModel, fit_cost_model
from .plan import EpochPlan, assemble_plan
from .planner import EpochPlanner, MemoryBudget, plan_epoch

__all__ = [
    "CostModel",
    "EpochPlan",
    "EpochPlanner",
    "MemoryBudget",
    "assemble_plan",
    "fit_cost_model",
    "plan_epoch",
]
