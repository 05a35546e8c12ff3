"""Processes: launching local ranks, process-group set-up, rank and world size."""

from .env import device, init, rank, world_size
from .launch import launch

__all__ = ["device", "init", "launch", "rank", "world_size"]
