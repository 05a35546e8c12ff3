"""shardwise: distributed training and distributed optimization on top of PyTorch.

The public names of docs/api.md; see README.md for the tour.
"""

from .api import strategy_names, wrap
from .checkpoint import load_checkpoint, save_checkpoint
from .comm import comm_stats, reset_comm_stats
from .ddp import DDP, NaiveDDP
from .localsgd import DiLoCo, LocalSGD
from .pipeline import Pipeline
from .tensor_parallel import TensorParallel
from .mesh import Mesh
from .errors import ConfigError, ShardwiseError, WorkerError
from .runtime import data_parallel_rank, data_parallel_size, init, launch, rank, world_size
from .strategy.state import full_state_dict, gathered, model_state_bytes
from .ps import ParameterServer
from .zero import ZeRO

__version__ = "0.1.0"

__all__ = [
    "DDP", "DiLoCo", "LocalSGD", "Mesh", "NaiveDDP", "ParameterServer", "Pipeline", "TensorParallel", "ZeRO",
    "ConfigError", "ShardwiseError", "WorkerError",
    "comm_stats", "reset_comm_stats", "full_state_dict", "gathered", "model_state_bytes",
    "init", "launch", "load_checkpoint", "save_checkpoint", "rank", "world_size", "data_parallel_rank",
    "data_parallel_size", "strategy_names", "wrap",
]
