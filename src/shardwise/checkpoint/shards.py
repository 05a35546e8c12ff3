"""What each rank writes and how full tensors are put back together (see [Note: checkpoint format]).

Every rank writes the element ranges of each flattened parameter that it owns, with the
optimizer state of those elements: under ZeRO its pieces (from the fp32 masters); under a
replicated strategy an even split of each parameter, so that saving is spread over the ranks
either way. Scalar optimizer state (Adam's step) goes with every range. Rank 0 adds the
buffers and frozen parameters. Any set of shards that covers every element reassembles.
"""

from __future__ import annotations

import torch
from torch import nn

from ..strategy.prepare import parameter_names, unique_parameters
from ..strategy.state import unwrap
from ..zero.optimizer import owned_pieces


def even_range(numel: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank's share of `numel` elements when split as evenly as possible (pure)."""
    base, extra = divmod(numel, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _split_state(state: dict, numel: int) -> tuple[dict, dict]:
    per_element, scalars = {}, {}
    for key, value in state.items():
        if torch.is_tensor(value) and value.ndim > 0 and value.numel() == numel:
            per_element[key] = value.detach().reshape(-1)
        else:
            scalars[key] = value.detach().clone() if torch.is_tensor(value) else value
    return per_element, scalars


def local_shard(model: nn.Module, optimizer, rank: int, world_size: int) -> dict:
    """This rank's part of the checkpoint: {"params": {name: [(start, end, values)]}, "optim": ...}."""
    module = unwrap(model)
    names = parameter_names(module)
    params: dict[str, list] = {}
    optim: dict[str, list] = {}
    engine = getattr(optimizer, "_shardwise_engine", None)
    if hasattr(optimizer, "_shardwise_client"):
        pass  # a parameter server's workers: the servers write parameters and optimizer state
    elif engine is not None:
        for piece, unit, layout_piece in owned_pieces(optimizer):
            name = names[id(unit.params[layout_piece.index])]
            span = (layout_piece.param_start, layout_piece.param_end)
            params.setdefault(name, []).append((*span, piece.detach().float().cpu().clone()))
            per_element, scalars = _split_state(optimizer.state.get(piece, {}), piece.numel())
            optim.setdefault(name, []).append((*span, {k: v.cpu().clone() for k, v in per_element.items()}, scalars))
    else:
        by_param = {id(p): s for p, s in optimizer.state.items()}
        for p in unique_parameters(module):
            if not p.requires_grad:
                continue
            start, end = even_range(p.numel(), rank, world_size)
            if start == end:
                continue
            name = names[id(p)]
            params[name] = [(start, end, p.detach().reshape(-1)[start:end].float().cpu().clone())]
            per_element, scalars = _split_state(by_param.get(id(p), {}), p.numel())
            optim[name] = [(start, end, {k: v[start:end].cpu().clone() for k, v in per_element.items()}, scalars)]
    shard = {"params": params, "optim": optim}
    if rank == 0:
        shard["whole"] = {name: t.detach().cpu().clone() for name, t in _whole_tensors(module)}
    return shard


def _whole_tensors(module: nn.Module):
    """Buffers and frozen parameters: the same on every rank, saved once."""
    for name, p in module.named_parameters():
        if not p.requires_grad:
            yield name, p
    yield from module.named_buffers()


def assemble(shards: list[dict], shapes: dict[str, tuple]) -> tuple[dict, dict, list[str]]:
    """Full parameters {name: tensor}, full optimizer state {name: {key: tensor | scalar}}, and
    the names of any parameter whose elements the shards do not all cover."""
    params: dict[str, torch.Tensor] = {}
    covered: dict[str, int] = {}
    optim: dict[str, dict] = {}
    for shard in shards:
        for name, spans in shard["params"].items():
            numel = _numel(shapes[name])
            full = params.setdefault(name, torch.zeros(numel, dtype=torch.float32))
            for start, end, values in spans:
                full[start:end] = values
                covered[name] = covered.get(name, 0) + (end - start)
        for name, spans in shard["optim"].items():
            numel = _numel(shapes[name])
            entry = optim.setdefault(name, {})
            for start, end, per_element, scalars in spans:
                for key, values in per_element.items():
                    entry.setdefault(key, torch.zeros(numel, dtype=values.dtype))[start:end] = values
                entry.update(scalars)
    incomplete = [name for name, shape in shapes.items() if covered.get(name, 0) != _numel(shape)]
    full_params = {name: t.view(shapes[name]) for name, t in params.items()}
    for name, entry in optim.items():
        for key, value in entry.items():
            if torch.is_tensor(value) and value.ndim == 1 and value.numel() == _numel(shapes[name]):
                entry[key] = value.view(shapes[name])
    return full_params, optim, incomplete


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
