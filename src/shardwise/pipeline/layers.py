"""The sequence of layers a pipeline cuts into stages.

An `nn.Sequential` is its children in order. Any other model lists its layers itself with a
method `pipeline_layers()` returning [(name, module), ...] whose calls, chained, compute the
model's forward (the built-in GPT does: embeddings, blocks.0 ... blocks.N-1, head). A layer
takes one tensor and returns one tensor; parameters may be shared between layers (tied
embeddings), and they stay tied across stages.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError


def pipeline_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if hasattr(model, "pipeline_layers"):
        layers = list(model.pipeline_layers())
    elif isinstance(model, nn.Sequential):
        layers = list(model.named_children())
    else:
        raise ConfigError(f"a pipeline splits an nn.Sequential or a model with a pipeline_layers() method listing "
                          f"[(name, layer)] in order; {type(model).__name__} has neither")
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no layers to split into pipeline stages")
    return layers


def layer_weights(layers: list[tuple[str, nn.Module]]) -> list[int]:
    """Parameters per layer, a shared parameter counted in the first layer that has it."""
    seen: set[int] = set()
    weights = []
    for _, layer in layers:
        count = 0
        for p in layer.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                count += p.numel()
        weights.append(count)
    return weights
