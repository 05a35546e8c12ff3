"""Gradient compression for data parallelism: each compressor a small object with its
error-feedback state, applied bucket by bucket ([Note: compressed buckets] in base.py)."""

from .base import Codec, Compressor
from .spec import COMPRESS_NAMES, compressor_from_spec

__all__ = ["COMPRESS_NAMES", "Codec", "Compressor", "compressor_from_spec"]
