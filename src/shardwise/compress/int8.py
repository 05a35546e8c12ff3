"""int8 compression with a scale per chunk and error feedback.

Each chunk of `chunk` values is sent as int8 values q = round(x / s) with s = max|x| / 127 for
that chunk, plus s in fp32 (4 bytes per chunk): about a quarter of fp32's bytes. Gloo cannot
sum int8 (sums would wrap around anyway), so the quantized chunks and scales are all-gathered
and every rank decodes and averages the N versions in fp32 itself. An all-gather moves
(N-1)·S/4 bytes per rank against an fp32 all-reduce's 2(N-1)/N·S: 4x fewer at N = 2, the same
at N = 8, more beyond; measured here at 2 ranks for 8.4M values, the all-gather took 11 ms
against 26 ms (fp32 all-reduce) and 18 ms (fp16). What rounding left out goes to the next step
(error feedback), so the rounding error does not accumulate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import comm
from ..errors import ConfigError
from .base import COMPRESS_TAG_BASE, Finish, Residual, ResidualState, world_of


class Int8Codec(ResidualState):
    def __init__(self, bucket_index: int, flat: torch.Tensor, chunk: int):
        self.tag = COMPRESS_TAG_BASE + 4 * bucket_index
        self.chunk = max(1, min(chunk, flat.numel()))  # a small bucket is one chunk, unpadded
        self.chunks = -(-flat.numel() // self.chunk)
        padded = self.chunks * self.chunk
        self.residual = Residual(flat)
        self.padded = torch.zeros(padded, dtype=torch.float32, device=flat.device)  # corrected gradient, padded
        self.q = torch.empty(padded, dtype=torch.int8, device=flat.device)
        self.scales = torch.empty(self.chunks, dtype=torch.float32, device=flat.device)
        self.gathered_q: torch.Tensor | None = None
        self.gathered_scales: torch.Tensor | None = None

    def encode(self, flat: torch.Tensor) -> None:
        """Quantize `flat` + residual into q and scales; the residual keeps what rounding left out."""
        n = flat.numel()
        corrected = self.residual.correct(flat)
        self.padded[:n].copy_(corrected)
        blocks = self.padded.view(self.chunks, self.chunk)
        torch.amax(blocks.abs(), dim=1, out=self.scales)
        self.scales.div_(127.0).clamp_(min=torch.finfo(torch.float32).tiny)
        quantized = torch.round(blocks / self.scales[:, None]).clamp_(-127, 127)
        self.q.view(self.chunks, self.chunk).copy_(quantized)
        sent = (quantized * self.scales[:, None]).view(-1)[:n]
        self.residual.keep(corrected, sent)

    def start(self, flat, views, group):
        world = world_of(group)
        self.encode(flat)
        if self.gathered_q is None:
            self.gathered_q = torch.empty(world * self.q.numel(), dtype=torch.int8, device=flat.device)
            self.gathered_scales = torch.empty(world * self.chunks, dtype=torch.float32, device=flat.device)
        works = [comm.all_gather(self.gathered_q, self.q, group=group, async_op=True, tag=self.tag),
                 comm.all_gather(self.gathered_scales, self.scales, group=group, async_op=True, tag=self.tag + 1)]
        return Finish(works, lambda: self.decode(flat, world))

    def decode(self, flat: torch.Tensor, world: int) -> None:
        """Average of every rank's dequantized chunks, in rank order (the same on every rank)."""
        q = self.gathered_q.view(world, self.chunks, self.chunk)
        scales = self.gathered_scales.view(world, self.chunks, 1)
        total = torch.zeros(self.chunks, self.chunk, dtype=torch.float32, device=flat.device)
        for r in range(world):
            total.addcmul_(q[r].float(), scales[r])
        flat.copy_(total.view(-1)[:flat.numel()].div_(world))



@dataclass(frozen=True)
class Int8:
    """`compress="int8"`: per-chunk scales, error feedback."""

    chunk: int = 256
    """Values per scale. On the built-in GPT (600 steps, clipped) 256 ended 0.16% above DDP's
    validation loss and 2048 1.04% above, for 3.94x against 3.99x fewer bytes."""

    name = "int8"

    def __post_init__(self):
        if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1:
            raise ConfigError(f"int8 chunk (values per scale) must be a whole number of at least 1, got {self.chunk!r}")

    def codec(self, bucket_index, flat, views) -> Int8Codec:
        return Int8Codec(bucket_index, flat, self.chunk)
