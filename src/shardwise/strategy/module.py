"""The wrapped model every strategy returns, and the sharded state behind it.

[Note: wrapper interface]
Every wrapped model is a `StrategyModule` and answers the calls a PyTorch DDP script makes:
- `require_backward_grad_sync` (PyTorch DDP's attribute; nanoGPT sets it per micro-step): False
  means the next backward accumulates locally without communication, as inside `no_sync()`;
- `no_sync()`: a context manager that sets it to False for its duration;
- `gathered()`: a context manager in which the inner module holds its full parameters on every
  rank (a collective where parameters are sharded; nothing to do elsewhere);
- `full_state_dict()`: full parameters and buffers keyed as the inner module's state_dict;
and what shardwise itself asks (see [Note: strategy interface]):
- `state(optimizer)`: the `ShardedState` that counts this rank's model-state bytes and saves
  and loads the pieces this rank owns, keyed by parameter name and element range;
- `skipped_steps_in_a_row()`, `updates_applied()`, `finish()`, `buffer_bytes()`: what a
  training job reports (fp16 overflow skips, an asynchronous server's update count, servers'
  statistics at the end, reused communication buffers).
A module that was never wrapped is treated as replicated (`state_of`).
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterable, Protocol

import torch
from torch import nn

from .pieces import SavedPiece, even_pieces, load_replicated


class ShardedState(Protocol):
    """What this rank holds of the training state, for counting, saving and loading."""

    def tensors(self) -> Iterable[torch.Tensor]:
        """Every tensor of parameters, gradients and optimizer state this rank holds (each
        storage counted once by the caller), including buffers the module does not show."""

    def shapes(self) -> dict[str, tuple]:
        """Trainable parameters by name, with the shapes the user gave them."""

    def pieces(self, rank: int, world_size: int) -> list[SavedPiece]:
        """The pieces this rank saves: element ranges of flattened parameters with their
        optimizer state; over all ranks they cover every element."""

    def load(self, params: dict[str, torch.Tensor], optim: dict[str, dict]) -> None:
        """Take this rank's part of full parameters and full optimizer state, by name."""

    def extra_state(self) -> dict[str, torch.Tensor]:
        """State of the strategy itself, beside parameters and optimizer (error-feedback residuals,
        an outer optimizer's momentum), as full tensors by key; every rank calls it (it may be a
        collective) and rank 0's is saved."""

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        """Take back what `extra_state` saved; keys this strategy does not know are ignored (a
        checkpoint of another strategy)."""

    def save_elsewhere(self, folder: str) -> dict[str, str]:
        """Files other processes write into a save (a parameter server's servers): name -> SHA-256."""

    def load_elsewhere(self, path: str) -> None:
        """Have those processes load the checkpoint at `path`; every training rank calls it."""


