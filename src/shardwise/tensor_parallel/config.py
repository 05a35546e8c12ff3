"""`sw.TensorParallel`: the tensor-parallel strategy object (see [Note: strategy interface])."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from ..strategy.base import StrategyDefaults
from .plan import parse_style


@dataclass(frozen=True)
class TensorParallel(StrategyDefaults):
    """Split the model's Linear layers over `size` ranks following `plan` (module-name pattern
    -> "colwise", "colwise:K", "rowwise", "replicate", "vocab" or "vocab-split"; None: the model's own
    `tensor_parallel_plan()`, which the built-in GPT has). See [Note: tensor-parallel plan]."""

    size: int = 2
    plan: dict | None = field(default=None, hash=False)
    vocab: bool = False
    """With plan=None: the model's plan with its embedding and tied output head split by
    vocabulary rows (`tensor_parallel_plan(vocab=True)`; [Note: vocabulary parallel])."""
    split_logits: bool = False
    """With vocab=True: the head's logits stay split over the ranks (Megatron-LM's parallel output)
    instead of gathered; `loss_fn` then gets this rank's columns, for
    `vocab_parallel_cross_entropy(logits, targets, model.tp_group)`."""

    name = "tensor-parallel"

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"TensorParallel size must be a positive whole number, got {self.size!r}")
        if self.plan is not None:
            if not isinstance(self.plan, dict) or not self.plan:
                raise ConfigError(f"a tensor-parallel plan is a non-empty dict of pattern -> style, got {self.plan!r}")
            for style in self.plan.values():
                parse_style(style)
            if self.vocab:
                raise ConfigError("TensorParallel(vocab=True) asks the model for its plan: with plan=..., "
                                  "give the embedding and head the style 'vocab' in it instead")
        if self.split_logits and not self.vocab:
            how = "give the head the style 'vocab-split' in the plan instead" if self.plan is not None else "add vocab=True"
            raise ConfigError(f"TensorParallel(split_logits=True) leaves the vocabulary-parallel head's logits split: {how}")

    trains_by_step = True

    def batch_slices(self, world_size: int) -> int:
        return 1

    def __str__(self) -> str:
        vocab = (", vocab, split logits" if self.split_logits else ", vocab") if self.vocab else ""
        return f"tensor-parallel(size={self.size}{vocab})"

    def wrap(self, module, optimizer, group=None):
        from ..runtime import env
        from .module import wrap_tensor_parallel

        wrapped = wrap_tensor_parallel(self, module, optimizer, group)
        env.set_data_parallel(0, 1)  # every rank of a tensor-parallel group feeds the same batch
        return wrapped
