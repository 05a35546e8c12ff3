"""Periodic communication: post-local SGD and DiLoCo, strategies whose ranks train on their own
and meet every few steps."""

from .config import DiLoCo, LocalSGD

__all__ = ["DiLoCo", "LocalSGD"]
