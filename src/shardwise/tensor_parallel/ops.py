"""Megatron's f and g: the two collectives of a tensor-parallel region, as autograd functions.

f (`copy_to_region`): identity forward, all-reduce of the gradient in backward; it enters a
column-parallel layer, whose ranks each use the whole input.
g (`reduce_from_region`): all-reduce forward (summing row-parallel partial products), identity
backward.
"""

from __future__ import annotations

import torch

from .. import comm


class _CopyToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        comm.all_reduce(grad, group=ctx.group)
        return grad, None


class _ReduceFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group):
        out = x.contiguous().clone()
        comm.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def copy_to_region(x: torch.Tensor, group) -> torch.Tensor:
    return _CopyToRegion.apply(x, group)


def reduce_from_region(x: torch.Tensor, group) -> torch.Tensor:
    return _ReduceFromRegion.apply(x, group)
