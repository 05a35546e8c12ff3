"""Top-k sparsification with error feedback (Deep Gradient Compression, Lin et al. 2018).

Each step every rank sends the k = ceil(ratio · S) entries of its corrected gradient (gradient
plus residual) largest in magnitude, as int32 indices and fp32 values; everything else stays
in the residual for later steps. Ranks choose different entries, so indices and values are
all-gathered (k·8 bytes per rank) and each rank scatter-adds the N sparse vectors, in rank
order, and divides by N. `topk:1.0` sends every entry and equals DDP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import comm
from ..errors import ConfigError
from .base import COMPRESS_TAG_BASE, Finish, Residual, ResidualState, world_of


class TopKCodec(ResidualState):
    def __init__(self, bucket_index: int, flat: torch.Tensor, ratio: float):
        self.tag = COMPRESS_TAG_BASE + 4 * bucket_index
        self.k = max(1, math.ceil(ratio * flat.numel()))
        self.residual = Residual(flat)
        self.indices = torch.empty(self.k, dtype=torch.int32, device=flat.device)
        self.values = torch.empty(self.k, dtype=torch.float32, device=flat.device)
        self.sent = torch.zeros_like(flat)
        self.gathered_indices: torch.Tensor | None = None
        self.gathered_values: torch.Tensor | None = None

    def encode(self, flat: torch.Tensor) -> None:
        corrected = self.residual.correct(flat)
        if self.k >= corrected.numel():
            chosen = torch.arange(corrected.numel(), device=corrected.device)
        else:
            chosen = torch.topk(corrected.abs(), self.k, sorted=False).indices
        self.indices.copy_(chosen)
        torch.index_select(corrected, 0, chosen, out=self.values)
        self.sent.zero_().index_copy_(0, chosen, self.values)
        self.residual.keep(corrected, self.sent)

    def start(self, flat, views, group):
        world = world_of(group)
        self.encode(flat)
        if self.gathered_indices is None:
            self.gathered_indices = torch.empty(world * self.k, dtype=torch.int32, device=flat.device)
            self.gathered_values = torch.empty(world * self.k, dtype=torch.float32, device=flat.device)
        works = [comm.all_gather(self.gathered_indices, self.indices, group=group, async_op=True, tag=self.tag),
                 comm.all_gather(self.gathered_values, self.values, group=group, async_op=True, tag=self.tag + 1)]
        return Finish(works, lambda: self.decode(flat, world))

    def decode(self, flat: torch.Tensor, world: int) -> None:
        flat.zero_()
        for r in range(world):
            part = slice(r * self.k, (r + 1) * self.k)
            flat.index_add_(0, self.gathered_indices[part].long(), self.gathered_values[part])
        flat.div_(world)



@dataclass(frozen=True)
class TopK:
    """`compress="topk:RATIO"`: the fraction of entries each rank sends per step."""

    ratio: float = 0.01

    def __post_init__(self):
        if not 0 < self.ratio <= 1:
            raise ConfigError(f"top-k ratio must be in (0, 1], got {self.ratio}")

    @property
    def name(self) -> str:
        return f"topk:{self.ratio:g}"

    def codec(self, bucket_index, flat, views) -> TopKCodec:
        return TopKCodec(bucket_index, flat, self.ratio)
