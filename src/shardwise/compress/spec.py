"""Compression named by a string, as `DDP(compress=...)` and `--compress` take it."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Compressor
from .cast import Cast
from .int8 import Int8
from .powersgd import PowerSGD
from .topk import TopK

COMPRESS_NAMES = ("none", "fp16", "bf16", "int8", "topk:RATIO", "powersgd:RANK")


def compressor_from_spec(spec):
    """None for "none"/None; a compressor object as is; else parse "fp16", "bf16", "int8",
    "topk:RATIO" (0 < RATIO <= 1), "powersgd:RANK"."""
    if spec is None or spec == "none":
        return None
    if not isinstance(spec, str):
        if not isinstance(spec, Compressor):
            raise ConfigError(f"compress must be one of {', '.join(COMPRESS_NAMES)} or a compressor, got {spec!r}")
        return spec
    kind, _, argument = spec.partition(":")
    try:
        if kind in ("fp16", "bf16") and not argument:
            return Cast(kind)
        if kind == "int8" and not argument:
            return Int8()
        if kind == "topk":
            return TopK(float(argument))
        if kind == "powersgd":
            return PowerSGD(int(argument))
    except ConfigError as error:  # a well-formed name with a bad value: its own message says which
        raise ConfigError(f"compress '{spec}': {error}") from None
    except ValueError:
        pass
    raise ConfigError(f"compress must be one of {', '.join(COMPRESS_NAMES)}, got '{spec}'")
