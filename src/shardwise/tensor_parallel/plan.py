"""Tensor-parallel plans and the index arithmetic of splitting a Linear (pure, no processes).

[Note: tensor-parallel plan]
A plan maps module-name patterns (fnmatch: "blocks.*.mlp.up_proj") to how each matching
`nn.Linear` is split over the T ranks of a tensor-parallel group (Megatron-LM, Shoeybi et al.
2019):
- "colwise": output features split; rank t computes out_features/T of them from the full input.
- "colwise:K": the output is K fused parts (q, k, v: K = 3), each split, so rank t keeps the
  t-th slice of every part (attention split by heads).
- "rowwise": input features split; rank t multiplies its slice of the input, the partial
  products are summed by one all-reduce, the bias is added once after it.
- "replicate": left whole on every rank (also what any module no pattern matches gets).
- "vocab": an `nn.Embedding`'s rows, or the rows of an `nn.Linear` onto the vocabulary, split
  over the ranks; the embedding's lookups are summed, the head's logits gathered whole
  ([Note: vocabulary parallel] in vocab.py). A head tied to the embedding stays tied.
- "vocab-split": an output `nn.Linear` split as "vocab", its logits left split (each rank its
  own vocabulary columns) for a loss such as `vocab_parallel_cross_entropy`.
A column-wise layer followed by a row-wise one needs one all-reduce in forward (after the
row-wise layer) and one in backward (the column-wise layer's input gradient): Megatron's g and
f operators.
"""

from __future__ import annotations

import fnmatch

from ..errors import ConfigError
from ..flat.ranges import even_range

STYLES = ("colwise", "rowwise", "replicate", "vocab", "vocab-split")


def parse_style(style: str) -> tuple[str, int]:
    """("colwise", parts) / ("rowwise", 1) / ("replicate", 1) / ("vocab", 1) / ("vocab-split", 1)."""
    kind, _, parts = str(style).partition(":")
    if kind not in STYLES or (parts and kind != "colwise"):
        raise ConfigError(f"tensor-parallel style must be one of colwise, colwise:K, rowwise, replicate, vocab, vocab-split; "
                          f"got '{style}'")
    try:
        count = int(parts) if parts else 1
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"tensor-parallel style '{style}': K must be a positive whole number")
    return kind, count


def style_of(name: str, plan: dict[str, str]) -> str | None:
    """The style of the first pattern matching module `name`, or None."""
    for pattern, style in plan.items():
        if fnmatch.fnmatchcase(name, pattern):
            return style
    return None


def shard_indices(features: int, parts: int, size: int, rank: int) -> list[int]:
    """Feature indices rank `rank` of `size` keeps when `features` are `parts` fused equal parts,
    each split into `size` slices as even as can be (the first ranks one longer)."""
    if features % parts:
        raise ConfigError(f"{features} features do not split into {parts} equal fused parts")
    part = features // parts
    if part < size:
        raise ConfigError(f"{part} features cannot be split over tensor-parallel size {size}: use at most {part}")
    start, end = even_range(part, rank, size)
    return [p * part + i for p in range(parts) for i in range(start, end)]
