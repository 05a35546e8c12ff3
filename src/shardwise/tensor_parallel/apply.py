"""Splitting a model's Linear layers in place, following a plan ([Note: tensor-parallel plan])."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..strategy.parts_state import Slice
from .linear import ColumnParallelLinear, RowParallelLinear
from .plan import parse_style, shard_indices, style_of
from .vocab import VocabParallelEmbedding, VocabParallelLinear


def resolve_plan(module: nn.Module, plan: dict[str, str] | None, vocab: bool = False,
                 split_logits: bool = False) -> dict[str, str]:
    if plan is None:
        if not hasattr(module, "tensor_parallel_plan"):
            raise ConfigError(f"TensorParallel needs a plan for {type(module).__name__}: pass plan={{'pattern': "
                              f"'colwise' | 'colwise:K' | 'rowwise' | 'replicate' | 'vocab' | 'vocab-split'}} (module-name patterns)")
        options = {"vocab": True, "split_logits": True} if split_logits else {"vocab": True} if vocab else {}
        try:
            plan = module.tensor_parallel_plan(**options)
        except TypeError:
            missing = "leaves no logits split" if split_logits else "has no vocabulary split"
            raise ConfigError(f"{type(module).__name__}'s tensor-parallel plan {missing} (its tensor_parallel_plan "
                              f"takes no {', '.join(options)}): pass a plan with 'vocab' and 'vocab-split' styles "
                              f"instead") from None
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
        if kind in ("vocab", "vocab-split"):
            matched += 1
            new = _vocab_parallel(name, sub, group, size, rank, replaced, gather=kind == "vocab")
            index = tuple(range(new.start, new.end))
            slices[id(new.weight)] = Slice(tuple(sub.weight.shape), 0, index)
            if getattr(new, "bias", None) is not None:
                slices[id(new.bias)] = Slice(tuple(sub.bias.shape), 0, index)
                replaced[id(sub.bias)] = new.bias
            replaced[id(sub.weight)] = new.weight
            parent, attr = _parent(module, name)
            setattr(parent, attr, new)
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
    for name, p in module.named_parameters(remove_duplicate=False):
        if id(p) in replaced:  # a weight shared with a layer the plan split (a tied head): it would come untied
            raise ConfigError(f"'{name}' shares its weight with a layer the tensor-parallel plan splits: split "
                              f"every layer that shares it alike ('vocab' for a tied embedding and head) or none")
    if matched == 0:
        raise ConfigError(f"the tensor-parallel plan {plan} matches no nn.Linear or nn.Embedding of {type(module).__name__}: "
                          f"check its patterns against the module names")
    return replaced, slices


def _vocab_parallel(name: str, sub: nn.Module, group, size: int, rank: int, replaced: dict, gather: bool = True):
    """A vocabulary-parallel embedding or output layer ([Note: vocabulary parallel]); a weight
    already split (tied to an embedding or head split before it) is shared, not copied."""
    if not isinstance(sub, (nn.Embedding, nn.Linear)):
        raise ConfigError(f"tensor-parallel plan splits '{name}' vocab, but it is a {type(sub).__name__}, "
                          f"not an nn.Embedding or nn.Linear")
    if isinstance(sub, nn.Embedding):
        if not gather:
            raise ConfigError(f"'vocab-split' leaves an output layer's logits split; '{name}' is an nn.Embedding: "
                              f"give it the style 'vocab'")
        return VocabParallelEmbedding(sub, group, size, rank, weight=replaced.get(id(sub.weight)))
    return VocabParallelLinear(sub, group, size, rank, weight=replaced.get(id(sub.weight)), gather=gather)
