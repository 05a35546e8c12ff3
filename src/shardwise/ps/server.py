"""A server rank: holds one key range of the parameters and runs the user's optimizer on it.

[Note: parameter-server rounds]
sync: the server waits until every live worker has pushed its gradient for the round, averages
them, steps, and answers every pull with the new range: the same update as DDP. async: each
push is applied at once, as one optimizer step on that worker's gradient, and answered at once.
ssp: as async, but the answer to a worker more than `staleness` pushes ahead of the slowest
live worker is held back until the slowest catches up (staleness 0: lockstep). In async and
ssp a worker whose heartbeat stops is dropped and the others go on. The staleness of an applied
gradient is how many updates the range received since the worker last pulled it.

A worker counts towards "the slowest" from its JOIN on. In async and ssp a worker may join late
(its wrap waits for no other worker): it pulls the range as it is then, and under ssp its clock
starts at the slowest joined worker's, so it neither held the others back before it came nor
makes them wait while it replays the steps it missed.

A push carries, besides the gradient of the server's range: every parameter group's options as
the worker's optimizer holds them at that step (an lr schedule, weight decay, betas set between
steps apply here, as they would to a local optimizer), one flag per parameter saying whether it
got a gradient, and the step's clip requests (see [Note: ps clipping]). A parameter with no
gradient keeps `.grad = None` for the server's step, so the optimizer skips it (no weight decay,
no momentum), as PyTorch's optimizers skip a local one; in sync mode one that some workers used
averages as zero for the others, as DDP with find_unused_parameters=True (a parameter server
never raises on unused parameters).
"""

from __future__ import annotations

import collections
import queue
import threading
import time

import torch
from torch import nn

from .. import comm
from ..runtime import progress
from ..flat.ranges import parts_in_range
from ..strategy.optim_rebuild import optimizer_over_pieces, piece_parameter
from . import protocol
from .checkpoint import load_server_shard, save_server_shard
from .clip import server_clip


