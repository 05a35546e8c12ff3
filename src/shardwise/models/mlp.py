"""A stack of Linear + GELU layers: the benchmark model, and small odd-sized ones for tests.

The default (width 1024, depth 8) has 8 * (1024*1024 + 1024) = 8,396,800 parameters: big enough
that communication volume dominates, small enough to run on a laptop.
"""

import torch
from torch import nn

from shardwise.errors import ConfigError


class MLP(nn.Module):
    """`depth` blocks of Linear -> GELU.

    With `d_in`/`d_out` the first Linear maps d_in -> width and the last width -> d_out (with
    depth 1 a single d_in -> d_out layer). Every Linear, the last one included, is followed by a
    GELU, so the default stays exactly `depth` identical blocks; odd sizes (e.g. 7 -> 13 -> 5)
    give parameters whose sizes do not divide evenly by a world size, which sharding tests need.
    """

    def __init__(self, width: int = 1024, depth: int = 8, *, d_in: int | None = None, d_out: int | None = None):
        super().__init__()
        d_in = width if d_in is None else d_in
        d_out = width if d_out is None else d_out
        for name, value in (("width", width), ("depth", depth), ("d_in", d_in), ("d_out", d_out)):
            if value < 1:
                raise ConfigError(f"MLP {name} must be at least 1, got {value}")
        self.d_in, self.d_out = d_in, d_out
        sizes = [d_in] + [width] * (depth - 1) + [d_out]  # depth + 1 boundaries
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.GELU()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [..., d_in] -> [..., d_out]
        return self.layers(x)

    def example_input(self, batch: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random inputs of the right shape (pipeline split="auto" times the layers on them)."""
        return torch.randn(batch, self.d_in, generator=generator)

    def tensor_parallel_plan(self) -> dict[str, str]:
        """Linear layers in pairs, column-wise then row-wise (one all-reduce per pair each way);
        an unpaired last Linear stays whole."""
        linears = [name for name, layer in self.layers.named_children() if isinstance(layer, nn.Linear)]
        plan = {}
        for first, second in zip(linears[0::2], linears[1::2]):
            plan[f"layers.{first}"], plan[f"layers.{second}"] = "colwise", "rowwise"
        return plan

    def pipeline_layers(self) -> list[tuple[str, nn.Module]]:
        """The layers in order, named as in the state dict, for pipeline parallelism."""
        return [(f"layers.{name}", layer) for name, layer in self.layers.named_children()]
