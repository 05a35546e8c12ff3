"""Processes: launching local ranks, process-group set-up, rank and world size."""

from .env import data_parallel_rank, data_parallel_size, device, init, rank, world_size
from .launch import launch

__all__ = ["data_parallel_rank", "data_parallel_size", "device", "init", "launch", "rank", "world_size"]
