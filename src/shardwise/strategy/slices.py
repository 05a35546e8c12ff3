"""Where a rank's slice of a split parameter lies in the full, flattened parameter (pure).

A column-wise slice (dim 0) of a [out, in] weight is a few runs of whole rows: contiguous
element ranges. A row-wise slice (dim 1) is a run of columns in every row: one range per row.
Checkpoints save these ranges as pieces, so a split model saves and loads like any other.
"""

from __future__ import annotations

import torch

from .. import comm


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted indices as [start, end) runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def element_ranges(full_shape: tuple[int, ...], dim: int, indices: list[int]) -> list[tuple[int, int, int, int]]:
    """(full_start, full_end, local_start, local_end) of the flattened slice keeping `indices`
    along `dim` (0 or 1) of a tensor of `full_shape`."""
    inner = 1
    for d in full_shape[dim + 1:]:
        inner *= d
    out = []
    if dim == 0:
        local = 0
        for a, b in _runs(indices):
            n = (b - a) * inner
            out.append((a * inner, b * inner, local, local + n))
            local += n
        return out
    if dim != 1 or len(full_shape) != 2:
        raise ValueError(f"splitting along dim {dim} of shape {full_shape} is not supported")
    rows, cols = full_shape
    width = len(indices)
    runs = _runs(indices)
    for row in range(rows):
        local = row * width
        for a, b in runs:
            out.append((row * cols + a, row * cols + b, local, local + (b - a)))
            local += b - a
    return out


def take(full: torch.Tensor, dim: int, indices: list[int]) -> torch.Tensor:
    """The slice of `full` keeping `indices` along `dim`."""
    return full.index_select(dim, torch.tensor(indices, device=full.device)).contiguous()


def gather_full(tensor: torch.Tensor, cut, group) -> torch.Tensor:
    """The full tensor from every rank's slice (a collective over `group`)."""
    full = torch.empty(cut.full_shape, dtype=tensor.dtype)
    for indices, part in comm.all_gather_object((cut.indices, tensor.detach().cpu()), group=group):
        full.index_copy_(cut.dim, torch.tensor(indices), part)
    return full
