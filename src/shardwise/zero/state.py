"""The state a ZeRO rank holds, as checkpoints and memory reports see it (`ZeroState`).

Each rank holds its pieces of the fp32 masters and their optimizer state (exp_avg, exp_avg_sq,
...). To save, each rank writes its pieces, keyed by parameter name and element range (see
[Note: checkpoint format]); to load, each rank cuts its pieces back out of the full tensors
reassembled from any set of shards, at any world size.
"""

from __future__ import annotations

import torch
from torch import nn

from ..strategy.module import optimizer_tensors
from ..strategy.pieces import SavedPiece, make_piece, state_slice
from ..strategy.prepare import parameter_names
from .optimizer import owned_pieces


class ZeroState:
    """This rank's pieces of the fp32 masters with their optimizer state (the `ShardedState`
    of a ZeRO model, see [Note: wrapper interface])."""

    def __init__(self, engine, module: nn.Module, optimizer):
        self.engine, self.module, self.optimizer = engine, module, optimizer

    def tensors(self):
        yield from self.engine.state_tensors()
        yield from optimizer_tensors(self.optimizer)

    def shapes(self) -> dict[str, tuple]:
        """The shapes the user gave the parameters (stage 3 holds them empty between gathers)."""
        logical = {id(p): tuple(shape) for u in self.engine.units for p, shape in zip(u.params, u.shapes)}
        return {name: logical.get(id(p), tuple(p.shape)) for name, p in self.module.named_parameters() if p.requires_grad}

    def pieces(self, rank: int, world_size: int) -> list[SavedPiece]:
        names = parameter_names(self.module)
        return [make_piece(names[id(unit.params[where.index])], where.param_start, where.param_end, piece,
                           self.optimizer.state.get(piece, {}))
                for piece, unit, where in owned_pieces(self.optimizer)]

    def load(self, params: dict[str, torch.Tensor], optim: dict[str, dict]) -> None:
        by_name = dict(self.module.named_parameters())
        with torch.no_grad():
            self.engine.load_full_parameters({id(by_name[name]): value for name, value in params.items()})
        scatter_full_state(self.optimizer, parameter_names(self.module), optim)

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def save_elsewhere(self, folder: str) -> dict[str, str]:
        return {}

    def load_elsewhere(self, path: str) -> None:
        pass


def scatter_full_state(optimizer, names: dict[int, str], saved: dict[str, dict]) -> None:
    """Give each of this rank's pieces its slice of the saved full state."""
    for piece, unit, layout_piece in owned_pieces(optimizer):
        name = names[id(unit.params[layout_piece.index])]
        if name not in saved:
            continue
        numel = unit.layout.numels[layout_piece.index]
        optimizer.state[piece] = state_slice(saved[name], numel, layout_piece.param_start, layout_piece.param_end,
                                             piece.device, torch.float32)
