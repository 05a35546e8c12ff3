"""Save and load a training state under any strategy and world size.

[Note: checkpoint format]
A checkpoint is a folder holding a file `LATEST` and one subfolder per save. `LATEST` names the
complete subfolder; it is replaced atomically (write, fsync, rename) only after every rank's
shard and the metadata are on disk, so a crash at any moment leaves the previous checkpoint
loadable. After the rename the checkpoint folder and its parent are fsynced, so that the new
`LATEST` survives a power loss too; only then are older saves removed, and only this process's
own (the last `keep` of them stay): saves another run left in the same folder are never touched. A subfolder holds one
`rankNNNNN.pt` per saving rank (see checkpoint/shards.py) and `meta.json`: format and version,
strategy, world size, parameter names and shapes, optimizer group options, the caller's
`extra` (step, sampler position, ...) and the SHA-256 of every shard file. Loading checks the
checksums, reads tensors only (`weights_only=True`, never arbitrary pickled code), reassembles
full tensors from whatever ranks wrote them, and hands each rank of the new job its part.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid

import torch

from .. import comm
from ..errors import ConfigError
from ..runtime import env
from ..strategy.module import state_of, strategy_module
from ..strategy.pieces import assemble
from ..strategy.shard_files import FORMAT, VERSION, read_meta, read_shards, write_file
from .apply import check_same_model, load_full_state
from .shards import local_shard

_own_saves: dict[str, list[str]] = {}  # checkpoint folder -> this process's saves there, oldest first


def save_checkpoint(path, model, optimizer, extra=None, keep: int | None = 2) -> None:
    """Every rank writes its shard; then `path/LATEST` points at the new save (atomic).

    Of the saves this process made under `path`, the newest `keep` stay (None: all); nothing
    else under `path` is deleted. See [Note: checkpoint format]."""
    path = os.fspath(path)
    if keep is not None and (not isinstance(keep, int) or keep < 1):
        raise ConfigError(f"keep must be a whole number of at least 1 (or None: keep all), got {keep!r}")
    rank, world = env.rank(), env.world_size()
    token = comm.all_gather_object(uuid.uuid4().hex[:12])[0]  # one name for the whole job
    folder = f"ckpt-{token}"
    target = os.path.join(path, folder)
    state = state_of(model, optimizer)
    shard = local_shard(model, state, rank, world)
    extra_state = state.extra_state()  # every rank: it may be a collective
    if rank == 0 and extra_state:
        shard["strategy_state"] = {key: t.detach().cpu().clone() for key, t in extra_state.items()}
    shard["rng"] = torch.get_rng_state()
    error, digest = None, None
    try:
        os.makedirs(target, exist_ok=True)
        digest = write_file(os.path.join(target, f"rank{rank:05d}.pt"), lambda f: torch.save(shard, f))
    except OSError as exc:
        error = f"rank {rank}: {exc.strerror or exc}"
    results = comm.all_gather_object((error, digest))
    errors = [e for e, _ in results if e]
    server_files = state.save_elsewhere(os.path.abspath(target)) if not errors else {}
    if rank == 0 and not errors:
        meta = {
            "format": FORMAT, "version": VERSION, "strategy": strategy_name(model),
            "world_size": world, "shapes": state.shapes(),
            "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
            "extra": extra or {}, "files": {**{f"rank{r:05d}.pt": d for r, (_, d) in enumerate(results)}, **server_files},
            "torch": torch.__version__,
        }
        try:
            write_file(os.path.join(target, "meta.json"), lambda f: f.write(json.dumps(meta, indent=1).encode()))
            _fsync_folder(target)
            write_file(os.path.join(path, "LATEST.tmp"), lambda f: f.write(folder.encode()))
            os.replace(os.path.join(path, "LATEST.tmp"), os.path.join(path, "LATEST"))
            _fsync_folder(path)
            _fsync_folder(os.path.dirname(os.path.abspath(path)))
        except OSError as exc:
            errors.append(f"rank 0: {exc.strerror or exc}")
        else:
            _forget_old_saves(path, folder, keep)
    errors = [e for e in comm.all_gather_object(errors)[0] if e]
    if errors:
        if rank == 0:
            shutil.rmtree(target, ignore_errors=True)
        raise ConfigError(f"could not save checkpoint {path} ({errors[0]}); the previous checkpoint is untouched")


def strategy_name(model) -> str:
    wrapped = strategy_module(model)
    return wrapped.strategy_name if wrapped is not None else "none"


def load_checkpoint(path, model, optimizer) -> dict:
    """Restore model and optimizer (any strategy, any world size); return the saved `extra`."""
    path = os.fspath(path)
    folder, meta = read_meta(path)
    shards = read_shards(path, folder, meta)
    shapes = {name: tuple(shape) for name, shape in meta["shapes"].items()}
    state = state_of(model, optimizer)
    check_same_model(state.shapes(), shapes, path)
    params, optim, incomplete = assemble(shards, shapes)
    if incomplete:
        raise ConfigError(f"checkpoint {path} is incomplete: no shard holds all of '{incomplete[0]}'")
    whole = next((s.get("whole", {}) for s in shards if "whole" in s), {})
    load_full_state(model, optimizer, state, params, optim, whole, meta["param_groups"])
    state.load_extra_state(next((s["strategy_state"] for s in shards if "strategy_state" in s), {}))
    state.load_elsewhere(os.path.abspath(path))
    rank = env.rank()
    if meta["world_size"] == env.world_size() and rank < len(shards):
        torch.set_rng_state(shards[rank]["rng"])
    return meta["extra"]


def read_full_state(path) -> tuple[dict, dict]:
    """(model state_dict by name with trainable parameters, buffers and frozen ones; meta), no process group."""
    folder, meta = read_meta(os.fspath(path))
    shards = read_shards(os.fspath(path), folder, meta)
    params, _, incomplete = assemble(shards, {n: tuple(s) for n, s in meta["shapes"].items()})
    if incomplete:
        raise ConfigError(f"checkpoint {path} is incomplete: no shard holds all of '{incomplete[0]}'")
    whole = next((s.get("whole", {}) for s in shards if "whole" in s), {})
    return {**params, **whole}, meta


def _forget_old_saves(path: str, newest: str, keep: int | None) -> None:
    own = _own_saves.setdefault(os.path.abspath(path), [])
    own.append(newest)
    while keep is not None and len(own) > keep:
        shutil.rmtree(os.path.join(path, own.pop(0)), ignore_errors=True)


def _fsync_folder(folder: str) -> None:
    """Make a folder's entries (a new file, a rename) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
