"""The one communication layer: every collective shardwise issues goes through here.

Stateless functions: the process group and the tensors are explicit arguments; each call is
counted in `stats.PROCESS_STATS`. On a group of one rank nothing is sent and a completed handle
is returned, so strategies need no special case for N = 1.
"""

from __future__ import annotations

import pickle

import torch
import torch.distributed as dist

from ..errors import ShardwiseError
from ..runtime import env, progress
from . import pairwise
from .stats import PROCESS_STATS


class CollectiveError(ShardwiseError, RuntimeError):
    """A collective that could not complete: a peer died, or ranks disagree on what to send."""


def _describe_failure(kind: str, exc: Exception) -> CollectiveError:
    step = progress.current_step()
    at = f" at step {step}" if step is not None else ""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return CollectiveError(f"{kind} could not complete{at} within the {env.collective_timeout_s():g}s timeout "
                           f"or lost a peer: another rank failed, or ranks disagree on what to communicate ({detail})")


class Guarded:
    """A collective's handle whose wait() reports failures as CollectiveError."""

    def __init__(self, work, kind: str):
        self._work, self._kind = work, kind

    def wait(self) -> bool:
        try:
            self._work.wait()
        except RuntimeError as exc:
            if isinstance(exc, ShardwiseError):
                raise
            raise _describe_failure(self._kind, exc) from exc
        return True


def _guard(kind: str, call, async_op: bool):
    try:
        work = call()
    except RuntimeError as exc:
        if isinstance(exc, ShardwiseError):
            raise
        raise _describe_failure(kind, exc) from exc
    return Guarded(work, kind) if async_op else None


class Done:
    """The handle of a collective that needed no communication."""

    def wait(self) -> bool:
        return True

    def is_completed(self) -> bool:
        return True


def group_size(group=None) -> int:
    return dist.get_world_size(group)


def default_group(group=None):
    """None means the training ranks (all ranks, unless a parameter server set them apart)."""
    return env.training_group() if group is None else group


_default = default_group


def _is_gloo(group) -> bool:
    return dist.get_backend(group) == "gloo"


def _maybe_wait(work, async_op: bool):
    if async_op:
        return work
    work.wait()
    return None


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def all_reduce(tensor: torch.Tensor, group=None, async_op: bool = False):
    """Sum `tensor` in place over the group."""
    group = _default(group)
    n = group_size(group)
    PROCESS_STATS.record("all_reduce", _nbytes(tensor), n)
    if n == 1:
        return Done() if async_op else None
    return _guard("all_reduce", lambda: dist.all_reduce(tensor, group=group, async_op=async_op), async_op)


def reduce_scatter(output: torch.Tensor, full_input: torch.Tensor, group=None, async_op: bool = False,
                   scratch: torch.Tensor | None = None, tag: int = 0):
    """Sum `full_input` over the group; rank r receives slice r into `output` (1/N of it).

    `scratch` (optional, gloo): room for the chunks received from peers, to avoid allocating.
    `tag` (gloo): pairs only with the peers' reduce_scatter of the same tag (NCCL: ignored).
    """
    group = _default(group)
    n = group_size(group)
    PROCESS_STATS.record("reduce_scatter", _nbytes(full_input), n)
    if n == 1:
        if output.data_ptr() != full_input.data_ptr():
            output.copy_(full_input)
        return Done() if async_op else None
    if _is_gloo(group):  # see [Note: gloo pairwise collectives]
        return _guard("reduce_scatter", lambda: _maybe_wait(pairwise.reduce_scatter(output, full_input, group, scratch, tag), async_op), async_op)
    return _guard("reduce_scatter", lambda: dist.reduce_scatter_single(output, full_input, group=group, async_op=async_op), async_op)


