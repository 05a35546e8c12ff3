"""The state of a model whose ranks each hold some of its parameters, some as slices: pipeline
stages, tensor-parallel shards, and both on a mesh.

Each rank keeps `local` parameters; a parameter in `slices` is this rank's slice of a larger
one (`Slice`: the full shape, the dimension it is cut along and the indices kept). `saves(p)`
says whether this rank writes p into checkpoints (one copy of every element over all ranks:
the first stage holding a tied weight, tensor-parallel rank 0 for what is not split, data-
parallel replica 0). Pieces are element ranges of the full, flattened parameters, so such a
checkpoint loads into any other layout, and any checkpoint loads into this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .module import held_tensors
from .pieces import SavedPiece, is_per_element, make_piece
from .slices import element_ranges, take


@dataclass(frozen=True)
class Slice:
    full_shape: tuple[int, ...]
    dim: int
    indices: tuple[int, ...]


@dataclass(frozen=True)
class Share:
    """Elements [start, end) of a local parameter (flattened) whose optimizer state is kept by
    `holder` (the parameter itself, or a piece of it an optimizer steps), from its element 0."""

    start: int
    end: int
    holder: nn.Parameter


class PartsState:
    def __init__(self, optimizer, local: list[nn.Parameter], names: dict[int, str], shapes: dict[str, tuple],
                 saves: Callable[[nn.Parameter], bool], slices: dict[int, Slice] | None = None,
                 shares: Callable[[nn.Parameter], list[Share]] | None = None,
                 extra: Callable[[], dict] | None = None, load_extra: Callable[[dict], None] | None = None,
                 own: list[torch.Tensor] = ()):
        """`shares(p)`: the parts of p this rank saves, with where their optimizer state is
        (default: all of p, its own state); `own`: buffers the strategy keeps besides."""
        self.optimizer, self.local, self.names, self._shapes = optimizer, local, names, shapes
        self.saves, self.slices, self.own = saves, slices or {}, list(own)
        self.shares = shares or (lambda p: [Share(0, p.numel(), p)])
        self._extra, self._load_extra = extra, load_extra

    def tensors(self):
        yield from held_tensors(self.local, self.own, self.optimizer)

    def shapes(self) -> dict[str, tuple]:
        return dict(self._shapes)

    def _ranges(self, p: nn.Parameter) -> list[tuple[int, int, int, int]]:
        cut = self.slices.get(id(p))
        if cut is None:
            return [(0, p.numel(), 0, p.numel())]
        return element_ranges(cut.full_shape, cut.dim, list(cut.indices))

    def pieces(self, rank: int, world_size: int) -> list[SavedPiece]:
        out = []
        for p in self.local:
            if not p.requires_grad or not self.saves(p):
                continue
            flat = p.detach().reshape(-1)
            for share in self.shares(p):
                state = self.optimizer.state.get(share.holder, {})
                size = share.end - share.start
                for full_start, full_end, start, end in self._ranges(p):
                    lo, hi = max(start, share.start), min(end, share.end)
                    if lo >= hi:
                        continue
                    sliced = {k: (v.reshape(-1)[lo - share.start:hi - share.start] if is_per_element(v, size) else v)
                              for k, v in state.items()}
                    at = full_start + (lo - start)
                    out.append(make_piece(self.names[id(p)], at, at + (hi - lo), flat[lo:hi], sliced))
        return out

    def _mine(self, p: nn.Parameter, full: torch.Tensor) -> torch.Tensor:
        cut = self.slices.get(id(p))
        if cut is None:
            return full.reshape(p.shape)
        return take(full.reshape(cut.full_shape), cut.dim, list(cut.indices))

    def load(self, params: dict[str, torch.Tensor], optim: dict[str, dict]) -> None:
        for p in self.local:
            name = self.names[id(p)]
            if name in params:
                with torch.no_grad():
                    p.copy_(self._mine(p, params[name]))
            if name not in optim:
                continue
            full_numel = 1
            for d in self._shapes.get(name, p.shape):
                full_numel *= d
            for share in self.shares(p):
                self.optimizer.state[share.holder] = {
                    k: (self._mine(p, v).reshape(-1)[share.start:share.end].to(p.device, p.dtype).clone()
                        .view_as(share.holder) if is_per_element(v, full_numel)
                        else (v.clone() if torch.is_tensor(v) else v))
                    for k, v in optim[name].items()}

    def extra_state(self) -> dict[str, torch.Tensor]:
        return self._extra() if self._extra is not None else {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        if self._load_extra is not None:
            self._load_extra(state)

    def save_elsewhere(self, folder: str) -> dict[str, str]:
        return {}

    def load_elsewhere(self, path: str) -> None:
        pass
