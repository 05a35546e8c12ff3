"""The worker side: a full replica of the model that pushes gradients and pulls parameters.

Parameters and gradients live in flat buffers (each parameter and `.grad` a view), so a push is
one send of each server's key range and a pull one receive into it. Backward communicates
nothing (so `no_sync()` has nothing to suspend); `optimizer.step()` pushes and pulls.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .. import comm
from ..strategy.optim_rebuild import group_options, rebuild_optimizer
from ..strategy.prepare import unique_parameters
from . import heartbeat, protocol


class WorkerModule(nn.Module):
    strategy_name = "ps"

    def __init__(self, module: nn.Module, config):
        super().__init__()
        self.module = module
        self.config = config
        self.trainable = [p for p in unique_parameters(module) if p.requires_grad]
        numels = [p.numel() for p in self.trainable]
        self.flat_params = torch.cat([p.detach().reshape(-1) for p in self.trainable]).float()
        self.flat_grads = torch.zeros_like(self.flat_params)
        start = 0
        self.grad_views = []
        for p, n in zip(self.trainable, numels):
            p.data = self.flat_params[start:start + n].view(p.shape)
            self.grad_views.append(self.flat_grads[start:start + n].view(p.shape))
            start += n

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        yield

    def gather_grads(self) -> None:
        """Gradients into the flat buffer (after zero_grad autograd allocates fresh ones)."""
        for p, view in zip(self.trainable, self.grad_views):
            if p.grad is None:
                view.zero_()
            elif p.grad.data_ptr() != view.data_ptr():
                view.copy_(p.grad)
                p.grad = view

    def model_state_tensors(self):
        yield self.flat_params
        yield self.flat_grads


class WorkerClientMixin:
    """Mixed into the user's optimizer class: step() pushes to and pulls from the servers."""

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._shardwise_client.push_and_pull([g["lr"] for g in self.param_groups])
        return loss

    def finish(self) -> list[dict] | None:
        """Tell the servers this worker is done; worker 0 returns the servers' statistics."""
        return self._shardwise_client.finish()

    def updates_applied(self) -> int:
        """Updates the servers had applied at this worker's last pull (async: pushes by anyone)."""
        return min(self._shardwise_client.versions)


class Client:
    def __init__(self, model: WorkerModule, ranges: list[tuple[int, int]], worker_rank: int, worker_index: int):
        self.model, self.ranges = model, ranges
        self.worker_rank, self.worker_index = worker_rank, worker_index
        self.versions = [0] * len(ranges)
        self.steps = 0
        self.clock = 0
        self.finished = False
        self.stats = None

    def join(self) -> None:
        """Pull every range; server 0 first, whose answer carries this worker's clock for the rest."""
        protocol.send_header(0, protocol.JOIN, self.worker_rank, -1)
        self._pull([0])
        for server in range(1, len(self.ranges)):
            protocol.send_header(server, protocol.JOIN, self.worker_rank, self.clock)
        self._pull(range(1, len(self.ranges)))

    def push_and_pull(self, lrs: list[float]) -> None:
        self.model.gather_grads()
        lr_tensor = torch.tensor(lrs, dtype=torch.float64)
        for server, (lo, hi) in enumerate(self.ranges):
            protocol.send_header(server, protocol.PUSH, self.worker_rank, self.steps, self.versions[server], hi - lo)
            comm.send(self.model.flat_grads[lo:hi], server)
            comm.send(lr_tensor, server)
        self._pull()
        self.steps += 1

    def _pull(self, servers=None) -> None:
        for server in range(len(self.ranges)) if servers is None else servers:
            lo, hi = self.ranges[server]
            _, fields = protocol.recv_header(server)
            comm.recv(self.model.flat_params[lo:hi], server)
            self.versions[server] = fields[3]
            if server == 0:
                self.clock = fields[2]  # pushes server 0 counts for this worker (ssp: from the slowest's at join)

    def save(self, folder: str) -> dict[str, str]:
        """Ask every server to write its shard into `folder`; {file name: SHA-256}."""
        files = {}
        for server in range(len(self.ranges)):
            protocol.send_header(server, protocol.SAVE, self.worker_rank)
            protocol.send_object(server, folder)
        for server in range(len(self.ranges)):
            name, digest = protocol.recv_object(server)
            files[name] = digest
        return files

    def load(self, path: str) -> None:
        """Ask every server to take its range from the checkpoint at `path`."""
        for server in range(len(self.ranges)):
            protocol.send_header(server, protocol.LOAD, self.worker_rank)
            protocol.send_object(server, path)
        for server in range(len(self.ranges)):
            protocol.recv_object(server)

    def finish(self):
        if not self.finished:
            self.finished = True
            for server in range(len(self.ranges)):
                protocol.send_header(server, protocol.DONE, self.worker_rank)
                protocol.recv_header(server)
            if self.worker_index == 0:
                self.stats = heartbeat.read_stats(len(self.ranges))
        return self.stats


def client_optimizer(optimizer: torch.optim.Optimizer, client: Client) -> torch.optim.Optimizer:
    """The user's optimizer class over the replica's parameters, whose step is a push and a pull."""
    cls = type(f"ParameterServer{type(optimizer).__name__}", (WorkerClientMixin, type(optimizer)), {})
    groups = [{**group_options(g), "params": list(g["params"])} for g in optimizer.param_groups]
    rebuilt = rebuild_optimizer(optimizer, cls, groups)
    rebuilt._shardwise_client = client
    return rebuilt