def all_gather(full_output: torch.Tensor, shard: torch.Tensor, group=None, async_op: bool = False, tag: int = 0):
    """Concatenate every rank's `shard` into `full_output`, in rank order.

    `tag` (gloo): the gather pairs only with the peers' gathers of the same tag (NCCL: ignored)."""
    group = _default(group)
    n = group_size(group)
    PROCESS_STATS.record("all_gather", _nbytes(full_output), n)
    if n == 1:
        if full_output.data_ptr() != shard.data_ptr():
            full_output.copy_(shard)
        return Done() if async_op else None
    if _is_gloo(group):  # see [Note: gloo pairwise collectives]
        return _guard("all_gather", lambda: _maybe_wait(pairwise.all_gather(full_output, shard, group, tag), async_op), async_op)
    return _guard("all_gather", lambda: dist.all_gather_single(full_output, shard, group=group, async_op=async_op), async_op)


def broadcast(tensor: torch.Tensor, src: int = 0, group=None, async_op: bool = False):
    """Overwrite `tensor` on every rank with rank `src`'s (global rank)."""
    group = _default(group)
    n = group_size(group)
    PROCESS_STATS.record("broadcast", _nbytes(tensor), n)
    if n == 1:
        return Done() if async_op else None
    return _guard("broadcast", lambda: dist.broadcast(tensor, src=src, group=group, async_op=async_op), async_op)


def send(tensor: torch.Tensor, dst: int, group=None, tag: int = 0) -> None:
    PROCESS_STATS.record("send", _nbytes(tensor), group_size(group))
    _guard("send", lambda: dist.send(tensor, dst=dst, group=group, tag=tag), False)


def recv(tensor: torch.Tensor, src: int | None = None, group=None, tag: int = 0) -> int:
    PROCESS_STATS.record("recv", _nbytes(tensor), group_size(group))
    sender = []
    _guard("recv", lambda: sender.append(dist.recv(tensor, src=src, group=group, tag=tag)), False)
    return sender[0]


def isend(tensor: torch.Tensor, dst: int, group=None, tag: int = 0) -> Guarded:
    """Start sending `tensor` to global rank `dst`; keep `tensor` unchanged until `wait()`."""
    PROCESS_STATS.record("send", _nbytes(tensor), group_size(group))
    return _guard("send", lambda: dist.isend(tensor, dst=dst, group=group, tag=tag), True)


def irecv(tensor: torch.Tensor, src: int, group=None, tag: int = 0) -> Guarded:
    """Start receiving `tensor` from global rank `src`; read it after `wait()`."""
    PROCESS_STATS.record("recv", _nbytes(tensor), group_size(group))
    return _guard("recv", lambda: dist.irecv(tensor, src=src, group=group, tag=tag), True)


def irecv_any(tensor: torch.Tensor, group=None):
    """Start receiving `tensor` from whichever rank sends first; poll `is_completed()`, then
    `source()` names the sender. Counted as recv."""
    PROCESS_STATS.record("recv", _nbytes(tensor), group_size(group))
    work = dist.irecv(tensor, src=None, group=group)
    return _AnySource(work)


class _AnySource:
    def __init__(self, work):
        self._work = work

    def is_completed(self) -> bool:
        return self._work.is_completed()

    def wait(self) -> bool:
        Guarded(self._work, "recv").wait()
        return True

    def source(self) -> int:
        return self._work._source_rank()


def all_gather_object(obj, group=None) -> list:
    """Every rank's picklable `obj`, in rank order (for set-up checks, not the hot path)."""
    group = _default(group)
    n = group_size(group)
    PROCESS_STATS.record("all_gather", len(pickle.dumps(obj)) * n, n)
    if n == 1:
        return [obj]
    gathered = [None] * n
    _guard("all_gather_object", lambda: dist.all_gather_object(gathered, obj, group=group), False)
    return gathered


def barrier(group=None) -> None:
    """Wait until every rank of the group arrives (no payload, counted as nothing)."""
    group = _default(group)
    if group_size(group) > 1:
        _guard("barrier", lambda: dist.barrier(group=group), False)