class Server:
    def __init__(self, config, optimizer, params: list[nn.Parameter], lo: int, hi: int, workers: list[int], heartbeats,
                 names: list[str] | None = None, server_group=None):
        self.config, self.workers, self.heartbeats = config, workers, heartbeats
        self.server_group = server_group  # sync, several servers: the clip norm's all-reduce
        self.pieces: list[tuple[nn.Parameter, str, int, int, tuple]] = []  # piece, name, start, end, shape
        self.piece_params: list[tuple[nn.Parameter, int, torch.Tensor]] = []  # piece, parameter index, grad view
        self.numel = hi - lo
        flat = torch.cat([p.detach().reshape(-1).float() for p in params])
        self.values = flat[lo:hi].clone()  # 1D fp32: this server's key range
        self.grads = torch.zeros_like(self.values)
        owned: dict[int, list] = collections.defaultdict(list)
        for index, a, b, at in parts_in_range([p.numel() for p in params], lo, hi):
            piece = piece_parameter(self.values[at:at + b - a], self.grads[at:at + b - a])
            self.piece_params.append((piece, index, piece.grad))
            owned[id(params[index])].append(piece)
            name = names[index] if names else str(index)
            self.pieces.append((piece, name, a, b, tuple(params[index].shape)))
        self.optimizer = optimizer_over_pieces(optimizer, owned)
        self.version = 0
        self.clock = dict.fromkeys(workers, 0)
        self.seen_version = dict.fromkeys(workers, 0)
        self.live, self.done, self.dropped = set(workers), set(), []
        self.joined: set[int] = set()
        self.pending: dict[int, torch.Tensor] = {}  # sync: gradients of this round, by worker
        self.held: list[int] = []  # ssp: workers whose answer waits for the slowest
        self.staleness = collections.Counter()
        self.pushes = self.pulls = 0
        self.norms: list[float] = []  # sync: the last round's clip norms, sent with its answers

    # --- the loop ---------------------------------------------------------------------------

    def serve(self) -> dict:
        """Handle messages until every worker is done or dropped.

        A receiver thread blocks on "a header from any worker" and reads the message whole, so
        that this loop can notice a silent (dead) worker between messages.
        """
        started = time.monotonic()
        comm.reset_comm_stats()
        inbox: queue.Queue = queue.Queue()
        receiver = threading.Thread(target=self._receive, args=(inbox,), name="shardwise-ps-receiver", daemon=True)
        receiver.start()
        checked = time.monotonic()
        while self.live - self.done:
            if time.monotonic() - checked >= 0.05:  # also while other workers keep the inbox busy
                self._check_heartbeats()
                checked = time.monotonic()
            try:
                worker, fields, payload = inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(fields, BaseException):
                receiver = self._after_receiver_error(fields, inbox)
                continue
            self._handle(worker, fields, payload)
        receiver.join(timeout=1.0)  # it ends right after the last DONE it queued; give it the moment
        if receiver.is_alive():
            progress.keep_group_at_exit()  # the receiver still waits on a dropped worker's socket
        elapsed = max(time.monotonic() - started, 1e-9)
        return {"pushes": self.pushes, "pulls": self.pulls, "pushes_per_s": self.pushes / elapsed,
                "pulls_per_s": self.pulls / elapsed, "bytes": comm.comm_stats()["total"], "seconds": elapsed,
                "staleness_histogram": dict(sorted(self.staleness.items())), "dropped_workers": self.dropped,
                "version": self.version}

    def _receive(self, inbox: queue.Queue) -> None:
        """Receiver thread: whole messages (header and payload) into `inbox`, until all are done."""
        expected_done = len(self.workers)
        try:
            while expected_done:
                worker, fields = protocol.recv_header()
                payload = None
                if fields[0] == protocol.PUSH:
                    grad = torch.empty(self.numel)
                    comm.recv(grad, worker)
                    payload = (grad, protocol.recv_object(worker))
                elif fields[0] == protocol.DONE:
                    expected_done -= 1
                elif fields[0] in (protocol.SAVE, protocol.LOAD):
                    payload = protocol.recv_object(worker)
                inbox.put((worker, fields, payload))
        except BaseException as exc:  # the main loop decides: a dropped worker's connection, or an error
            inbox.put((None, exc, None))

    def _after_receiver_error(self, error: BaseException, inbox: queue.Queue) -> threading.Thread:
        """async/ssp: a worker that died may break the receiver's wait; once the heartbeats have
        dropped it, receive again from the others. Anything else (and any error in sync mode,
        where every worker matters) ends the server with that error instead of leaving it deaf."""
        if self.config.mode == "sync" or self.heartbeats is None:
            raise error
        live_before = set(self.live)
        deadline = time.monotonic() + 2 * self.config.dead_after_s + 1
        while time.monotonic() < deadline and self.live == live_before:
            self._check_heartbeats()
            time.sleep(0.05)
        if self.live == live_before:
            raise RuntimeError(f"parameter server: receiving from workers failed and no worker "
                               f"was found dead: {type(error).__name__}: {error}") from error
        receiver = threading.Thread(target=self._receive, args=(inbox,), name="shardwise-ps-receiver", daemon=True)
        receiver.start()
        return receiver

    def _handle(self, worker: int, fields: list[int], payload) -> None:
        kind = fields[0]
        if worker not in self.live:  # a dropped worker, alive after all: tell it, so it does not wait
            if kind in (protocol.JOIN, protocol.PUSH, protocol.DONE):
                protocol.send_header(worker, protocol.DROPPED, 0, 0, self.version)
            return
        if kind == protocol.JOIN:
            if self.config.mode != "sync" and worker not in self.joined:  # (a repeat JOIN keeps it)
                # Server 0 picks the clock; the worker brings it to the other servers, so that
                # every server counts the same clock for it.
                chosen = fields[2]
                self.clock[worker] = chosen if chosen >= 0 else min((self.clock[w] for w in self._active()), default=0)
            self.joined.add(worker)
            self._answer(worker)
        elif kind == protocol.PUSH:
            grad, meta = payload
            for group, options in zip(self.optimizer.param_groups, meta["groups"]):
                group.update(options)
            self.pushes += 1
            self.clock[worker] += 1
            if self.config.mode == "sync":
                self.pending[worker] = payload
                self._maybe_finish_round()
            else:
                self.staleness[self.version - fields[3]] += 1
                self._apply([payload])
                self.held.append(worker)
                self._release_held()
        elif kind == protocol.SAVE:
            protocol.send_object(worker, save_server_shard(self, payload))
        elif kind == protocol.LOAD:
            load_server_shard(self, payload)
            protocol.send_object(worker, True)
        elif kind == protocol.DONE:
            self.done.add(worker)
            self._after_membership_change()
            protocol.send_header(worker, protocol.STATS)  # acknowledgement; stats go to the store at the end

    def _apply(self, pushes: list[tuple[torch.Tensor, dict]]) -> None:
        """One optimizer step on the average of `pushes` (gradient, meta); parameters no push
        had a gradient for are skipped; sync: the step's clip requests first."""
        self.grads.copy_(pushes[0][0])
        for grad, _ in pushes[1:]:
            self.grads.add_(grad)
        if len(pushes) > 1:
            self.grads.div_(len(pushes))
        used = bytes(max(flags) for flags in zip(*(meta["has_grad"] for _, meta in pushes)))
        if self.config.mode == "sync":
            requests = next((meta["clip"] for _, meta in pushes if meta["clip"]), [])
            self.norms = [self._clip(request, used) for request in requests]
        for piece, index, view in self.piece_params:
            piece.grad = view if used[index] else None
        try:
            self.optimizer.step()
        finally:
            for piece, _, view in self.piece_params:
                piece.grad = view
        self.version += 1

    def _clip(self, request: tuple, used: bytes) -> float:
        max_norm, norm_type, selected = request
        chosen = None if selected is None else set(selected)
        grads = [view for _, index, view in self.piece_params if used[index] and (chosen is None or index in chosen)]
        return server_clip(grads, max_norm, norm_type, self.server_group)

    def _answer(self, worker: int) -> None:
        norms = self.norms if self.config.mode == "sync" else []
        protocol.send_header(worker, protocol.PARAMS, 0, self.clock[worker], self.version, self.numel, len(norms))
        comm.send(self.values, worker)
        if norms:
            comm.send(torch.tensor(norms, dtype=torch.float64), worker)
        self.seen_version[worker] = self.version
        self.pulls += 1

    def _maybe_finish_round(self) -> None:
        waiting_for = self.live - self.done
        if self.pending and set(self.pending) >= waiting_for:
            self._apply([self.pending[w] for w in sorted(self.pending)])
            for worker in sorted(self.pending):
                self._answer(worker)
            self.pending.clear()
            self.norms = []

    def _release_held(self) -> None:
        """ssp: answer every held worker within `staleness` of the slowest live one (async: all)."""
        active = self._active()
        slowest = min((self.clock[w] for w in active), default=0)
        limit = self.config.staleness if self.config.mode == "ssp" else None
        still = []
        for worker in self.held:
            if limit is None or worker not in active or self.clock[worker] - slowest <= limit:
                if worker in self.live:
                    self._answer(worker)
            else:
                still.append(worker)
        self.held = still

    def _active(self) -> set[int]:
        """Workers that have joined and are neither done nor dropped."""
        return (self.live & self.joined) - self.done

    def _after_membership_change(self) -> None:
        if self.config.mode == "sync":
            self._maybe_finish_round()
        else:
            self._release_held()

    def _check_heartbeats(self) -> None:
        if self.config.mode == "sync" or self.heartbeats is None:
            return
        for worker in sorted(self.live - self.done):
            if not self.heartbeats.alive(worker):
                self.live.discard(worker)
                self.dropped.append(worker)
                self.held = [w for w in self.held if w != worker]
                self._after_membership_change()
