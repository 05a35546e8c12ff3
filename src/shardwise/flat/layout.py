"""How parameters lie in one flat buffer and how that buffer is split over ranks (pure).

[Note: flat layout]
Parameters are laid end to end (`offsets`), the total is padded up to a multiple of the world
size N, and rank r owns the contiguous slice [r·S/N, (r+1)·S/N) of the padded buffer. A
parameter may straddle two ranks' slices; `pieces(rank)` lists the parts of each parameter
that fall in a rank's slice, which is what that rank's optimizer updates. Element-wise
optimizers (SGD, Adam, AdamW, ...) give the same result on pieces as on whole tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .ranges import offsets, parts_in_range


@dataclass(frozen=True)
class Piece:
    """The part of one parameter that lies in one rank's shard."""

    index: int
    """Which parameter (position in the layout)."""
    param_start: int
    """First element of the part, counted in the flattened parameter."""
    param_end: int
    """One past its last element."""
    shard_start: int
    """Where the part starts inside the rank's shard."""

    @property
    def numel(self) -> int:
        return self.param_end - self.param_start


@dataclass(frozen=True)
class FlatLayout:
    numels: tuple[int, ...]
    """Element count of each parameter, in buffer order."""
    world_size: int
    """Ranks the buffer is split over."""

    def __post_init__(self):
        if self.world_size < 1:
            raise ValueError(f"world size must be at least 1, got {self.world_size}")

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        return tuple(offsets(self.numels))

    @property
    def total(self) -> int:
        return sum(self.numels)

    @property
    def padded_total(self) -> int:
        """Total rounded up to a multiple of the world size (at least one element per rank)."""
        n = self.world_size
        return max(n, -(-self.total // n) * n)

    @property
    def padding(self) -> int:
        return self.padded_total - self.total

    @property
    def shard_numel(self) -> int:
        return self.padded_total // self.world_size

    def shard_range(self, rank: int) -> tuple[int, int]:
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside a world of {self.world_size}")
        return rank * self.shard_numel, (rank + 1) * self.shard_numel

    def pieces(self, rank: int) -> list[Piece]:
        """Parts of parameters inside rank's shard, in buffer order (padding excluded)."""
        return [Piece(*part) for part in parts_in_range(self.numels, *self.shard_range(rank))]
