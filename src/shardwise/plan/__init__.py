"""The planner: memory and step-time formulas (pure), shared by `plan`, `bench` and tests."""

from .formulas import activation_bytes, comm_bytes_per_step, comm_elements_per_step, model_states
from .model_spec import ModelSpec, from_hf_config, from_shape, gpt_params
from .plan import plan_rows

__all__ = ["ModelSpec", "activation_bytes", "comm_bytes_per_step", "comm_elements_per_step", "from_hf_config",
           "from_shape", "gpt_params", "model_states", "plan_rows"]
