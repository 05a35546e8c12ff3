"""Tiny models shaped like the ones users bring to a DDP script.

Each builds from the global torch RNG only, so `torch.manual_seed(s)` before construction gives
the same weights in a single process and on every rank. Dropout is off everywhere: parity is
exact arithmetic on the same batch, and dropout masks would differ between one process and N.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


# ---------------------------------------------------------------- nanoGPT (karpathy/nanoGPT model.py)

@dataclass(frozen=True)
class NanoGPTConfig:
    """nanoGPT's GPTConfig at a size that trains in milliseconds."""

    block_size: int = 16
    """Longest context in tokens."""
    vocab_size: int = 32
    """Token ids 0..vocab_size-1."""
    n_layer: int = 2
    """Transformer blocks."""
    n_head: int = 2
    """Attention heads; divides n_embd."""
    n_embd: int = 32
    """Residual stream width."""
    bias: bool = False
    """nanoGPT's train.py default: no biases, so no attention key bias whose gradient is rounding noise."""


class LayerNorm(nn.Module):
    """nanoGPT's LayerNorm with an optional bias."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class NanoAttention(nn.Module):
    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head, self.n_embd = config.n_head, config.n_embd

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class NanoMLP(nn.Module):
    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class NanoBlock(nn.Module):
    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = NanoAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = NanoMLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    """nanoGPT's GPT: a ModuleDict `transformer`, tied `lm_head`, forward(idx, targets) -> (logits, loss)."""

    def __init__(self, config: NanoGPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            h=nn.ModuleList([NanoBlock(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        t = idx.size(1)
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            logits = self.lm_head(x[:, [-1], :])
            loss = None
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        """nanoGPT's: every >=2-D tensor decays, biases and norms do not; AdamW."""
        param_dict = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
        nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
        optim_groups = [
            {"params": decay_params, "weight_decay": weight_decay},
            {"params": nodecay_params, "weight_decay": 0.0},
        ]
        fused_available = "fused" in inspect.signature(torch.optim.AdamW).parameters
        use_fused = fused_available and device_type == "cuda"
        extra_args = dict(fused=True) if use_fused else dict()
        return torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, **extra_args)


# ---------------------------------------------------------------- vision: BatchNorm CNN

class SmallCNN(nn.Module):
    """Two conv + BatchNorm stages on 3x8x8 images, pooled into 4 classes (torchvision's shape)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        )
        self.classifier = nn.Linear(8, 4)

    def forward(self, images):  # [B, 3, 8, 8] -> [B, 4]
        return self.classifier(self.features(images).mean(dim=(2, 3)))


# ---------------------------------------------------------------- a head that some steps skip

class TwoHeads(nn.Module):
    """A shared trunk and two heads; `use_aux` decides whether the auxiliary head runs."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh())
        self.main_head = nn.Linear(16, 3)
        self.aux_head = nn.Linear(16, 3)

    def forward(self, x, use_aux: bool):
        hidden = self.trunk(x)
        out = self.main_head(hidden)
        if use_aux:
            out = out + self.aux_head(hidden)
        return out


# ---------------------------------------------------------------- blocks: reuse and checkpointing

class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return x + F.gelu(self.fc(self.norm(x)))


class BlockStack(nn.Module):
    """Embed, run blocks in `order` (an index may repeat), project.

    order (0, 1, 2, 3, 0): block 0 runs first and last, its gradient arrives in two parts far
    apart in backward (ALBERT-style sharing). `checkpointed`: each block call is recomputed in
    backward (torch.utils.checkpoint, use_reentrant=False), as large-model scripts do.
    """

    def __init__(self, width: int = 12, n_blocks: int = 4, order=(0, 1, 2, 3), checkpointed: bool = False):
        super().__init__()
        self.embed = nn.Linear(5, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(n_blocks))
        self.head = nn.Linear(width, 3)
        self.order = tuple(order)
        self.checkpointed = checkpointed

    def forward(self, x):
        hidden = self.embed(x)
        for index in self.order:
            block = self.blocks[index]
            hidden = checkpoint(block, hidden, use_reentrant=False) if self.checkpointed else block(hidden)
        return self.head(hidden)


class SmallMLP(nn.Module):
    """What a first torch.compile script compiles: Linear, LayerNorm, GELU."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(5, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


# ---------------------------------------------------------------- Hugging Face, from configs (nothing downloaded)

HF_VOCAB, HF_SEQ = 40, 8


def hf_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=HF_VOCAB, n_positions=16, n_embd=64, n_layer=2, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config)


def hf_bert():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=HF_VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=16, num_labels=3,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    return BertForSequenceClassification(config)
