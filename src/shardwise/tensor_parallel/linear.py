"""Column- and row-parallel `nn.Linear` ([Note: tensor-parallel plan])."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .ops import copy_to_region, reduce_from_region
from .plan import shard_indices


class ColumnParallelLinear(nn.Module):
    """This rank's output features of a Linear; input whole, output split (not gathered)."""

    def __init__(self, linear: nn.Linear, group, size: int, rank: int, parts: int = 1):
        super().__init__()
        self.group, self.size, self.parts = group, size, parts
        self.full_out, self.in_features = linear.out_features, linear.in_features
        index = torch.tensor(shard_indices(linear.out_features, parts, size, rank))
        self.weight = nn.Parameter(linear.weight.detach()[index].clone(), requires_grad=linear.weight.requires_grad)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach()[index].clone(),
                                                                   requires_grad=linear.bias.requires_grad)
        self.dims = {"weight": 0, "bias": 0}

    def forward(self, x):
        return F.linear(copy_to_region(x, self.group), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.full_out}/{self.size}, parts={self.parts}"


class RowParallelLinear(nn.Module):
    """This rank's input features of a Linear; input split, output summed over the ranks."""

    def __init__(self, linear: nn.Linear, group, size: int, rank: int):
        super().__init__()
        self.group, self.size, self.parts = group, size, 1
        self.full_in, self.out_features = linear.in_features, linear.out_features
        index = torch.tensor(shard_indices(linear.in_features, 1, size, rank))
        self.weight = nn.Parameter(linear.weight.detach()[:, index].clone(), requires_grad=linear.weight.requires_grad)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(),
                                                                   requires_grad=linear.bias.requires_grad)
        self.dims = {"weight": 1}  # the bias is whole on every rank

    def forward(self, x):
        out = reduce_from_region(F.linear(x, self.weight), self.group)
        return out if self.bias is None else out + self.bias

    def extra_repr(self) -> str:
        return f"in={self.full_in}/{self.size}, out={self.out_features}"
