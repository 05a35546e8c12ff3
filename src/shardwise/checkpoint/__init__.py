"""Checkpoints: full (unsharded) state keyed by parameter name, written atomically."""

from .io import load_checkpoint, save_checkpoint

__all__ = ["load_checkpoint", "save_checkpoint"]
