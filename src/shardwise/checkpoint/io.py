"""Save and load a training state, independent of strategy and world size.

[Note: checkpoint format]
A checkpoint is a folder: `model.pt` (the full state_dict of the unwrapped model),
`optimizer.pt` (per-parameter optimizer state keyed by parameter *name*, plus the parameter
groups' options with member names) and `meta.json` (format, version, strategy, world size,
the caller's `extra`). Keys by name rather than by position make the files loadable under any
strategy and world size. Tensor files are read with `weights_only=True`: loading never runs
pickled code. Rank 0 writes into a temporary folder beside the target and renames it into
place, so a crash mid-save leaves the previous checkpoint whole.
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
from ..strategy.prepare import parameter_names
from ..strategy.state import full_state_dict, unwrap
from ..zero import state as zero_state

FORMAT = "shardwise-checkpoint"
VERSION = 1


def save_checkpoint(path, model, optimizer, extra=None) -> None:
    """Write model, optimizer state and `extra` (plain data) to folder `path`, atomically."""
    path = os.fspath(path)
    model_state = full_state_dict(model)
    optimizer_state = _optimizer_state_by_name(model, optimizer)
    if env.rank() == 0:
        meta = {"format": FORMAT, "version": VERSION, "world_size": env.world_size(),
                "strategy": getattr(model, "strategy_name", type(model).__name__), "extra": extra or {}}
        _write_atomically(path, model_state, optimizer_state, meta)
    comm.barrier()


def load_checkpoint(path, model, optimizer) -> dict:
    """Restore model and optimizer from folder `path`; return the `extra` it was saved with."""
    path = os.fspath(path)
    meta = _read_meta(path)
    try:
        model_state = torch.load(os.path.join(path, "model.pt"), weights_only=True, map_location="cpu")
        optimizer_state = torch.load(os.path.join(path, "optimizer.pt"), weights_only=True, map_location="cpu")
    except Exception as exc:
        raise ConfigError(f"checkpoint {path} is corrupt or unreadable: {str(exc).splitlines()[0]}") from None
    module = unwrap(model)
    try:
        module.load_state_dict(model_state)
    except RuntimeError as exc:
        raise ConfigError(f"checkpoint {path} is of a different model: {str(exc).splitlines()[1].strip()}") from None
    _load_optimizer_state_by_name(model, optimizer, optimizer_state)
    return meta["extra"]


def _write_atomically(path: str, model_state: dict, optimizer_state: dict, meta: dict) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(staging)
    try:
        torch.save(model_state, os.path.join(staging, "model.pt"))
        torch.save(optimizer_state, os.path.join(staging, "optimizer.pt"))
        with open(os.path.join(staging, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        retired = None
        if os.path.exists(path):
            retired = f"{staging}-old"
            os.replace(path, retired)
        os.replace(staging, path)
        if retired:
            shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _read_meta(path: str) -> dict:
    meta_path = os.path.join(path, "meta.json")
    if not os.path.isdir(path) or not os.path.exists(meta_path):
        raise ConfigError(f"no checkpoint at {path} (expected a folder with meta.json)")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"checkpoint {path} has an unreadable meta.json: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a shardwise checkpoint")
    if meta.get("version") != VERSION:
        raise ConfigError(f"checkpoint {path} has format version {meta.get('version')}, this shardwise reads {VERSION}")
    return meta


def _optimizer_state_by_name(model, optimizer) -> dict:
    """Full per-parameter state keyed by name, whatever the strategy holds locally."""
    names = parameter_names(unwrap(model))
    options = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    if hasattr(optimizer, "_shardwise_engine"):
        return {"state": zero_state.gather_full_state(optimizer, names), "param_groups": options}
    state = {names[id(p)]: {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in s.items()}
             for p, s in optimizer.state.items()}
    return {"state": state, "param_groups": options}


def _load_optimizer_state_by_name(model, optimizer, saved: dict) -> None:
    module = unwrap(model)
    by_name = dict(module.named_parameters())
    unknown = [name for name in saved["state"] if name not in by_name]
    if unknown:
        raise ConfigError(f"checkpoint has optimizer state for '{unknown[0]}', which the model does not have")
    if len(saved["param_groups"]) != len(optimizer.param_groups):
        raise ConfigError(f"checkpoint has {len(saved['param_groups'])} optimizer parameter groups, "
                          f"the optimizer has {len(optimizer.param_groups)}")
    for group, saved_group in zip(optimizer.param_groups, saved["param_groups"]):
        group.update({k: v for k, v in saved_group.items() if k != "params"})
    if hasattr(optimizer, "_shardwise_engine"):
        zero_state.scatter_full_state(optimizer, parameter_names(module), saved["state"])
        return
    for name, param_state in saved["state"].items():
        optimizer.state[by_name[name]] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in param_state.items()}
