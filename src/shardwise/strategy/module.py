"""The wrapper shape data-parallel strategies share: forward delegates, no_sync() pauses sync.

[Note: wrapper interface]
Every wrapped model a strategy returns answers the same calls a PyTorch DDP script makes:
- `require_backward_grad_sync` (PyTorch DDP's attribute; nanoGPT sets it per micro-step): False
  means the next backward accumulates locally without communication, as inside `no_sync()`.
- `no_sync()`: a context manager that sets it to False for its duration.
- `gathered()`: a context manager in which the inner module holds its full parameters on every
  rank (a collective where parameters are sharded; nothing to do elsewhere). `sw.gathered(model)`
  calls it.
"""

from __future__ import annotations

import contextlib

from torch import nn


class SyncControl:
    """`require_backward_grad_sync` and `no_sync()` over a wrapper's `_sync_flag` get/set pair."""

    def _get_sync(self) -> bool:
        raise NotImplementedError

    def _set_sync(self, value: bool) -> None:
        raise NotImplementedError

    @property
    def require_backward_grad_sync(self) -> bool:
        return self._get_sync()

    @require_backward_grad_sync.setter
    def require_backward_grad_sync(self, value: bool) -> None:
        self._set_sync(bool(value))

    @contextlib.contextmanager
    def no_sync(self):
        """Accumulate gradients locally, without communication; the next backward outside syncs."""
        previous = self._get_sync()
        self._set_sync(False)
        try:
            yield
        finally:
            self._set_sync(previous)

    @contextlib.contextmanager
    def gathered(self):
        """Full parameters on every rank for the duration (already so for replicated strategies)."""
        yield self.module


class SyncingWrapper(SyncControl, nn.Module):
    """Wraps `module`; `self._sync` says whether this backward communicates."""

    def __init__(self, module: nn.Module):
        nn.Module.__init__(self)
        self.module = module
        self._sync = True

    def _get_sync(self) -> bool:
        return self._sync

    def _set_sync(self, value: bool) -> None:
        self._sync = value

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
