"""fp16 and bf16 compression: cast, all-reduce in 16 bits, cast back (PyTorch's
`fp16_compress_hook` and `bf16_compress_hook`). Half the bytes of an fp32 all-reduce. The
gradient is divided by the world size before the cast, so the sum of N values cannot overflow
fp16 where their mean does not. No error feedback: the rounding is unbiased noise, as in PyTorch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import comm
from .base import Finish, world_of


class CastCodec:
    def __init__(self, flat: torch.Tensor, dtype: torch.dtype):
        self.buffer = torch.empty(flat.numel(), dtype=dtype, device=flat.device)

    def start(self, flat, views, group):
        flat.div_(world_of(group))
        self.buffer.copy_(flat)
        work = comm.all_reduce(self.buffer, group=group, async_op=True)
        return Finish([work], lambda: flat.copy_(self.buffer))

    def state_tensors(self) -> dict:
        return {}

    def load_state_tensors(self, state: dict) -> None:
        pass


@dataclass(frozen=True)
class Cast:
    """`compress="fp16"` or `"bf16"`."""

    dtype: str = "fp16"

    @property
    def name(self) -> str:
        return self.dtype

    def codec(self, bucket_index, flat, views) -> CastCodec:
        return CastCodec(flat, torch.float16 if self.dtype == "fp16" else torch.bfloat16)
