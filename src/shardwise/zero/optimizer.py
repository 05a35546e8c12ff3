"""The user's optimizer, rebuilt over the pieces of parameters this rank owns.

The returned object is an instance of a subclass of the user's optimizer class (so
`isinstance(opt, torch.optim.AdamW)` holds) with the same defaults and parameter groups, each
group holding this rank's pieces (see [Note: flat layout]) whose gradients are views into the
gradient shards. `step()` runs the engine around the class's own step: unscale and skip under
fp16, then refresh and gather the parameters; `zero_grad()` clears the shards.

Its `state_dict()` holds this rank's shard only, so it carries a "shardwise" mark (rank, world
size, stage, layout fingerprint) and `load_state_dict` refuses a shard from another rank or
layout; `sw.save_checkpoint`/`sw.load_checkpoint` save and reshard the full state.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from ..errors import ConfigError
from ..strategy.optim_rebuild import optimizer_over_pieces, piece_parameter
from .engine import ZeroEngine

_SHARDED_CLASSES: dict[type, type] = {}


class ShardedOptimizerMixin:
    _shardwise_engine: ZeroEngine

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        engine = self._shardwise_engine
        if not engine.before_step():
            return loss
        # Pieces of parameters no rank used keep no gradient, as under PyTorch DDP with
        # find_unused_parameters: the step leaves them alone (see [Note: unused parameters]).
        hidden = [(piece, piece.grad) for piece, unit, layout_piece in owned_pieces(self)
                  if engine.unit_base[unit.index] + layout_piece.index in engine.globally_unused] \
            if engine.globally_unused else []
        for piece, _ in hidden:
            piece.grad = None
        try:
            super().step()
        finally:
            for piece, grad in hidden:
                piece.grad = grad
        engine.after_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._shardwise_engine.zero_grad()

    def skipped_steps_in_a_row(self) -> int:
        """fp16: steps the loss scaler skipped (inf/NaN gradients) since the last good one; else 0."""
        scaler = self._shardwise_engine.scaler
        return 0 if scaler is None else scaler.skipped_in_a_row

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """Clip by the global gradient norm over every rank's shards; returns the norm before clipping."""
        return self._shardwise_engine.clip_grad_norm_(max_norm, norm_type)

    def state_dict(self) -> dict:
        """This rank's shard of the optimizer state, marked with whose shard it is."""
        state = super().state_dict()
        state["shardwise"] = shard_mark(self._shardwise_engine)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Resume this rank's own shard; a shard of another rank, world size or layout is refused."""
        mark, expected = state_dict.get("shardwise"), shard_mark(self._shardwise_engine)
        if mark != expected:
            whose = "an unsharded optimizer" if mark is None else \
                f"rank {mark.get('rank')} of {mark.get('world_size')} under zero{mark.get('stage')} (layout {mark.get('layout')})"
            raise ConfigError(f"this optimizer state is the shard of {whose}, not of rank {expected['rank']} of "
                              f"{expected['world_size']} under zero{expected['stage']} (layout {expected['layout']}); "
                              "save and load with sw.save_checkpoint / sw.load_checkpoint, which reshard")
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "shardwise"})


def shard_mark(engine: ZeroEngine) -> dict:
    """Whose shard an optimizer state is: rank, world size, stage, and a fingerprint of the units."""
    layout = repr([(unit.layout.numels, unit.layout.world_size) for unit in engine.units]).encode()
    return {"rank": engine.rank, "world_size": engine.world_size, "stage": engine.stage,
            "layout": hashlib.sha256(layout).hexdigest()[:16]}


def owned_pieces(optimizer):
    """(piece, unit, layout piece) for each of this rank's pieces, in group order (placeholders skipped)."""
    for group in optimizer.param_groups:
        for piece in group["params"]:
            origin = optimizer._shardwise_origin.get(id(piece))
            if origin is not None:
                yield piece, *origin


def sharded_class(cls: type) -> type:
    if cls not in _SHARDED_CLASSES:
        _SHARDED_CLASSES[cls] = type(f"Sharded{cls.__name__}", (ShardedOptimizerMixin, cls), {})
    return _SHARDED_CLASSES[cls]


def shard_optimizer(optimizer: torch.optim.Optimizer, engine: ZeroEngine) -> torch.optim.Optimizer:
    pieces_of: dict[int, list[nn.Parameter]] = {}
    origin: dict[int, tuple] = {}  # id(piece) -> (unit, Piece): where each piece comes from
    for unit in engine.units:
        for layout_piece, (position, master_piece, grad_piece) in zip(unit.pieces, unit.piece_views()):
            piece = piece_parameter(master_piece, grad_piece)
            pieces_of.setdefault(id(unit.params[position]), []).append(piece)
            origin[id(piece)] = (unit, layout_piece)
    sharded = optimizer_over_pieces(optimizer, pieces_of, sharded_class(type(optimizer)), engine.master_device)
    sharded._shardwise_engine = engine
    sharded._shardwise_origin = origin
    return sharded
