"""Vocabulary-parallel embedding, output layer and cross-entropy (Megatron-LM, Shoeybi et al. 2019).

[Note: vocabulary parallel]
A vocabulary of V rows is split over the T ranks of the tensor-parallel group in contiguous
ranges (`shard_indices(V, 1, T, t)`, the first ranks one row longer when T does not divide V),
so no rank holds the whole V x C table, the largest matrix of a small language model.
- Embedding (plan style "vocab" on an `nn.Embedding`): each rank looks up the ids that fall in
  its range and writes zeros for the others; one all-reduce (g) sums the T partial lookups into
  the whole embedding. Backward: each rank's rows get the gradients of their own ids only.
- Output layer (style "vocab" on an `nn.Linear` whose outputs are the vocabulary): column-parallel
  (f before it: its input gradient is all-reduced), then the T slices of logits are all-gathered
  along the last dimension, so the user's loss sees whole logits and nothing else changes. The
  gather's backward keeps this rank's columns of the logits' gradient, which every rank computed
  alike from the same whole logits. A head tied to a vocabulary-parallel embedding (GPT's
  `lm_head.weight is token_embedding.weight`) stays tied: both hold the same rows of one Parameter.
- Output layer with its logits left split (style "vocab-split", Megatron-LM's parallel output):
  the same layer without the gather; each rank's logits are its own vocabulary columns, for a
  loss that works on them. The built-in job's `--tp-vocab` uses it with the cross-entropy below.
- Cross-entropy over logits left split ("vocab-split" or "colwise" head): `vocab_parallel_cross_entropy` never
  gathers the B x T x V logits; it exchanges three numbers per token instead (the max,
  the sum of exponentials, the target's logit) and returns the per-token loss, whose gradient is
  softmax minus one-hot on this rank's columns.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .. import comm
from ..errors import ConfigError
from ..flat.ranges import even_range, even_ranges
from .ops import copy_to_region, reduce_from_region


def vocab_range(vocab: int, size: int, rank: int) -> tuple[int, int]:
    """[start, end) of the vocabulary rows rank `rank` of `size` holds (as `shard_indices`)."""
    if vocab < size:
        raise ConfigError(f"{vocab} vocabulary rows cannot be split over tensor-parallel size {size}")
    return even_range(vocab, rank, size)


class VocabParallelEmbedding(nn.Module):
    """This rank's rows of an `nn.Embedding`; the output is the whole embedding on every rank."""

    def __init__(self, embedding: nn.Embedding, group, size: int, rank: int, weight: nn.Parameter | None = None):
        super().__init__()
        if embedding.padding_idx is not None or embedding.max_norm is not None or embedding.sparse:
            raise ConfigError("a vocabulary-parallel embedding takes no padding_idx, max_norm or sparse gradients: "
                              "replicate this embedding instead")
        self.group, self.size = group, size
        self.vocab, self.embedding_dim = embedding.num_embeddings, embedding.embedding_dim
        self.start, self.end = vocab_range(self.vocab, size, rank)
        self.weight = _rows(embedding.weight, self.start, self.end, weight)
        self.dims = {"weight": 0}

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.start
        outside = (local < 0) | (local >= self.end - self.start)
        out = F.embedding(local.masked_fill(outside, 0), self.weight)
        return reduce_from_region(out.masked_fill(outside.unsqueeze(-1), 0.0), self.group)

    def extra_repr(self) -> str:
        return f"rows {self.start}:{self.end} of {self.vocab}, dim={self.embedding_dim}"


def _rows(whole: nn.Parameter, start: int, end: int, shared: nn.Parameter | None) -> nn.Parameter:
    """This rank's rows of `whole`: `shared` when a tied layer already split them, else a copy."""
    if shared is None:
        return nn.Parameter(whole.detach()[start:end].clone(), requires_grad=whole.requires_grad)
    if shared.shape != (end - start,) + tuple(whole.shape[1:]):
        raise ConfigError("a layer shares its weight with a layer split another way: split both 'vocab'")
    return shared


class _GatherColumns(torch.autograd.Function):
    """All-gather of the T column slices along the last dimension; backward keeps this rank's."""

    @staticmethod
    def forward(ctx, local, group, widths, rank):
        ctx.start, ctx.end = sum(widths[:rank]), sum(widths[:rank + 1])
        widest = max(widths)
        pad = [0, widest - local.shape[-1]]
        padded = F.pad(local, pad).contiguous() if pad[1] else local.contiguous()
        parts = torch.empty((len(widths),) + tuple(padded.shape), dtype=padded.dtype, device=padded.device)
        comm.all_gather(parts.view(-1), padded.view(-1), group=group)
        return torch.cat([parts[r, ..., :width] for r, width in enumerate(widths)], dim=-1)

    @staticmethod
    def backward(ctx, grad):
        return grad[..., ctx.start:ctx.end].contiguous(), None, None, None


