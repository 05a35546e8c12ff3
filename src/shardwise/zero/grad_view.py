"""`p.grad` under ZeRO: a view of this rank's gradient shard that answers clipping's questions.

[Note: gradient views]
Under ZeRO a parameter's averaged gradient lives in pieces, one per rank, in the units'
gradient shards (see [Note: flat layout]); the parameter itself holds no `.grad`. A PyTorch
DDP script clips with `torch.nn.utils.clip_grad_norm_(model.parameters(), c)`, which reads
`p.grad`. So after a synchronising backward every trainable parameter gets a `.grad` that is a
`ShardGradView`: a tensor wrapper subclass (FSDP2 answers the same need with DTensor grads)
of the parameter's current shape, holding no data, whose `__torch_dispatch__` implements the
few ops clipping uses, over the owned pieces:
- `linalg_vector_norm` (and `_foreach_norm`): the parameter's *global* norm. The first such call
  after gradients change computes, for every parameter at once, this rank's partial |g|^p sums
  (max |g| for the inf-norm) over its pieces and reduces that one small vector over the ranks;
  later calls answer from the cache. Every rank must therefore ask (clip_grad_norm_ does:
  every rank walks the same parameters in the same order).
- `mul_` (and `_foreach_mul_`): scale this parameter's pieces; invalidates the cache.
- `clamp_`: clip_grad_value_, element-wise on the pieces.
Anything else raises one line naming the op. With subclass grads torch's clipping takes its
per-tensor path (`_has_foreach_support` is False), one `vector_norm` then one `mul_` per
gradient, and gives the same numbers as PyTorch DDP's whole-gradient arithmetic.
Under fp16 loss scaling, `before_read` unscales the shards first (once per step).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import ConfigError
from ..strategy.module import PieceView

aten = torch.ops.aten


def partial_norm_terms(owned: list[tuple[int, torch.Tensor]], count: int, ord: float) -> torch.Tensor:
    """Per parameter, this rank's share of its norm: sum |g|^ord (ord finite) or max |g| (inf).

    1D float64 of length `count`, on the gradients' device (no host syncs); parameters this
    rank owns nothing of contribute 0 (or +inf for ord=-inf, which takes the minimum).
    """
    owned = [(index, grad) for index, grad in owned if grad.numel() > 0]
    device = owned[0][1].device if owned else torch.device("cpu")
    terms = torch.full((count,), math.inf if ord == -math.inf else 0.0, dtype=torch.float64, device=device)
    if not owned:
        return terms
    index = torch.tensor([i for i, _ in owned], device=device)
    if math.isinf(ord):
        values = torch.stack([torch.linalg.vector_norm(g, ord, dtype=torch.float64) for _, g in owned])
        return terms.scatter_reduce(0, index, values, "amax" if ord > 0 else "amin")
    if ord == 0:
        values = torch.stack([torch.count_nonzero(g).to(torch.float64) for _, g in owned])
    else:
        values = torch.stack([torch.linalg.vector_norm(g, ord, dtype=torch.float64) ** ord for _, g in owned])
    return terms.index_add(0, index, values)


def combine_terms(per_rank: torch.Tensor, ord: float) -> torch.Tensor:
    """Global norms from every rank's terms (2D: ranks x parameters), as float32."""
    if ord == math.inf:
        return per_rank.amax(dim=0).float()
    if ord == -math.inf:
        return per_rank.amin(dim=0).float()
    total = per_rank.sum(dim=0)
    return (total if ord == 0 else total ** (1.0 / ord)).float()


