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

from ..strategy.pieces import assemble, make_piece, state_slice, to_file
from ..strategy.shard_files import read_meta, read_shards, write_file


def server_file(server: int) -> str:
    return f"server{server:05d}.pt"


def save_server_shard(server, folder: str) -> tuple[str, str]:
    """Write this server's shard into `folder`; return (file name, SHA-256)."""
    shard = to_file([make_piece(name, start, end, piece, server.optimizer.state.get(piece, {}))
                     for piece, name, start, end, _ in server.pieces])
    name = server_file(server.rank)
    digest = write_file(os.path.join(folder, name), lambda f: torch.save(shard, f))
    return name, digest


def load_server_shard(server, path: str) -> None:
    """Read the checkpoint at `path` and take this server's range of its full state."""
    folder, meta = read_meta(path)
    shapes = {name: tuple(shape) for name, shape in meta["shapes"].items()}
    params, optim, _ = assemble(read_shards(path, folder, meta), shapes)
    groups = meta["param_groups"]
    with torch.no_grad():
        for piece, name, start, end, shape in server.pieces:
            piece.copy_(params[name].reshape(-1)[start:end])
            numel = params[name].numel()
            server.optimizer.state[piece] = state_slice(optim.get(name, {}), numel, start, end, dtype=torch.float32)
    for group, saved in zip(server.optimizer.param_groups, groups):
        group.update(saved)