class VocabParallelLinear(nn.Module):
    """This rank's rows (output features) of a Linear onto the vocabulary; whole logits out, or
    (`gather=False`) this rank's columns of them."""

    def __init__(self, linear: nn.Linear, group, size: int, rank: int, weight: nn.Parameter | None = None,
                 gather: bool = True):
        super().__init__()
        self.group, self.size, self.rank, self.gather = group, size, rank, gather
        self.vocab, self.in_features = linear.out_features, linear.in_features
        self.start, self.end = vocab_range(self.vocab, size, rank)
        self.widths = [end - start for start, end in even_ranges(self.vocab, size)]
        self.weight = _rows(linear.weight, self.start, self.end, weight)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach()[self.start:self.end].clone(),
                                                                   requires_grad=linear.bias.requires_grad)
        self.dims = {"weight": 0, "bias": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = F.linear(copy_to_region(x, self.group), self.weight, self.bias)
        return _GatherColumns.apply(local, self.group, self.widths, self.rank) if self.gather else local

    def extra_repr(self) -> str:
        split = "" if self.gather else ", logits left split"
        return f"in={self.in_features}, rows {self.start}:{self.end} of {self.vocab}{split}"


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, group):
        width = logits.shape[-1]
        flat = logits.reshape(-1, width).float()
        target = targets.reshape(-1)
        # each rank's row maxima (a shift common to every rank: the max over all columns) and, last, its width
        mine = torch.cat([flat.max(dim=-1).values, torch.tensor([float(width)], device=flat.device)])
        gathered = torch.empty((comm.group_size(group), mine.numel()), dtype=mine.dtype, device=mine.device)
        comm.all_gather(gathered.view(-1), mine, group=group)
        start = _own_columns(gathered[:, -1].long().tolist(), dist.get_rank(group))
        top = gathered[:, :-1].max(dim=0).values
        shifted = flat - top.unsqueeze(-1)
        exp = shifted.exp()
        total = exp.sum(dim=-1)
        local = target - start
        inside = (local >= 0) & (local < width)
        picked = shifted.gather(-1, local.clamp(0, width - 1).unsqueeze(-1)).squeeze(-1) * inside
        both = torch.stack([total, picked])
        comm.all_reduce(both, group=group)
        total, picked = both[0], both[1]
        exp.div_(total.unsqueeze(-1))  # softmax, this rank's columns
        ctx.save_for_backward(exp, local.clamp(0, width - 1), inside)
        ctx.shape, ctx.dtype = logits.shape, logits.dtype
        return (total.log() - picked).view(targets.shape)

    @staticmethod
    def backward(ctx, grad):
        softmax, local, inside = ctx.saved_tensors
        out = softmax.clone()
        rows = torch.arange(out.shape[0], device=out.device)
        out[rows, local] -= inside.to(out.dtype)
        out.mul_(grad.reshape(-1, 1))
        return out.view(ctx.shape).to(ctx.dtype), None, None


def _own_columns(widths: list[int], rank: int) -> int:
    """The first vocabulary column of rank `rank`, checking the ranks' widths are the even split."""
    vocab = sum(widths)
    if widths != [end - start for start, end in even_ranges(vocab, len(widths))]:
        raise ConfigError(f"logits of widths {widths} over the tensor-parallel ranks are not the even split of a "
                          f"vocabulary of {vocab}: split the output layer with 'vocab-split' or 'colwise'")
    return vocab_range(vocab, len(widths), rank)[0]


def vocab_parallel_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, group=None) -> torch.Tensor:
    """Per-token cross-entropy of logits split over the tensor-parallel `group` along their last
    dimension in contiguous ranges (a "vocab-split" or "colwise" output layer): the same values and gradients as
    `F.cross_entropy(whole_logits, targets, reduction="none")`, without gathering the logits
    (see [Note: vocabulary parallel]). Every rank passes the same `targets`; take `.mean()` for
    the usual loss."""
    if targets.shape != logits.shape[:-1]:
        raise ConfigError(f"targets of shape {tuple(targets.shape)} do not match logits of shape {tuple(logits.shape)}")
    return _VocabParallelCrossEntropy.apply(logits, targets, comm.default_group(group))


__all__ = ["VocabParallelEmbedding", "VocabParallelLinear", "vocab_parallel_cross_entropy", "vocab_range"]
