"""Tensor parallelism: Linear layers split column- and row-wise over a group (Megatron-LM), and
embeddings, output layers and cross-entropy split by vocabulary."""

from .config import TensorParallel
from .vocab import vocab_parallel_cross_entropy

__all__ = ["TensorParallel", "vocab_parallel_cross_entropy"]
