"""The worker side: a full replica of the model that pushes gradients and pulls parameters.

Parameters and gradients live in flat buffers (each parameter and `.grad` a view), so a push is
one send of each server's key range and a pull one receive into it. Backward communicates
nothing, so `require_backward_grad_sync = False` and `no_sync()` (see [Note: wrapper
interface]) have nothing to suspend: they are kept and readable, and decide only, as in
PyTorch DDP, whether the next forward broadcasts buffers. `optimizer.step()` pushes the
gradients with every group's options, which parameters got a gradient and any clip request
(see [Note: ps clipping]), then pulls.

[Note: ps buffers]
sync mode with `broadcast_buffers=True`: before a forward, worker 0's buffers (BatchNorm
statistics) are broadcast over the workers' group, on the same forwards PyTorch DDP does (the
first, and each one after a forward with grad enabled and gradient sync on), so the workers
train with the buffers DDP ranks would. async and ssp: workers do not run in step, and a
collective among them would make each wait for the others; each worker keeps its own buffers,
as a single process training on its own data would (they start equal: server 0's at join), and
a checkpoint saves worker 0's.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .. import comm
from ..errors import ShardwiseError
from ..flat.ranges import offsets
from ..strategy.module import StrategyModule, optimizer_tensors
from ..strategy.optim_rebuild import group_options, rebuild_optimizer
from ..strategy.buffers import BufferSync
from ..strategy.prepare import unique_parameters
from . import clip, heartbeat, protocol


class WorkerModule(StrategyModule):
    strategy_name = "ps"

    def __init__(self, module: nn.Module, config, buffer_group=None, buffer_src: int = 0):
        super().__init__(module)
        self.config = config
        self.client: Client | None = None  # set once the client exists (strategy.py)
        self.buffer_group, self.buffer_src = buffer_group, buffer_src
        self.buffer_sync = BufferSync(module, buffer_group, config.broadcast_buffers and buffer_group is not None, buffer_src)
        self.trainable = [p for p in unique_parameters(module) if p.requires_grad]
        numels = [p.numel() for p in self.trainable]
        self.flat_params = torch.cat([p.detach().reshape(-1) for p in self.trainable]).float()
        self.flat_grads = torch.zeros_like(self.flat_params)
        self.grad_views = []
        for p, n, start in zip(self.trainable, numels, offsets(numels)):
            p.data = self.flat_params[start:start + n].view(p.shape)
            self.grad_views.append(self.flat_grads[start:start + n].view(p.shape))

    def forward(self, *args, **kwargs):
        self.buffer_sync.before_forward()  # see [Note: ps buffers]
        out = self.module(*args, **kwargs)
        self.buffer_sync.after_forward(self._sync)
        return out

    def gather_grads(self) -> bytes:
        """Gradients into the flat buffer (after zero_grad autograd allocates fresh ones); returns
        one byte per trainable parameter: 1 if it has a gradient (None counts as zero and 0)."""
        has = bytearray(len(self.trainable))
        for i, (p, view) in enumerate(zip(self.trainable, self.grad_views)):
            if p.grad is None:
                view.zero_()
            else:
                has[i] = 1
                if p.grad.data_ptr() != view.data_ptr():
                    view.copy_(p.grad)
                    p.grad = view
        return bytes(has)

    def state(self, optimizer) -> WorkerState:
        return WorkerState(self, optimizer)

    def updates_applied(self) -> int:
        return min(self.client.versions)

    def finish(self):
        return self.client.finish()


class WorkerState:
    """A worker's view of the training state (its `ShardedState`): it holds a replica, but the
    parameters and optimizer state to save live on the servers, which write and read their own
    files (see ps/checkpoint.py); worker 0 asks them to."""

    def __init__(self, model: WorkerModule, optimizer):
        self.model, self.optimizer = model, optimizer

    def tensors(self):
        yield self.model.flat_params
        yield self.model.flat_grads
        yield from optimizer_tensors(self.optimizer)

    def shapes(self) -> dict[str, tuple]:
        return {name: tuple(p.shape) for name, p in self.model.module.named_parameters() if p.requires_grad}

    def pieces(self, rank: int, world_size: int) -> list:
        return []

    def load(self, params: dict[str, torch.Tensor], optim: dict[str, dict]) -> None:
        by_name = dict(self.model.module.named_parameters())
        with torch.no_grad():
            for name, value in params.items():
                by_name[name].copy_(value)

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def save_elsewhere(self, folder: str) -> dict[str, str]:
        return self.model.client.save(folder) if self.model.client.worker_index == 0 else {}

    def load_elsewhere(self, path: str) -> None:
        """The servers take their ranges; then every worker pulls afresh."""
        client = self.model.client
        if client.worker_index == 0:
            client.load(path)
        comm.barrier()
        client.join()


class WorkerClientMixin:
    """Mixed into the user's optimizer class: step() pushes to and pulls from the servers."""

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._shardwise_client.push_and_pull([group_options(g) for g in self.param_groups])
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Also drops clip requests not yet sent: they were about the gradients discarded here."""
        client = getattr(self, "_shardwise_client", None)
        if client is not None:
            client.requests.clear()
        super().zero_grad(set_to_none)

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        """Clip by the global norm of the gradient the servers apply (sync: the average over
        workers, computed by the servers at the step; the returned tensor holds it once step()
        has returned); async/ssp: this worker's own gradient, clipped here. See [Note: ps clipping]."""
        return self._shardwise_client.clip_grad_norm_(max_norm, norm_type)

    def finish(self) -> list[dict] | None:
        """Tell the servers this worker is done; worker 0 returns the servers' statistics."""
        return self._shardwise_client.finish()

    def updates_applied(self) -> int:
        """Updates the servers had applied at this worker's last pull (async: pushes by anyone)."""
        return min(self._shardwise_client.versions)


