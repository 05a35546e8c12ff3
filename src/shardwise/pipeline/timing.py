"""Measured forward+backward time of each layer, for `Pipeline(split="auto")`.

Each layer runs on what the layers before it produce from an example micro-batch: a forward,
then a backward of its output's sum (into its input when that is a float tensor), timed a few
times after a warm-up; the median counts. Training is left exactly as it was: random number
generators and buffers (batch-norm statistics) are restored afterwards, and `.grad` is not touched.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


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


def layer_times(layers: list[tuple[str, nn.Module]], example, repeats: int = 3) -> list[float]:
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
                times.append(statistics.median(samples))
                x = out.detach() if isinstance(out, torch.Tensor) else out
    finally:
        with torch.no_grad():
            for buffer, saved in buffers.values():
                buffer.copy_(saved)
    return times
