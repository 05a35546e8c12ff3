"""Built-in models: a small character-level GPT for training runs and an MLP for benchmarks."""

from shardwise.models.gpt import GPT, GPTConfig, lm_loss
from shardwise.models.mlp import MLP

__all__ = ["GPT", "GPTConfig", "MLP", "lm_loss"]
