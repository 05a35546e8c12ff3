"""Gradient clipping on a parameter server: by the norm of the averaged gradient, on the servers.

[Note: ps clipping]
A DDP script clips after backward, when every rank holds the averaged gradient:
`torch.nn.utils.clip_grad_norm_(model.parameters(), c)` scales it by min(1, c / (norm + 1e-6)).
A sync-mode worker holds only its own gradient; the average, and so its norm, exists only on
the servers, after every worker has pushed. So on a sync-mode worker the call is a request:
- It is routed here whatever name it was called through (`torch.nn.utils.clip_grad_norm_`, a
  `from torch.nn.utils import clip_grad_norm_` taken before shardwise was imported, HF's or
  accelerate's call of it): torch's function looks up its two helpers, `_get_total_norm` and
  `_clip_grads_with_norm_`, in its module's globals at every call, and `install()` replaces
  those two names in `torch.nn.utils.clip_grad` (torch is pinned; the check below fails loudly
  if they ever move). `torch.nn.utils.get_total_norm` and `torch.nn.utils.clip_grads_with_norm_`
  (the same two helpers, public) are replaced too, for scripts that look them up after wrap;
  a name bound to them before wrap still reaches torch's own: the one path left local. Gradients
  that belong to no sync-mode worker go to torch's own helpers unchanged (ZeRO's gradient views
  included), so nothing else changes behaviour.
- `_get_total_norm` on a worker's gradients returns a pending 0-dim tensor, NaN until the step;
  `_clip_grads_with_norm_` on that tensor records (max_norm, norm type, which parameters) and
  touches no gradient. `optimizer.clip_grad_norm_(max_norm, norm_type)` records the same for
  every trainable parameter.
- `optimizer.step()` sends the requests with the push. The servers average, compute each
  request's norm over the selected pieces of every server's key range (an all-reduce among the
  servers, whose key ranges together hold the whole gradient), scale those pieces, then step.
  Every worker sends the same requests (the script makes the same calls on each); the servers
  follow the lowest-ranked worker's. `error_if_nonfinite` is not checked on this path.
  Their answer carries the norms, and the pending tensors are filled with them in place: what
  the call returns on a worker is the servers' norm of the averaged gradient for that step,
  readable once `optimizer.step()` has returned (the place HF and nanoGPT read it).
- Gradients of a worker mixed with other tensors in one call cannot be split between the two
  meanings: a ConfigError says to clip them separately.
In async and ssp modes the applied gradient is one worker's push, whose full norm that worker
holds: torch's function (not routed) and `optimizer.clip_grad_norm_` clip it locally, which is
exactly the update the servers then apply.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.utils.clip_grad as torch_clip

from .. import comm
from ..errors import ConfigError

if not all(callable(getattr(torch_clip, name, None)) for name in ("_get_total_norm", "_clip_grads_with_norm_")):
    raise ImportError("shardwise needs torch==2.13.0: torch.nn.utils.clip_grad's norm helpers moved")

_original_total_norm = torch_clip._get_total_norm
_original_clip_with_norm = torch_clip._clip_grads_with_norm_
# Sync-mode clients of this process: torch's helpers are process-wide, so is what they route to.
_clients: weakref.WeakSet = weakref.WeakSet()


class ClipRequest:
    """One clip asked for before a step: the servers answer its norm into `result`."""

    def __init__(self, norm_type: float, result: torch.Tensor):
        self.norm_type, self.result = float(norm_type), result
        self.max_norm = float("inf")  # a norm asked for without clipping scales by 1
        self.selected: list[int] | None = None  # trainable-parameter indices; None: all

    def wire(self) -> tuple:
        return self.max_norm, self.norm_type, self.selected


def register(client) -> None:
    """Route clipping of `client`'s worker gradients to its servers (sync mode)."""
    install()
    _clients.add(client)


def install() -> None:
    torch_clip._get_total_norm = torch.nn.utils.get_total_norm = _total_norm
    torch_clip._clip_grads_with_norm_ = torch.nn.utils.clip_grads_with_norm_ = _clip_with_norm


def _owner(grads: list[torch.Tensor]):
    """The client whose worker owns all of `grads`, None if none does; mixing is an error."""
    for client in list(_clients):
        mine = {id(p.grad) for p in client.model.trainable if p.grad is not None}
        owned = sum(id(g) in mine for g in grads)
        if owned == len(grads) and owned:
            return client
        if owned:
            raise ConfigError("clip_grad_norm_ got parameter-server worker gradients mixed with other tensors; "
                              "clip the wrapped model's parameters in a call of their own")
    return None


def _total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    tensors = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
    client = _owner(tensors) if _clients else None
    if client is None:
        return _original_total_norm(tensors, norm_type, error_if_nonfinite, foreach)
    return client.request_norm(norm_type)


def _clip_with_norm(parameters, max_norm, total_norm, foreach=None):
    for client in list(_clients):
        request = client.pending_request(total_norm)
        if request is not None:
            params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
            client.request_clip(request, max_norm, params)
            return None
    return _original_clip_with_norm(parameters, max_norm, total_norm, foreach)


def server_clip(grads: list[torch.Tensor], max_norm: float, norm_type: float, group) -> float:
    """Servers, sync mode: scale `grads` (this server's pieces of the clipped parameters, averaged)
    by min(1, max_norm / (norm + 1e-6)), the norm taken over every server's pieces, as torch does.
    Every server calls this for the same requests in the same order (the collective pairs them)."""
    infinite = norm_type == float("inf")
    partial = torch.zeros(1, dtype=torch.float64)  # sum of |g|^p (inf: max |g|) over this range
    for g in grads:
        if g.numel():
            value = g.double().abs()
            partial = torch.maximum(partial, value.max()) if infinite else partial + value.pow(norm_type).sum()
    if group is not None and infinite:
        every = torch.empty(torch.distributed.get_world_size(group), dtype=torch.float64)
        comm.all_gather(every, partial, group=group)
        partial = every.max().reshape(1)
    elif group is not None:
        comm.all_reduce(partial, group=group)
    total = (partial if infinite else partial.pow(1.0 / norm_type)).float()
    factor = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(factor)
    return float(total.item())
