"""Model-state bytes per rank split into parameters / gradients / optimizer state / other, and RSS.

[Note: splitting model states]
Every configuration is measured the same way, from the tensors' storages, each storage counted
once and in the first of these categories that reaches it:
  optimizer   the tensors in the optimizer's state (ZeroRedundancyOptimizer: its inner `.optim`)
  parameters  the model's parameters and the optimizer's (shardwise ZeRO's optimizer holds views
              of its flat master shard; stages 1-2 keep the full flat buffer the module's
              parameters point into, stage 3 only the shard)
  gradients   the `.grad` of both (shardwise ZeRO's `.grad` views count by the pieces they stand
              for, views into the flat gradient buffers: stage 1 keeps the whole buffer, stage 2
              and 3 the shard)
  other       the rest of what a shardwise wrapper's state reports (`model.state(optimizer)
              .tensors()`: stage 3's gather slots and gradient pools, `model.buffer_bytes()`)
DTensors (FSDP2) count by their local shard. For shardwise the four add up to exactly
`sw.model_state_bytes`. Not reachable from parameters or optimizer, hence not counted: PyTorch
DDP's reducer buckets (another 4 bytes per parameter with gradient_as_bucket_view=False) and
FSDP2's transient all-gather buffers. Measured right after `optimizer.step()`, before
`zero_grad()`, when every strategy holds gradients.
"""

from __future__ import annotations

import resource
from collections.abc import Iterable

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from ..strategy.module import PieceView, strategy_module

CATEGORIES = ("params", "grads", "optimizer", "other")
_CLAIM_ORDER = ("optimizer", "params", "grads", "other")


def claim_storages(by_category: dict[str, Iterable[tuple[int, int]]]) -> dict[str, int]:
    """Bytes per category from (storage address, storage bytes) pairs, each address counted once,
    in the first category of _CLAIM_ORDER that lists it (pure; see [Note: splitting model states])."""
    claimed: set[int] = set()
    out = dict.fromkeys(CATEGORIES, 0)
    for category in _CLAIM_ORDER:
        largest: dict[int, int] = {}
        for address, nbytes in by_category.get(category, ()):
            if address not in claimed and nbytes > 0:
                largest[address] = max(largest.get(address, 0), nbytes)
        claimed.update(largest)
        out[category] = sum(largest.values())
    out["total"] = sum(out[c] for c in CATEGORIES)
    return out


def split_model_states(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """This rank's model-state bytes by category, plus 'total'."""
    inner = getattr(optimizer, "optim", optimizer)  # ZeroRedundancyOptimizer keeps its shard's state inside
    state = [value for per_param in inner.state.values() for value in per_param.values() if torch.is_tensor(value)]
    params = list(model.parameters()) + [p for group in inner.param_groups for p in group["params"]]
    grads = [p.grad for p in params if p.grad is not None]
    wrapped = strategy_module(model)  # a shardwise wrapper reports what only it holds (peers: nothing)
    others = list(wrapped.state(optimizer).tensors()) if wrapped is not None else []
    return claim_storages({
        "optimizer": _storages(state),
        "params": _storages(params),
        "grads": _storages(grads),
        "other": _storages(others),
    })


def _storages(tensors: Iterable[torch.Tensor]) -> list[tuple[int, int]]:
    out = []
    for tensor in tensors:
        if isinstance(tensor, DTensor):
            pieces = [tensor.to_local()]
        elif isinstance(tensor, PieceView):  # shardwise ZeRO's `.grad` views hold no data of their own
            pieces = tensor.local_tensors()
        else:
            pieces = [tensor]
        for local in pieces:
            storage = local.untyped_storage()
            out.append((storage.data_ptr(), storage.nbytes()))
    return out


def current_rss_bytes() -> int:
    """Resident set size now (VmRSS of /proc/self/status; 0 where there is none)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def peak_rss_bytes() -> int:
    """High-water mark of this process's resident set since it started (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
