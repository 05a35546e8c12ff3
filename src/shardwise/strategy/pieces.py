"""Pieces of parameters with their optimizer state: what each rank saves, and how full tensors
are put back together from them (see [Note: checkpoint format] in checkpoint/io.py).

A piece is the element range [start, end) of one flattened parameter, by name, its fp32 values
and the optimizer state of those elements. Optimizer state is either per element (a tensor with
one value per element of the parameter, such as Adam's moments) or scalar (Adam's step), which
goes with every piece. `split_state` and `state_slice` are the one place that tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..flat.ranges import even_range
from .prepare import parameter_names, unique_parameters


@dataclass
class SavedPiece:
    name: str
    start: int
    end: int
    values: torch.Tensor
    """fp32, 1D, on the CPU: elements [start, end) of the flattened parameter."""
    state: dict = field(default_factory=dict)
    """Per-element optimizer state of those elements, 1D tensors of end - start values."""
    scalars: dict = field(default_factory=dict)
    """Scalar optimizer state (Adam's step)."""


def is_per_element(value, numel: int) -> bool:
    """Whether an optimizer-state value has one entry per element of a tensor of `numel` elements."""
    return torch.is_tensor(value) and value.ndim > 0 and value.numel() == numel


def split_state(state: dict, numel: int) -> tuple[dict, dict]:
    """(per-element state flattened to 1D, scalar state copied) of one tensor's optimizer state."""
    per_element, scalars = {}, {}
    for key, value in state.items():
        if is_per_element(value, numel):
            per_element[key] = value.detach().reshape(-1)
        else:
            scalars[key] = value.detach().clone() if torch.is_tensor(value) else value
    return per_element, scalars


def state_slice(full: dict, numel: int, start: int, end: int, device=None, dtype=None) -> dict:
    """The optimizer state of elements [start, end) of a parameter of `numel` elements, from its
    full state: per-element values sliced (cast to `dtype` if given), scalars copied."""
    out = {}
    for key, value in full.items():
        if is_per_element(value, numel):
            piece = value.reshape(-1)[start:end]
            out[key] = piece.to(device or piece.device, dtype or piece.dtype).clone()
        else:
            out[key] = value.clone() if torch.is_tensor(value) else value
    return out


def make_piece(name: str, start: int, end: int, values: torch.Tensor, state: dict) -> SavedPiece:
    """A piece from a 1D tensor of its values and that tensor's own optimizer state."""
    per_element, scalars = split_state(state, values.numel())
    return SavedPiece(name, start, end, values.detach().float().cpu().clone(),
                      {k: v.cpu().clone() for k, v in per_element.items()}, scalars)


def even_pieces(module: nn.Module, optimizer, rank: int, world_size: int) -> list[SavedPiece]:
    """A replicated model's pieces on `rank`: an even split of every trainable parameter, so that
    saving is spread over the ranks."""
    names = parameter_names(module)
    out = []
    for p in unique_parameters(module):
        if not p.requires_grad:
            continue
        start, end = even_range(p.numel(), rank, world_size)
        if start == end:
            continue
        per_element, scalars = split_state(optimizer.state.get(p, {}), p.numel())
        out.append(SavedPiece(names[id(p)], start, end, p.detach().reshape(-1)[start:end].float().cpu().clone(),
                              {k: v[start:end].cpu().clone() for k, v in per_element.items()}, scalars))
    return out


def load_replicated(module: nn.Module, optimizer, params: dict[str, torch.Tensor], optim: dict[str, dict]) -> None:
    """Full parameters and optimizer state, by name, into a replicated model and its optimizer."""
    by_name = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in params.items():
            by_name[name].copy_(value)
    for name, state in optim.items():
        param = by_name[name]
        optimizer.state[param] = {k: (v.to(param.device, param.dtype if v.is_floating_point() and v.ndim else v.dtype).clone()
                                      if torch.is_tensor(v) else v) for k, v in state.items()}


def to_file(pieces: list[SavedPiece]) -> dict:
    """The pieces as a shard file holds them: {"params": {name: [(start, end, values)]},
    "optim": {name: [(start, end, per_element, scalars)]}}."""
    params: dict[str, list] = {}
    optim: dict[str, list] = {}
    for p in pieces:
        params.setdefault(p.name, []).append((p.start, p.end, p.values))
        optim.setdefault(p.name, []).append((p.start, p.end, p.state, p.scalars))
    return {"params": params, "optim": optim}


def assemble(shards: list[dict], shapes: dict[str, tuple]) -> tuple[dict, dict, list[str]]:
    """Full parameters {name: tensor}, full optimizer state {name: {key: tensor | scalar}}, and
    the names of any parameter whose elements the shards do not all cover."""
    params: dict[str, torch.Tensor] = {}
    covered: dict[str, int] = {}
    optim: dict[str, dict] = {}
    numels = {name: _numel(shape) for name, shape in shapes.items()}
    for shard in shards:
        for name, spans in shard["params"].items():
            full = params.setdefault(name, torch.zeros(numels[name], dtype=torch.float32))
            for start, end, values in spans:
                full[start:end] = values
                covered[name] = covered.get(name, 0) + (end - start)
        for name, spans in shard["optim"].items():
            entry = optim.setdefault(name, {})
            for start, end, per_element, scalars in spans:
                for key, values in per_element.items():
                    entry.setdefault(key, torch.zeros(numels[name], dtype=values.dtype))[start:end] = values
                entry.update(scalars)
    incomplete = [name for name in shapes if covered.get(name, 0) != numels[name]]
    full_params = {name: t.view(shapes[name]) for name, t in params.items()}
    for name, entry in optim.items():
        for key, value in entry.items():
            if torch.is_tensor(value) and value.ndim == 1 and value.numel() == numels[name]:
                entry[key] = value.view(shapes[name])
    return full_params, optim, incomplete


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
