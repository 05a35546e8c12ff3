"""The words shardwise uses in more than one place: precisions and byte units.

Strategy names live in one place too, the registry (`shardwise.api`), since naming a strategy
means knowing how to build it.

[Note: precisions]
A run's precision is one of `PRECISIONS`: fp32, or bf16/fp16 compute. Where a strategy keeps
fp32 master weights (ZeRO) the 16-bit kinds are what Rajbhandari et al. call mixed precision;
the planner, which counts bytes and not dtypes, accepts `mixed` as a name for either 16-bit kind.
Dtype names given to a strategy's options (`param_dtype="bfloat16"`) map to the same dtypes.

[Note: byte units]
MiB (2**20 bytes) size buffers: `bucket_mb` and the like are MiB, as PyTorch DDP's `bucket_cap_mb`.
MB (10**6 bytes) and GB (10**9) report measurements and predictions, as network and memory
vendors quote them. A name says which: `MIB` or `MB`, never a bare 1024 * 1024 or 1e6.
"""

from __future__ import annotations

import torch

from .errors import ConfigError

MIB = 1 << 20
"""Bytes in a mebibyte: the unit of buffer sizes (bucket_mb)."""
MB = 10 ** 6
"""Bytes in a megabyte: the unit of reported sizes and rates."""
GB = 10 ** 9
"""Bytes in a gigabyte: the planner's unit."""

PRECISIONS = ("fp32", "bf16", "fp16")
"""A run's precision: fp32, or 16-bit compute (see [Note: precisions])."""
MIXED = "mixed"
"""The planner's name for 16-bit compute with fp32 masters, either kind."""

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}


def as_dtype(value) -> torch.dtype | None:
    """A torch dtype from a precision or dtype name (a dtype or None is returned as is)."""
    if value is None or isinstance(value, torch.dtype):
        return value
    try:
        return _DTYPES[str(value)]
    except KeyError:
        raise ConfigError(f"unknown dtype '{value}'; choose from {', '.join(PRECISIONS)}") from None


def check_precision(precision: str, flag: str = "--precision") -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"{flag} must be {', '.join(PRECISIONS[:-1])} or {PRECISIONS[-1]}, got '{precision}'")
    return precision


def bytes_per_value(precision: str) -> int:
    """Bytes of one compute value: 4 for fp32, 2 for the 16-bit kinds (`mixed` included)."""
    if precision == MIXED or precision in ("bf16", "fp16"):
        return 2
    if precision == "fp32":
        return 4
    raise ConfigError(f"unknown precision '{precision}'; choose from {', '.join((*PRECISIONS, MIXED))}")
