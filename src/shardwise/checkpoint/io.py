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

import hashlib
import json
import os
import shutil
import uuid

import torch

from .. import comm
from ..errors import ConfigError
from ..runtime import env
from ..strategy.state import unwrap
from .apply import check_same_model, load_full_state, trainable_shapes
from .shards import assemble, local_shard

FORMAT = "shardwise-checkpoint"
VERSION = 2


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
    shard = local_shard(model, optimizer, rank, world)
    shard["rng"] = torch.get_rng_state()
    error, digest = None, None
    try:
        os.makedirs(target, exist_ok=True)
        digest = _write_file(os.path.join(target, f"rank{rank:05d}.pt"), lambda f: torch.save(shard, f))
    except OSError as exc:
        error = f"rank {rank}: {exc.strerror or exc}"
    results = comm.all_gather_object((error, digest))
    errors = [e for e, _ in results if e]
    client = getattr(optimizer, "_shardwise_client", None)
    server_files = client.save(os.path.abspath(target)) if client is not None and rank == 0 and not errors else {}
    if rank == 0 and not errors:
        meta = {
            "format": FORMAT, "version": VERSION, "strategy": getattr(model, "strategy_name", "none"),
            "world_size": world, "shapes": trainable_shapes(model),
            "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
            "extra": extra or {}, "files": {**{f"rank{r:05d}.pt": d for r, (_, d) in enumerate(results)}, **server_files},
            "torch": torch.__version__,
        }
        try:
            _write_file(os.path.join(target, "meta.json"), lambda f: f.write(json.dumps(meta, indent=1).encode()))
            _fsync_folder(target)
            _write_file(os.path.join(path, "LATEST.tmp"), lambda f: f.write(folder.encode()))
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


def load_checkpoint(path, model, optimizer) -> dict:
    """Restore model and optimizer (any strategy, any world size); return the saved `extra`."""
    path = os.fspath(path)
    folder, meta = read_meta(path)
    shards = read_shards(path, folder, meta)
    shapes = {name: tuple(shape) for name, shape in meta["shapes"].items()}
    check_same_model(model, shapes, path)
    params, optim, incomplete = assemble(shards, shapes)
    if incomplete:
        raise ConfigError(f"checkpoint {path} is incomplete: no shard holds all of '{incomplete[0]}'")
    whole = next((s.get("whole", {}) for s in shards if "whole" in s), {})
    load_full_state(model, optimizer, params, optim, whole, meta["param_groups"])
    rank = env.rank()
    client = getattr(optimizer, "_shardwise_client", None)
    if client is not None:  # the servers take their ranges; then every worker pulls afresh
        if rank == 0:
            client.load(os.path.abspath(path))
        comm.barrier()
        client.join()
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


def read_meta(path: str) -> tuple[str, dict]:
    """The folder of the latest complete save under `path`, and its metadata."""
    latest = os.path.join(path, "LATEST")
    if os.path.isfile(latest):
        with open(latest) as f:
            folder = os.path.join(path, f.read().strip())
    elif os.path.isfile(os.path.join(path, "meta.json")):
        folder = path
    else:
        raise ConfigError(f"no checkpoint at {path}")
    try:
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
    except OSError:
        raise ConfigError(f"checkpoint {path} is incomplete: {folder} has no meta.json") from None
    except ValueError:
        raise ConfigError(f"checkpoint {path} is corrupt: its meta.json is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a shardwise checkpoint")
    if meta.get("version") != VERSION:
        raise ConfigError(f"checkpoint {path} has format version {meta.get('version')}; this shardwise reads version {VERSION}")
    return folder, meta


def read_shards(path: str, folder: str, meta: dict) -> list[dict]:
    shards = []
    for name, expected in sorted(meta["files"].items()):
        file = os.path.join(folder, name)
        if not os.path.isfile(file):
            raise ConfigError(f"checkpoint {path} is incomplete: {name} is missing")
        if _sha256(file) != expected:
            raise ConfigError(f"checkpoint {path} is corrupt: {name} does not match its checksum")
        try:
            shards.append(torch.load(file, weights_only=True, map_location="cpu"))
        except Exception as exc:  # unpickling refuses anything but tensors and plain data
            raise ConfigError(f"checkpoint {path} is corrupt: {name} cannot be read ({str(exc).splitlines()[0]})") from None
    return shards


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


def _write_file(file: str, write) -> str:
    """Write, flush and fsync; return the file's SHA-256."""
    with open(file, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return _sha256(file)


def _sha256(file: str) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
