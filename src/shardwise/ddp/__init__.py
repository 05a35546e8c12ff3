"""Data parallelism: `DataParallel` (bucketed, overlapped) and `NaiveDataParallel` (reference)."""

from .config import DDP, NaiveDDP

__all__ = ["DDP", "NaiveDDP"]
