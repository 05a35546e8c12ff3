"""ZeRO stages 1-3: sharded optimizer state, gradients and parameters."""

from .config import ZeRO

__all__ = ["ZeRO"]
