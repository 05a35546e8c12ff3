"""Small training problems for parity tests: model, optimizer, global batches and loss.

Each case is a name, so a spawned rank can rebuild it without pickling models. Global batches
have GLOBAL_BATCH rows, which divides evenly by every world size 1 to 4 and by an accumulation
of 2 micro-batches per rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..models import GPT, MLP, GPTConfig
from ..models.gpt import lm_loss

GLOBAL_BATCH = 24


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    """Builds the model from the global RNG (seeded by the caller)."""
    optimizer: Callable[[nn.Module], torch.optim.Optimizer]
    """Builds the optimizer over the model's own parameters."""
    batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]]
    """Global batch (x, y) for a step; deterministic in the step."""
    loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
    """Mean loss of the model on (x, y)."""


def _odd_mlp() -> nn.Module:
    return MLP(d_in=7, width=13, depth=3, d_out=5)


def _deep_odd_mlp() -> nn.Module:
    return MLP(d_in=7, width=13, depth=5, d_out=5)  # 10 layers: room for 8 pipeline stages


def _frozen_mlp() -> nn.Module:
    model = _odd_mlp()
    for p in list(model.parameters())[:2]:
        p.requires_grad_(False)
    return model


def _tiny_gpt() -> nn.Module:
    return GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16))


def _deep_gpt() -> nn.Module:
    return GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=6, n_head=2, n_embd=16))  # 8 pipeline layers


def _adam(model):
    return torch.optim.Adam(model.parameters(), lr=1e-2)


def _sgd_momentum(model):
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=5e-2, momentum=0.9)


def _adamw_groups(model, lr: float = 1e-2):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lr": lr / 3}], lr=lr, weight_decay=0.1
    )


def _gpt_adamw(model):
    # [Note: attention key bias under Adam]
    # The key projection's bias has a zero gradient in exact arithmetic (softmax ignores a
    # constant added to every score), so its float gradient is pure rounding noise, and Adam
    # normalises noise into updates of about lr * 1e-4. At lr 1e-2 that noise alone differs
    # by more than the parity tolerance between two single-process runs that merely split the
    # batch differently; at a GPT-typical lr of 1e-3 it stays two orders below it.
    return _adamw_groups(model, lr=1e-3)


def _regression_batch(step: int):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(GLOBAL_BATCH, 7, generator=g), torch.randn(GLOBAL_BATCH, 5, generator=g)


def _token_batch(step: int):
    g = torch.Generator().manual_seed(2000 + step)
    tokens = torch.randint(0, 17, (GLOBAL_BATCH, 9), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def _mse(model, x, y):
    return F.mse_loss(model(x), y)


def _lm(model, x, y):
    return lm_loss(model(x), y)


CASES: dict[str, Case] = {
    "mlp": Case(_odd_mlp, _adam, _regression_batch, _mse),
    "mlp_groups": Case(_odd_mlp, _adamw_groups, _regression_batch, _mse),
    "frozen_sgd": Case(_frozen_mlp, _sgd_momentum, _regression_batch, _mse),
    "gpt_tied": Case(_tiny_gpt, _gpt_adamw, _token_batch, _lm),
    "mlp_deep": Case(_deep_odd_mlp, _adam, _regression_batch, _mse),
    "gpt_deep": Case(_deep_gpt, _gpt_adamw, _token_batch, _lm),
}
