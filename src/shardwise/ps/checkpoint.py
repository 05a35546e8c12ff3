"""Servers save and restore their key ranges through the checkpoint format.

A server's shard file holds its pieces of each parameter (by name, as element ranges of the
flattened parameter) and their optimizer state, exactly what a ZeRO rank writes (see
[Note: checkpoint format]), so a checkpoint saved under a parameter server loads under any
strategy, and the reverse. Worker 0 asks each server to write (SAVE) or read (LOAD); the
servers answer when done.
"""

from __future__ import annotations

import os

import torch

from ..checkpoint.shards import assemble


def server_file(server: int) -> str:
    return f"server{server:05d}.pt"


def save_server_shard(server, folder: str) -> tuple[str, str]:
    """Write this server's shard into `folder`; return (file name, SHA-256)."""
    from ..checkpoint.io import _write_file

    params, optim = {}, {}
    for piece, name, start, end, _ in server.pieces:
        params.setdefault(name, []).append((start, end, piece.detach().clone()))
        state = server.optimizer.state.get(piece, {})
        per_element = {k: v.detach().clone() for k, v in state.items() if torch.is_tensor(v) and v.ndim == 1 and v.numel() == piece.numel()}
        scalars = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in state.items() if k not in per_element}
        optim.setdefault(name, []).append((start, end, per_element, scalars))
    name = server_file(server.rank)
    digest = _write_file(os.path.join(folder, name), lambda f: torch.save({"params": params, "optim": optim}, f))
    return name, digest


def load_server_shard(server, path: str) -> None:
    """Read the checkpoint at `path` and take this server's range of its full state."""
    from ..checkpoint.io import read_meta, read_shards

    folder, meta = read_meta(path)
    shapes = {name: tuple(shape) for name, shape in meta["shapes"].items()}
    params, optim, _ = assemble(read_shards(path, folder, meta), shapes)
    groups = meta["param_groups"]
    with torch.no_grad():
        for piece, name, start, end, shape in server.pieces:
            piece.copy_(params[name].reshape(-1)[start:end])
            state = {}
            for key, value in optim.get(name, {}).items():
                if torch.is_tensor(value) and value.ndim > 0 and tuple(value.shape) == tuple(shape):
                    state[key] = value.reshape(-1)[start:end].float().clone()
                else:
                    state[key] = value.clone() if torch.is_tensor(value) else value
            server.optimizer.state[piece] = state
    for group, saved in zip(server.optimizer.param_groups, groups):
        group.update(saved)
