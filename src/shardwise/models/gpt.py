"""A small decoder-only GPT (GPT-2 architecture, nanoGPT-sized) for character-level language modelling.

It is the built-in model the CLI trains. Two details matter to the distributed strategies:
`lm_head.weight` is the very same Parameter as `token_embedding.weight` (tied weights, so every
strategy must handle a parameter reached from two modules), and initialisation draws only from
the global torch RNG, so `torch.manual_seed(s)` before construction reproduces it exactly.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shardwise.errors import ConfigError


@dataclass
class GPTConfig:
    """Shape of the GPT; defaults give a ~0.8M-parameter model that trains in minutes on CPU."""

    vocab_size: int = 96
    """Number of token ids; 96 is the fixed character vocabulary of `shardwise.data`."""
    block_size: int = 128
    """Longest context in tokens; sets the size of the learned position embedding."""
    n_layer: int = 4
    """Number of transformer blocks."""
    n_head: int = 4
    """Attention heads per block; must divide `n_embd`."""
    n_embd: int = 128
    """Width of the residual stream."""
    dropout: float = 0.0
    """Dropout probability on embeddings, attention and residual branches (0 keeps runs deterministic)."""
    bias: bool = True
    """Whether Linear and LayerNorm layers have a bias (GPT-2 has them)."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ConfigError(f"GPTConfig.{name} must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ConfigError(f"GPTConfig.n_embd {self.n_embd} does not split evenly over n_head {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees only positions <= t."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.dropout = config.dropout
        self.qkv_proj = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.out_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.out_proj.is_residual_projection = True  # scaled at init, see GPT._init_weights
        self.residual_dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [B, T, C] -> [B, T, C]
        batch, seq_len, _ = hidden.shape
        qkv = self.qkv_proj(hidden)
        # The heads this module computes follow from qkv's width: all of them, or under tensor
        # parallelism (qkv_proj split by heads) this rank's share.
        width = qkv.shape[-1] // 3
        q, k, v = qkv.split(width, dim=2)
        # [B, T, C] -> [B, n_head, T, head_dim]
        q, k, v = (t.view(batch, seq_len, width // self.head_dim, self.head_dim).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        attended = attended.transpose(1, 2).contiguous().view(batch, seq_len, width)
        return self.residual_dropout(self.out_proj(attended))


class FeedForward(nn.Module):
    """Position-wise MLP, 4x wide with GELU, as in GPT-2."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.activation = nn.GELU()
        self.down_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.down_proj.is_residual_projection = True  # scaled at init, see GPT._init_weights
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(self.activation(self.up_proj(hidden))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.mlp_norm = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = FeedForward(config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.attn(self.attn_norm(hidden))
        return hidden + self.mlp(self.mlp_norm(hidden))


def pipeline_layer_names(n_layer: int) -> list[str]:
    """The names of `GPT.pipeline_layers()`, from the config alone (no model built)."""
    return ["embeddings", *(f"blocks.{i}" for i in range(n_layer)), "head"]


class GPT(nn.Module):
    """Token + position embeddings, `n_layer` blocks, final LayerNorm, tied output head."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = nn.Embedding(config.block_size, config.n_embd)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.final_norm = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017): one Parameter, reached from two modules.
        self.lm_head.weight = self.token_embedding.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 init: N(0, 0.02), residual projections N(0, 0.02/sqrt(2*n_layer)) so the residual
        stream's variance does not grow with depth (GPT-2 paper §2.3). Global RNG only."""
        if module is self.lm_head:
            return  # its weight is the token embedding, initialised once as an Embedding
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "is_residual_projection", False):
                std = 0.02 / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids [B, T] (int64) -> next-token logits [B, T, vocab_size] (float)."""
        seq_len = idx.shape[1]
        if seq_len > self.config.block_size:
            raise ConfigError(f"sequence length {seq_len} exceeds the model's block_size {self.config.block_size}")
        positions = torch.arange(seq_len, device=idx.device)
        hidden = self.embedding_dropout(self.token_embedding(idx) + self.position_embedding(positions))
        for block in self.blocks:
            hidden = block(hidden)
        return self.lm_head(self.final_norm(hidden))

    def pipeline_layers(self) -> list[tuple[str, nn.Module]]:
        """The forward as a chain of layers for pipeline parallelism: "embeddings" (token ids to
        hidden states), "blocks.0" ... , "head" (final norm and the tied output projection)."""
        modules = [_Embeddings(self), *self.blocks, _Head(self)]
        return list(zip(pipeline_layer_names(self.config.n_layer), modules))

    def example_input(self, batch: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random token ids [batch, block_size] (pipeline split="auto" times the layers on them)."""
        return torch.randint(self.config.vocab_size, (batch, self.config.block_size), generator=generator)

    def tensor_parallel_plan(self, vocab: bool = False, split_logits: bool = False) -> dict[str, str]:
        """Megatron-LM's split (Shoeybi et al. 2019): attention by heads (q, k and v column-wise
        in three parts, the output projection row-wise), the MLP's up projection column-wise and
        its down projection row-wise; norms replicated, and the token embedding with its tied
        head replicated too, or (`vocab`) split by vocabulary rows, the head's logits gathered
        whole or (`split_logits`) left split for `vocab_parallel_cross_entropy`."""
        if split_logits and not vocab:
            raise ConfigError("split_logits leaves the vocabulary-parallel head's logits split: add vocab=True")
        plan = {"blocks.*.attn.qkv_proj": "colwise:3", "blocks.*.attn.out_proj": "rowwise",
                "blocks.*.mlp.up_proj": "colwise", "blocks.*.mlp.down_proj": "rowwise"}
        if vocab:
            plan.update({"token_embedding": "vocab", "lm_head": "vocab-split" if split_logits else "vocab"})
        return plan

    def num_params(self) -> int:
        """Number of scalar parameters, each shared Parameter (the tied head) counted once."""
        return sum(p.numel() for p in self.parameters())  # parameters() already de-duplicates

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append `max_new_tokens` sampled tokens to `idx` [B, T]; returns [B, T + max_new_tokens].

        The context is cropped to the last `block_size` tokens. Dropout is off while sampling and
        the module's train/eval mode is restored afterwards. Pass `generator` for reproducible samples.
        """
        if temperature <= 0:
            raise ConfigError(f"temperature must be positive, got {temperature}")
        was_training = self.training
        self.eval()
        try:
            for _ in range(max_new_tokens):
                context = idx[:, -self.config.block_size:]
                logits = self(context)[:, -1, :] / temperature  # [B, V]
                if top_k is not None:
                    kth_largest = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                    logits = logits.masked_fill(logits < kth_largest, float("-inf"))
                probs = F.softmax(logits, dim=-1)
                next_token = torch.multinomial(probs, num_samples=1, generator=generator)  # [B, 1]
                idx = torch.cat([idx, next_token], dim=1)
        finally:
            self.train(was_training)
        return idx


class _Embeddings(nn.Module):
    """GPT's first layer in a pipeline: token + position embeddings (and dropout)."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.token_embedding, self.position_embedding = gpt.token_embedding, gpt.position_embedding
        self.embedding_dropout, self.block_size = gpt.embedding_dropout, gpt.config.block_size

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[1] > self.block_size:
            raise ConfigError(f"sequence length {idx.shape[1]} exceeds the model's block_size {self.block_size}")
        positions = torch.arange(idx.shape[1], device=idx.device)
        return self.embedding_dropout(self.token_embedding(idx) + self.position_embedding(positions))


class _Head(nn.Module):
    """GPT's last layer in a pipeline: final norm and the output projection (tied to the embedding)."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.final_norm, self.lm_head = gpt.final_norm, gpt.lm_head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.final_norm(hidden))


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross entropy over all B*T positions: logits [B, T, V], targets [B, T] -> scalar.

    A mean over positions, so equal slices on N ranks averaged give the global-batch loss.
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
