"""What the planner needs to know about a model: its parameter count, and for activations and
FLOPs its transformer shape. From a count, a description, or a Hugging Face style config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    params: float
    """Trainable parameters Ψ."""
    layers: int | None = None
    """Transformer layers (None: unknown shape, no activation estimate)."""
    hidden: int | None = None
    """Hidden size h."""
    heads: int | None = None
    """Attention heads a."""
    vocab: int | None = None
    """Vocabulary size V."""
    seq_len: int | None = None
    """Sequence length s."""

    @property
    def has_shape(self) -> bool:
        return None not in (self.layers, self.hidden, self.heads, self.seq_len)


def gpt_params(layers: int, hidden: int, vocab: int, seq_len: int) -> int:
    """GPT-2 style count: per layer 12h² + 13h (attention, MLP 4h, two LayerNorms, biases),
    token and position embeddings, final LayerNorm; the output head tied to the embedding."""
    return layers * (12 * hidden * hidden + 13 * hidden) + vocab * hidden + seq_len * hidden + 2 * hidden


def from_shape(layers: int, hidden: int, heads: int, vocab: int, seq_len: int) -> ModelSpec:
    for name, value in (("layers", layers), ("hidden", hidden), ("heads", heads), ("vocab", vocab), ("seq_len", seq_len)):
        if value is None or value < 1:
            raise ConfigError(f"model {name} must be a positive whole number, got {value}")
    return ModelSpec(gpt_params(layers, hidden, vocab, seq_len), layers, hidden, heads, vocab, seq_len)


_KEYS = {
    "layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "hidden": ("hidden_size", "n_embd", "d_model"),
    "heads": ("num_attention_heads", "n_head"),
    "vocab": ("vocab_size",),
    "seq_len": ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"),
}


def from_hf_config(path: str, seq_len: int | None = None) -> ModelSpec:
    """Read a Hugging Face style config.json (GPT-2, Llama, BERT key names)."""
    try:
        with open(path) as f:
            config = json.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read model config {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"model config {path} is not valid JSON") from None
    values = {}
    for field, keys in _KEYS.items():
        values[field] = next((config[k] for k in keys if k in config), None)
    if seq_len is not None:
        values["seq_len"] = seq_len
    missing = [f for f, v in values.items() if v is None]
    if missing:
        raise ConfigError(f"model config {path} lacks {', '.join(missing)} (looked for {', '.join(_KEYS[missing[0]])})")
    spec = from_shape(**values)
    intermediate = config.get("intermediate_size")
    if intermediate and intermediate != 4 * values["hidden"]:
        # Gated MLPs (Llama): three h x i matrices instead of two h x 4h.
        h, L = values["hidden"], values["layers"]
        per_layer = 4 * h * h + 3 * h * intermediate + 2 * h
        untied = 1 if config.get("tie_word_embeddings", True) else 2
        params = L * per_layer + untied * values["vocab"] * h + h
        spec = ModelSpec(params, spec.layers, spec.hidden, spec.heads, spec.vocab, spec.seq_len)
    return spec
