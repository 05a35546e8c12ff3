"""Messages between workers and servers, over the communication layer's send/recv.

Every message is a fixed-size int64 header, then (for some kinds) a float32 payload from or to
the same peer; point-to-point messages between one pair arrive in order, so the payload that
follows a header belongs to it. A server receives headers from any worker.

PUSH: the header, the gradient of the server's key range, then a pickled object (the optimizer's
group options, which parameters got a gradient, clip requests). PARAMS: the header, the range's
values, then, if the header's last field is k > 0, the k norms of the step's clip requests.
DROPPED: the answer to a worker the servers dropped (silent past `dead_after_s`): it stops with
an error that says so instead of waiting for parameters that will not come.
"""

from __future__ import annotations

import pickle

import torch

from .. import comm

JOIN, PUSH, DONE, PARAMS, STATS, SAVE, LOAD, DROPPED = 1, 2, 3, 4, 5, 6, 7, 8
HEADER = 6  # kind, worker, step, version, payload elements, extra (PARAMS: clip norms that follow)


def header(kind: int, worker: int = 0, step: int = 0, version: int = 0, numel: int = 0, extra: int = 0) -> torch.Tensor:
    return torch.tensor([kind, worker, step, version, numel, extra], dtype=torch.int64)


def send_header(peer: int, *fields) -> None:
    comm.send(header(*fields), peer)


def recv_header(src: int | None = None) -> tuple[int, list[int]]:
    """(sender global rank, header fields)."""
    buffer = torch.empty(HEADER, dtype=torch.int64)
    sender = comm.recv(buffer, src)
    return sender, buffer.tolist()


def send_object(peer: int, obj) -> None:
    data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
    comm.send(torch.tensor([data.numel()], dtype=torch.int64), peer)
    comm.send(data, peer)


def recv_object(src: int):
    size = torch.empty(1, dtype=torch.int64)
    comm.recv(size, src)
    data = torch.empty(int(size.item()), dtype=torch.uint8)
    comm.recv(data, src)
    return pickle.loads(data.numpy().tobytes())
