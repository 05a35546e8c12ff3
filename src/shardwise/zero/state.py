"""Optimizer state of a sharded optimizer, to and from its full, per-parameter form.

Each rank holds its pieces' state (exp_avg, exp_avg_sq, ...). To save, every per-element state
tensor is laid into a shard of its unit and all-gathered into the full flat buffer, then cut
per parameter, by name: the same form a DDP optimizer saves (see [Note: checkpoint format]).
To load, each rank cuts its pieces back out of the full tensors, at any world size.
"""

from __future__ import annotations

import torch

from .. import comm
from .optimizer import owned_pieces


def _piece_keys(optimizer) -> tuple[list[str], list[str]]:
    """(per-element keys, scalar keys), agreed across ranks."""
    per_element, scalar = set(), set()
    for piece, state in optimizer.state.items():
        if id(piece) not in optimizer._shardwise_origin:
            continue
        for key, value in state.items():
            if torch.is_tensor(value) and value.ndim == 1 and value.numel() == piece.numel():
                per_element.add(key)
            else:
                scalar.add(key)
    everyone = comm.all_gather_object((sorted(per_element), sorted(scalar)), optimizer._shardwise_engine.group)
    per_element = sorted({k for keys, _ in everyone for k in keys})
    scalar = sorted({k for _, keys in everyone for k in keys} - set(per_element))
    return per_element, scalar


def gather_full_state(optimizer, names: dict[int, str]) -> dict[str, dict]:
    """name -> {key: full tensor shaped like the parameter, or scalar value}, on every rank."""
    engine = optimizer._shardwise_engine
    per_element, scalar_keys = _piece_keys(optimizer)
    pieces_by_unit: dict[int, list] = {}
    for piece, unit, layout_piece in owned_pieces(optimizer):
        pieces_by_unit.setdefault(unit.index, []).append((piece, layout_piece))
    scalars = {}
    for piece, state in optimizer.state.items():
        for key in scalar_keys:
            if key in state:
                scalars[key] = state[key].clone() if torch.is_tensor(state[key]) else state[key]
    # Ranks that own no piece still need the scalars (e.g. Adam's step): take them from rank 0.
    scalars = comm.all_gather_object(scalars, engine.group)[0] if scalar_keys else {}
    out: dict[str, dict] = {}
    for unit in engine.units:
        full_by_key = {}
        for key in per_element:
            shard = torch.zeros(unit.layout.shard_numel, dtype=torch.float32, device=engine.master_device)
            for piece, layout_piece in pieces_by_unit.get(unit.index, []):
                value = optimizer.state.get(piece, {}).get(key)
                if value is not None:
                    shard[layout_piece.shard_start:layout_piece.shard_start + layout_piece.numel].copy_(value)
            full = torch.empty(unit.layout.padded_total, dtype=torch.float32, device=engine.master_device)
            comm.all_gather(full, shard, group=engine.group)
            full_by_key[key] = full
        for p, start, n, shape in zip(unit.params, unit.layout.offsets, unit.layout.numels, unit.shapes):
            entry = {key: full[start:start + n].view(shape).clone() for key, full in full_by_key.items()}
            entry.update({k: (v.clone() if torch.is_tensor(v) else v) for k, v in scalars.items()})
            out[names[id(p)]] = entry
    return out


def scatter_full_state(optimizer, names: dict[int, str], saved: dict[str, dict]) -> None:
    """Give each of this rank's pieces its slice of the saved full state."""
    for piece, unit, layout_piece in owned_pieces(optimizer):
        name = names[id(unit.params[layout_piece.index])]
        if name not in saved:
            continue
        state = {}
        for key, value in saved[name].items():
            if torch.is_tensor(value) and value.ndim > 0 and value.shape == unit.shapes[layout_piece.index]:
                flat = value.reshape(-1)[layout_piece.param_start:layout_piece.param_end]
                state[key] = flat.to(piece.device, torch.float32).clone()
            else:
                state[key] = value.clone() if torch.is_tensor(value) else value
        optimizer.state[piece] = state
