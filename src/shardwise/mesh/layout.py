"""Which rank sits where on a dp x pp x tp mesh, and the groups along each dimension (pure).

[Note: mesh layout]
Rank = (d·P + p)·T + t for data-parallel index d, pipeline index p and tensor-parallel index t
(Megatron-LM's order: the tensor-parallel ranks, which talk the most, are neighbours, e.g.
the same machine). Along each dimension a group holds the ranks that differ only in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class MeshShape:
    dp: int
    pp: int
    tp: int

    def __post_init__(self):
        for name in ("dp", "pp", "tp"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"mesh {name} must be a positive whole number, got {value!r}")

    @property
    def size(self) -> int:
        return self.dp * self.pp * self.tp

    def rank(self, d: int, p: int, t: int) -> int:
        return (d * self.pp + p) * self.tp + t

    def coords(self, rank: int) -> tuple[int, int, int]:
        t = rank % self.tp
        p = (rank // self.tp) % self.pp
        return rank // (self.tp * self.pp), p, t

    def groups(self, dim: str) -> list[list[int]]:
        """Every group along `dim` ("dp", "pp" or "tp"), each in index order, in a fixed order."""
        d_, p_, t_ = range(self.dp), range(self.pp), range(self.tp)
        if dim == "tp":
            return [[self.rank(d, p, t) for t in t_] for d in d_ for p in p_]
        if dim == "pp":
            return [[self.rank(d, p, t) for p in p_] for d in d_ for t in t_]
        if dim == "dp":
            return [[self.rank(d, p, t) for d in d_] for p in p_ for t in t_]
        raise ValueError(f"unknown mesh dimension {dim!r}")