class ReplicatedState:
    """The state of a replicated model: every rank holds everything; each saves an even part."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, own: Iterable[torch.Tensor] = (),
                 wrapper: StrategyModule | None = None):
        self.module, self.optimizer, self.own, self.wrapper = module, optimizer, list(own), wrapper

    def tensors(self):
        yield from held_tensors(self.module.parameters(), self.own, self.optimizer)

    def shapes(self) -> dict[str, tuple]:
        return {name: tuple(p.shape) for name, p in self.module.named_parameters() if p.requires_grad}

    def pieces(self, rank: int, world_size: int) -> list[SavedPiece]:
        return even_pieces(self.module, self.optimizer, rank, world_size)

    def load(self, params: dict[str, torch.Tensor], optim: dict[str, dict]) -> None:
        load_replicated(self.module, self.optimizer, params, optim)

    def extra_state(self) -> dict[str, torch.Tensor]:
        return self.wrapper.extra_state() if self.wrapper is not None else {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.wrapper is not None:
            self.wrapper.load_extra_state(state)

    def save_elsewhere(self, folder: str) -> dict[str, str]:
        return {}

    def load_elsewhere(self, path: str) -> None:
        pass


class PieceView(torch.Tensor):
    """Base of a tensor that stands for pieces of flat buffers and holds no storage of its own
    (ZeRO's `.grad` views); memory accounting counts the pieces `local_tensors()` lists."""

    def local_tensors(self) -> list[torch.Tensor]:
        raise NotImplementedError


def held_tensors(params, own, optimizer):
    """Parameters, their gradients, a strategy's own buffers and the optimizer's state tensors."""
    for p in params:
        yield p
        if p.grad is not None:
            yield p.grad
    yield from own
    yield from optimizer_tensors(optimizer)


def optimizer_tensors(optimizer):
    for per_param in optimizer.state.values():
        for value in per_param.values():
            if torch.is_tensor(value) and value.numel() > 0 and value.untyped_storage().nbytes() > 0:
                yield value


class StrategyModule(nn.Module):
    """Base of every wrapped model: holds `module`, forwards to it, and keeps the sync switch."""

    strategy_name = "none"

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self._sync = True

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    # --- gradient synchronisation ------------------------------------------------------------

    @property
    def require_backward_grad_sync(self) -> bool:
        return self._sync

    @require_backward_grad_sync.setter
    def require_backward_grad_sync(self, value: bool) -> None:
        self._sync = bool(value)
        self.sync_changed(self._sync)

    def sync_changed(self, sync: bool) -> None:
        """Called when `require_backward_grad_sync` is set; a strategy that keeps the switch
        elsewhere (ZeRO's engine) follows it here."""

    @contextlib.contextmanager
    def no_sync(self):
        """Accumulate gradients locally, without communication; the next backward outside syncs."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    # --- full parameters and state -----------------------------------------------------------

    @contextlib.contextmanager
    def gathered(self):
        """Full parameters on every rank for the duration (already so for replicated strategies)."""
        yield self.module

    def full_state_dict(self) -> dict:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def state(self, optimizer: torch.optim.Optimizer) -> ShardedState:
        return ReplicatedState(self.module, optimizer, self.own_tensors(), self)

    def extra_state(self) -> dict[str, torch.Tensor]:
        """The strategy's own state to save (see `ShardedState.extra_state`); none by default."""
        return {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def own_tensors(self) -> Iterable[torch.Tensor]:
        """Model-state tensors the wrapper keeps besides parameters and `.grad` (flat buffers)."""
        return ()

    # --- what a training job reports ---------------------------------------------------------

    def skipped_steps_in_a_row(self) -> int:
        """Optimizer steps skipped in a row by a loss scaler (fp16 overflow); 0 without one."""
        return 0

    def updates_applied(self) -> int:
        """Updates the shared parameters had received at this rank's last pull (asynchronous
        strategies, whose workers share a budget of updates); synchronous ones count none."""
        return 0

    def finish(self):
        """End of training on this rank; what other processes of the strategy report, or None."""
        return None

    def buffer_bytes(self) -> int:
        """Reusable communication buffers this rank keeps (counted as "other" memory)."""
        return 0


def uncompiled(model: nn.Module) -> nn.Module:
    """The module `torch.compile(module)` was given (the model itself if it is not compiled)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # nothing is compiled before it loads
    while eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
        model = model._orig_mod
    return model


def strategy_module(model: nn.Module) -> StrategyModule | None:
    """The strategy's wrapper of a wrapped model (also under `torch.compile`), or None."""
    model = uncompiled(model)
    return model if isinstance(model, StrategyModule) else None


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside any strategy wrappers (and torch.compile)."""
    model = uncompiled(model)
    while isinstance(model, StrategyModule):
        model = uncompiled(model.module)
    return model


def state_of(model: nn.Module, optimizer: torch.optim.Optimizer) -> ShardedState:
    """The sharded state behind a wrapped model; a plain module's is replicated."""
    wrapped = strategy_module(model)
    return wrapped.state(optimizer) if wrapped is not None else ReplicatedState(unwrap(model), optimizer)
