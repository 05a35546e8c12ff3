"""Measured forward+backward time of each layer, for `Pipeline(split="auto")`.

Each layer runs on what the layers before it produce from an example micro-batch: a forward,
then a backward of its output's sum (into its input when that is a float tensor), timed a few
times after a warm-up; the fastest counts (what the layer costs when nothing
interrupts it). Training is left exactly as it was: random number
generators and buffers (batch-norm statistics) are restored afterwards, and `.grad` is not touched.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ..errors import ConfigError


def _float_input(x):
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return x.detach().requires_grad_(True)
    return x.detach() if isinstance(x, torch.Tensor) else x


def _forward_backward(layer: nn.Module, x) -> tuple[float, object]:
    """Gradients are computed as in training but not accumulated into `.grad`."""
    start = time.perf_counter()
    x = _float_input(x)
    out = layer(x)
    wrt = [p for p in layer.parameters() if p.requires_grad]
    if isinstance(x, torch.Tensor) and x.requires_grad:
        wrt.append(x)
    if isinstance(out, torch.Tensor) and out.requires_grad and wrt:
        torch.autograd.grad(out.float().sum(), wrt, allow_unused=True)
    return time.perf_counter() - start, out


def layer_times(layers: list[tuple[str, nn.Module]], example, repeats: int = 5) -> list[float]:
    """Seconds per forward+backward of each layer on `example` (one micro-batch of inputs)."""
    modules = [layer for _, layer in layers]
    buffers = {id(b): (b, b.detach().clone()) for m in modules for b in m.buffers()}
    times = []
    try:
        with torch.random.fork_rng(devices=[]):
            x = example
            for layer in modules:
                _, out = _forward_backward(layer, x)  # warm-up
                samples = [_forward_backward(layer, x)[0] for _ in range(repeats)]
                times.append(min(samples))
                x = out.detach() if isinstance(out, torch.Tensor) else out
    finally:
        with torch.no_grad():
            for buffer, saved in buffers.values():
                buffer.copy_(saved)
    return times


def made_up_example(model: nn.Module, layers: list[tuple[str, nn.Module]], batch: int = 4):
    """An input to time the layers on when none is given: the model's `example_input(batch)`
    if it has one (the built-in GPT and MLP do), else random rows for a first nn.Linear or
    token ids for a first nn.Embedding; None if there is no telling."""
    generator = torch.Generator().manual_seed(0)  # the global random state stays untouched
    if hasattr(model, "example_input"):
        return model.example_input(batch, generator=generator)
    first = next((m for m in layers[0][1].modules() if isinstance(m, (nn.Linear, nn.Embedding))), None)
    if isinstance(first, nn.Linear):
        return torch.randn(batch, first.in_features, generator=generator)
    if isinstance(first, nn.Embedding):
        return torch.randint(first.num_embeddings, (batch, 16), generator=generator)
    return None


def timed_layers(model: nn.Module, layers: list[tuple[str, nn.Module]], example) -> list[float]:
    """`layer_times` on `example`, or on a made-up input when it is None; one line if neither runs."""
    given = example is not None
    if not given:
        example = made_up_example(model, layers)
    if example is None:
        raise ConfigError(f"split='auto' cannot make up an input for {type(model).__name__}: pass "
                          f"sw.Pipeline(split='auto', example=<one micro-batch of inputs>)")
    try:
        return layer_times(layers, example)
    except Exception as exc:  # a made-up input of the wrong shape, or a broken example
        what = "the example" if given else "a made-up input"
        raise ConfigError(f"split='auto' could not time the layers on {what} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}): pass "
                          f"sw.Pipeline(split='auto', example=<one micro-batch of inputs>)") from None