class ShardGrads:
    """This rank's owned gradient pieces of every parameter, and their cached global norms.

    `owned`: (parameter index, gradient slice) pairs (persistent views of the units' shards);
    `gather_terms(terms)` returns every rank's terms stacked (ranks x parameters) in one
    collective; `before_read()` runs before any read or write (fp16: unscale once).
    """

    def __init__(self, owned: list[tuple[int, torch.Tensor]], count: int,
                 gather_terms: Callable[[torch.Tensor], torch.Tensor], before_read: Callable[[], None] = lambda: None):
        self.count = count
        self.gather_terms = gather_terms
        self.before_read = before_read
        self.slices: dict[int, list[torch.Tensor]] = {}
        for index, grad in owned:
            self.slices.setdefault(index, []).append(grad)
        self._norms: dict[float, torch.Tensor] = {}  # ord -> global norm of every parameter

    def invalidate(self) -> None:
        self._norms.clear()

    def norm(self, index: int, ord: float) -> torch.Tensor:
        """Global norm of parameter `index`'s averaged gradient (a collective on the first call)."""
        ord = float(ord)
        if ord not in self._norms:
            self.before_read()
            owned = [(i, g) for i, grads in self.slices.items() for g in grads]
            self._norms[ord] = combine_terms(self.gather_terms(partial_norm_terms(owned, self.count, ord)), ord)
        return self._norms[ord][index].clone()

    def scale_(self, index: int, factor) -> None:
        self.before_read()
        for grad in self.slices.get(index, []):
            grad.mul_(factor.to(grad.device) if torch.is_tensor(factor) else factor)
        self.invalidate()

    def clamp_(self, index: int, low=None, high=None) -> None:
        self.before_read()
        for grad in self.slices.get(index, []):
            grad.clamp_(min=low, max=high)
        self.invalidate()


class ShardGradView(PieceView):
    """A parameter's `.grad` under ZeRO; see [Note: gradient views]."""

    @staticmethod
    def __new__(cls, param: torch.Tensor, grads: ShardGrads, index: int, stage: int):
        return torch.Tensor._make_wrapper_subclass(cls, param.shape, dtype=param.dtype, device=param.device,
                                                   requires_grad=False)

    def __init__(self, param: torch.Tensor, grads: ShardGrads, index: int, stage: int):
        self.grads, self.index, self.stage = grads, index, stage

    def local_tensors(self) -> list[torch.Tensor]:
        """This rank's pieces of the gradient: views of the units' gradient shards (for accounting)."""
        return list(self.grads.slices.get(self.index, []))

    def __repr__(self) -> str:
        return f"ShardGradView(parameter {self.index}, shape {tuple(self.shape)}, zero{self.stage})"

    def _norm(self, ord=2, dim=None, keepdim=False, dtype=None) -> torch.Tensor:
        if dim is not None and sorted(d % max(self.ndim, 1) for d in ([dim] if isinstance(dim, int) else dim)) != list(range(self.ndim)):
            raise ConfigError(_unsupported(f"vector_norm over dim={dim}", self.stage))
        value = self.grads.norm(self.index, ord).to(self.device)
        if keepdim:
            value = value.reshape([1] * self.ndim)
        return value.to(dtype) if dtype is not None else value

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (aten.linalg_vector_norm.default,):
            return args[0]._norm(*args[1:], **kwargs)
        if func in (aten.mul_.Tensor, aten.mul_.Scalar):
            view, factor = args
            view.grads.scale_(view.index, factor)
            return view
        if func is aten.clamp_.default:
            view = args[0]
            view.grads.clamp_(view.index, *args[1:], **kwargs)
            return view
        if func is aten._foreach_norm.Scalar:
            tensors, ord = args[0], (args[1] if len(args) > 1 else kwargs.get("ord", 2))
            return [t._norm(ord, dtype=kwargs.get("dtype")) for t in tensors]
        if func in (aten._foreach_mul_.Tensor, aten._foreach_mul_.Scalar):
            for view in args[0]:
                view.grads.scale_(view.index, args[1])
            return None
        if func in (aten.detach.default, aten.alias.default):
            view = args[0]
            return ShardGradView(view, view.grads, view.index, view.stage)
        stage = next((a.stage for a in args if isinstance(a, ShardGradView)), 0)
        raise ConfigError(_unsupported(str(func.overloadpacket.__name__), stage))


def _unsupported(op: str, stage: int) -> str:
    return (f"{op} is not available on p.grad under zero{stage}: p.grad is a view of this rank's gradient shard; "
            "use torch.nn.utils.clip_grad_norm_ / clip_grad_value_ or optimizer.clip_grad_norm_")
