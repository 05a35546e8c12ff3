"""Tensor parallelism: Linear layers split column- and row-wise over a group (Megatron-LM)."""

from .config import TensorParallel

__all__ = ["TensorParallel"]
