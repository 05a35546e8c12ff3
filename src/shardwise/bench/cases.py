"""What a benchmark trains: the model, its optimizer, its per-rank batches and its loss.

Two kinds, the benchmark cases of `benchmarks/ddp_vs_torch.py` and `zero_vs_torch.py`: an MLP
(the 8.4M default, or any width x depth) with Adam on an MSE regression of random data, and the
built-in GPT with AdamW (no weight decay on biases and norms) on random tokens. Random data is
all timing and parity need: every configuration sees the same batches in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..models import GPT, MLP, GPTConfig, lm_loss

MODEL_KINDS = ("mlp", "gpt")
DISTINCT_BATCHES = 4  # cycled; each rank draws its own


@dataclass(frozen=True)
class ModelCase:
    """One model to benchmark, with everything that decides its step but the strategy."""

    name: str
    """'mlp' or 'gpt'."""
    width: int = 1024
    """MLP only: width of every layer (the input and output too)."""
    depth: int = 8
    """MLP only: number of Linear + GELU blocks."""
    gpt: GPTConfig = field(default_factory=GPTConfig)
    """GPT only: its shape; sequences are `gpt.block_size` tokens long."""
    batch: int = 64
    """Per rank: rows of the MLP's input, or sequences of the GPT's."""

    @property
    def description(self) -> str:
        if self.name == "mlp":
            return f"MLP {self.depth}x{self.width}, Adam lr 1e-3, MSE, batch {self.batch}/rank"
        g = self.gpt
        return f"GPT {g.n_layer}x{g.n_embd}, AdamW lr 3e-4, {self.batch}x{g.block_size} tok/rank"

    def build(self) -> nn.Module:
        """The model, initialised from the global torch RNG (seed it first)."""
        if self.name == "mlp":
            return MLP(width=self.width, depth=self.depth)
        return GPT(self.gpt)

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        if self.name == "mlp":
            return torch.optim.Adam(model.parameters(), lr=1e-3)
        decay = [p for p in model.parameters() if p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.ndim < 2]
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=3e-4, weight_decay=0.1)

    def batches(self, rank: int, count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`count` per-rank batches (inputs, targets); each rank draws its own."""
        generator = torch.Generator().manual_seed(1000 * seed + rank)
        out = []
        for _ in range(count):
            if self.name == "mlp":
                x = torch.randn(self.batch, self.width, generator=generator)  # [B, width]: MLP(width) in and out
                y = torch.randn(self.batch, self.width, generator=generator)
            else:
                seq_len = self.gpt.block_size
                tokens = torch.randint(0, self.gpt.vocab_size, (self.batch, seq_len + 1), generator=generator)
                x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()  # [B, T] each
            out.append((x, y))
        return out

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output, target) if self.name == "mlp" else lm_loss(output, target)

    def fsdp_units(self, module: nn.Module) -> list[nn.Module]:
        """What FSDP2 shards as one unit: the split shardwise's stage 3 makes by default."""
        if self.name == "mlp":
            return [layer for layer in module.layers if isinstance(layer, nn.Linear)]
        return list(module.blocks)


def model_case(name: str, tiny: bool = False) -> ModelCase:
    """The benchmark scripts' cases: the 8.4M MLP or the built-in GPT, or very small ones (smoke tests)."""
    if name == "mlp":
        return ModelCase("mlp", width=64, depth=2, batch=8) if tiny else ModelCase("mlp")
    if tiny:
        return ModelCase("gpt", gpt=GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16), batch=4)
    return ModelCase("gpt", gpt=GPTConfig(), batch=16)


def parameter_count(module: nn.Module) -> int:
    """Ψ: trainable elements, a tied parameter once (`parameters()` yields each Parameter once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
