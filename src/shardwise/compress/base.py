"""What a compressor is, and the bookkeeping every lossy one shares.

[Note: compressed buckets]
DDP averages each gradient bucket (one flat buffer, its parameters' `.grad` are views of it) in
one collective launched as soon as the bucket is ready in backward. With `DDP(compress=...)`
a `Compressor` makes one `Codec` per bucket instead; `codec.start(flat, views, group)` starts
sending this rank's compressed gradient and returns a handle whose `wait()`, at the end of
backward, leaves in `flat` the average over ranks of what was sent, decoded. Bytes are counted
by the communication layer from what is really sent (quantized values, indices, factors).

Error feedback (Seide et al. 2014; Karimireddy et al. 2019): what a lossy codec did not send
this step is added to the next step's gradient, so nothing is lost, only delayed. `Residual`
keeps it: `corrected = grad + residual`, then `residual = corrected - sent`, so
`sent + residual == corrected` exactly (tested without processes). A codec's state (residual,
PowerSGD's warm-start factors) is saved with checkpoints through `state_tensors()`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .. import comm
from ..comm.pairwise import PairwiseWork as Finish  # a codec's handle: collectives in flight, then what to do once

COMPRESS_TAG_BASE = 4 << 16  # gloo pairwise all-gathers of compressed buckets: base + 4 * bucket + k


class Handle(Protocol):
    def wait(self) -> bool: ...


class Codec(Protocol):
    """One bucket's compressor, with that bucket's state."""

    def start(self, flat: torch.Tensor, views: list[torch.Tensor], group) -> Handle: ...

    def state_tensors(self) -> dict[str, torch.Tensor]: ...

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None: ...


@runtime_checkable
class Compressor(Protocol):
    """A named compression method: makes a codec per bucket."""

    name: str

    def codec(self, bucket_index: int, flat: torch.Tensor, views: list[torch.Tensor]) -> Codec: ...


class Residual:
    """Error feedback over a flat buffer: what was not sent, to add to the next gradient."""

    def __init__(self, like: torch.Tensor):
        self.value = torch.zeros_like(like)

    def correct(self, grad: torch.Tensor) -> torch.Tensor:
        """grad + residual, in place in `grad`."""
        return grad.add_(self.value)

    def keep(self, corrected: torch.Tensor, sent: torch.Tensor) -> None:
        """residual = corrected - sent (`sent`: what the others will decode of this rank's part)."""
        torch.sub(corrected, sent, out=self.value)


class ResidualState:
    """`state_tensors` / `load_state_tensors` of a codec whose only state is its residual."""

    residual: Residual

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"residual": self.residual.value}

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        self.residual.value.copy_(state["residual"])


def world_of(group) -> int:
    return comm.group_size(comm.default_group(group))
