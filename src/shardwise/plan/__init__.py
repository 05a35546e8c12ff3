"""The planner: memory and step-time formulas (pure), shared by `plan`, `bench` and tests. It knows
strategies only through their declared `PlanTraits` ([Note: strategy interface])."""

from .formulas import (PLAN_PRECISIONS, activation_bytes, comm_bytes_per_step, comm_elements_per_step, model_states,
                       modelled_strategies, plan_traits)
from .model_spec import ModelSpec, from_hf_config, from_shape, gpt_params
from .plan import plan_rows

__all__ = ["PLAN_PRECISIONS", "ModelSpec", "activation_bytes", "comm_bytes_per_step", "comm_elements_per_step",
           "from_hf_config", "from_shape", "gpt_params", "model_states", "modelled_strategies", "plan_rows", "plan_traits"]
