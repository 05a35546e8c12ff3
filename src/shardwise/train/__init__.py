"""The built-in training job: the small GPT on the standard-library corpus."""

from .config import TrainConfig
from .job import run_training

__all__ = ["TrainConfig", "run_training"]
