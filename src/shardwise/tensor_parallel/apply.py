"""Splitting a model's Linear layers in place, following a plan ([Note: tensor-parallel plan])."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..strategy.parts_state import Slice
from .linear import ColumnParallelLinear, RowParallelLinear
from .plan import parse_style, shard_indices, style_of


def resolve_plan(module: nn.Module, plan: dict[str, str] | None) -> dict[str, str]:
    if plan is None:
        if not hasattr(module, "tensor_parallel_plan"):
            raise ConfigError(f"TensorParallel needs a plan for {type(module).__name__}: pass plan={{'pattern': "
                              f"'colwise' | 'colwise:K' | 'rowwise' | 'replicate'}} (module-name patterns)")
        plan = module.tensor_parallel_plan()
    if not isinstance(plan, dict) or not plan:
        raise ConfigError(f"a tensor-parallel plan is a non-empty dict of module-name pattern -> style, got {plan!r}")
    for style in plan.values():
        parse_style(style)
    return dict(plan)


def _parent(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, attr = name.split(".")
    parent = root
    for part in path:
        parent = getattr(parent, part)
    return parent, attr


def split_linears(module: nn.Module, plan: dict[str, str], group, size: int, rank: int) -> tuple[dict, dict]:
    """Replace every Linear the plan splits by its parallel version holding this rank's slice.
    Returns ({id(old parameter): new parameter}, {id(new parameter): Slice}) ."""
    replaced: dict[int, nn.Parameter] = {}
    slices: dict[int, Slice] = {}
    matched = 0
    for name, sub in list(module.named_modules()):
        style = style_of(name, plan)
        if style is None or not name:
            continue
        kind, parts = parse_style(style)
        if kind == "replicate":
            continue
        if not isinstance(sub, nn.Linear):
            raise ConfigError(f"tensor-parallel plan splits '{name}' {style}, but it is a {type(sub).__name__}, "
                              f"not an nn.Linear")
        matched += 1
        if kind == "colwise":
            new = ColumnParallelLinear(sub, group, size, rank, parts)
            index = tuple(shard_indices(sub.out_features, parts, size, rank))
            slices[id(new.weight)] = Slice(tuple(sub.weight.shape), 0, index)
            if new.bias is not None:
                slices[id(new.bias)] = Slice(tuple(sub.bias.shape), 0, index)
        else:
            new = RowParallelLinear(sub, group, size, rank)
            slices[id(new.weight)] = Slice(tuple(sub.weight.shape), 1, tuple(shard_indices(sub.in_features, 1, size, rank)))
        replaced[id(sub.weight)] = new.weight
        if sub.bias is not None:
            replaced[id(sub.bias)] = new.bias
        parent, attr = _parent(module, name)
        setattr(parent, attr, new)
    if matched == 0:
        raise ConfigError(f"the tensor-parallel plan {plan} matches no nn.Linear of {type(module).__name__}: "
                          f"check its patterns against the module names")
    return replaced, slices
