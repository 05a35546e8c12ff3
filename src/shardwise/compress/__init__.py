"""Gradient compression for data parallelism: each compressor a small object with its
error-feedback state, applied bucket by bucket ([Note: compressed buckets] in base.py)."""

from .base import Codec, Compressor
from .cast import Cast
from .int8 import Int8
from .powersgd import PowerSGD
from .spec import COMPRESS_NAMES, compressor_from_spec
from .topk import TopK

__all__ = ["COMPRESS_NAMES", "Cast", "Codec", "Compressor", "Int8", "PowerSGD", "TopK", "compressor_from_spec"]
