"""A gradient bucket: one flat buffer whose slices are the `.grad` of its parameters.

Per-bucket state of the DDP strategy. The bucket knows which of its parameters have produced
their gradient in the current backward; when the last one has, the whole buffer is ready to be
all-reduced in one collective. It also remembers which were used since the last synchronising
backward, for `find_unused_parameters` ([Note: unused parameters] in data_parallel.py).
"""

from __future__ import annotations

import torch
from torch import nn

from ..flat.ranges import offsets


class GradBucket:
    """Flat gradient storage for a few parameters of one dtype and device."""

    def __init__(self, index: int, params: list[nn.Parameter]):
        self.index = index
        self.params = params
        numels = [p.numel() for p in params]
        self.flat = torch.zeros(sum(numels), dtype=params[0].dtype, device=params[0].device)  # 1D
        self.views = [self.flat[start:start + n].view_as(p) for p, start, n in zip(params, offsets(numels), numels)]
        self.ready: set[int] = set()  # positions of parameters whose gradient is in the buffer
        self.used: set[int] = set()  # positions whose gradient autograd produced since the last sync
        self.work = None  # the all-reduce in flight, if launched

    @property
    def nbytes(self) -> int:
        return self.flat.numel() * self.flat.element_size()

    def adopt_grad(self, position: int) -> None:
        """Make the parameter's `.grad` the bucket's view, copying a freshly allocated gradient in.

        After `optimizer.zero_grad()` (set_to_none) autograd allocates a new gradient tensor;
        otherwise it accumulates in place into the view and nothing is copied.
        """
        param, view = self.params[position], self.views[position]
        if param.grad is None:
            return
        if param.grad.data_ptr() != view.data_ptr():
            view.copy_(param.grad)
            param.grad = view

    def fill_unused(self, position: int) -> None:
        """Put this rank's share of a gradient autograd did not produce into the buffer: zero if
        `.grad` is None, else the gradient as it stands (PyTorch DDP's reducer does the same)."""
        if self.params[position].grad is None:
            self.views[position].zero_()
        else:
            self.adopt_grad(position)

    def mark_ready(self, position: int) -> bool:
        """Record that this parameter's gradient is final; True when the whole bucket is."""
        self.ready.add(position)
        return len(self.ready) == len(self.params)

    def missing(self) -> list[nn.Parameter]:
        return [p for i, p in enumerate(self.params) if i not in self.ready]

    def missing_positions(self) -> list[int]:
        return [i for i in range(len(self.params)) if i not in self.ready]

    def reset(self) -> None:
        self.ready.clear()
        self.work = None