class WorkerDropped(ShardwiseError):
    """An async/ssp worker the servers stopped waiting for (it was silent past dead_after_s)."""


class Client:
    def __init__(self, model: WorkerModule, ranges: list[tuple[int, int]], worker_rank: int, worker_index: int,
                 sync: bool = False):
        self.model, self.ranges = model, ranges
        self.worker_rank, self.worker_index = worker_rank, worker_index
        self.sync = sync
        self.versions = [0] * len(ranges)
        self.steps = 0
        self.clock = 0
        self.finished = False
        self.stats = None
        self.requests: list[clip.ClipRequest] = []  # sync: clips asked for since the last step
        self.norms: list[float] = []  # the servers' answers to them
        if sync:
            clip.register(self)

    def join(self) -> None:
        """Pull every range; server 0 first, whose answer carries this worker's clock for the rest."""
        protocol.send_header(0, protocol.JOIN, self.worker_rank, -1)
        self._pull([0])
        for server in range(1, len(self.ranges)):
            protocol.send_header(server, protocol.JOIN, self.worker_rank, self.clock)
        self._pull(range(1, len(self.ranges)))

    # --- clipping (see [Note: ps clipping]) ----------------------------------------------------

    def request_norm(self, norm_type: float) -> torch.Tensor:
        request = clip.ClipRequest(norm_type, torch.full((), float("nan")))
        self.requests.append(request)
        return request.result

    def pending_request(self, result: torch.Tensor):
        return next((r for r in self.requests if r.result is result), None)

    def request_clip(self, request: clip.ClipRequest, max_norm, params: list[torch.Tensor]) -> None:
        index = {id(p): i for i, p in enumerate(self.model.trainable)}
        selected = sorted({index[id(p)] for p in params if id(p) in index})
        request.max_norm = float(max_norm)
        request.selected = None if len(selected) == len(self.model.trainable) else selected

    def clip_grad_norm_(self, max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        if not self.sync:  # async/ssp: this worker's gradient is the one applied
            grads = [p.grad for p in self.model.trainable if p.grad is not None]
            total = clip._original_total_norm(grads, norm_type)
            clip._original_clip_with_norm(self.model.trainable, max_norm, total)
            return total
        request = clip.ClipRequest(norm_type, torch.full((), float("nan")))
        request.max_norm = float(max_norm)
        self.requests.append(request)
        return request.result

    # --- push and pull -------------------------------------------------------------------------

    def push_and_pull(self, options: list[dict]) -> None:
        has_grad = self.model.gather_grads()
        requests, self.requests = self.requests, []
        meta = {"groups": options, "has_grad": has_grad, "clip": [r.wire() for r in requests]}
        for server, (lo, hi) in enumerate(self.ranges):
            protocol.send_header(server, protocol.PUSH, self.worker_rank, self.steps, self.versions[server], hi - lo)
            comm.send(self.model.flat_grads[lo:hi], server)
            protocol.send_object(server, meta)
        self._pull()
        for request, norm in zip(requests, self.norms):
            request.result.fill_(norm)
        self.steps += 1

    def _pull(self, servers=None) -> None:
        for server in range(len(self.ranges)) if servers is None else servers:
            lo, hi = self.ranges[server]
            _, fields = protocol.recv_header(server)
            if fields[0] == protocol.DROPPED:
                raise WorkerDropped(f"worker rank {self.worker_rank} was dropped by the parameter servers: no heartbeat "
                                    f"reached them for {self.model.config.dead_after_s:g} s; the job went on without it "
                                    "(raise ParameterServer(dead_after_s=...) if workers may pause that long)")
            comm.recv(self.model.flat_params[lo:hi], server)
            if fields[5]:  # the norms of this step's clip requests (every server sends the same)
                norms = torch.empty(fields[5], dtype=torch.float64)
                comm.recv(norms, server)
                self.norms = norms.tolist()
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
        """DONE to every server, once (an explicit `optimizer.finish()` and the shutdown hook
        may both call it), while the process group still exists (see [Note: shutdown hook])."""
        if not self.finished and dist.is_initialized():
            self.finished = True
            for server in range(len(self.ranges)):
                protocol.send_header(server, protocol.DONE, self.worker_rank)
                protocol.recv_header(server)  # STATS, or DROPPED: either way this worker is finished
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
