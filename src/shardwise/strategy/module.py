"""The wrapper shape data-parallel strategies share: forward delegates, no_sync() pauses sync."""

from __future__ import annotations

import contextlib

from torch import nn


class SyncingWrapper(nn.Module):
    """Wraps `module`; `self._sync` says whether this backward communicates."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self._sync = True

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Accumulate gradients locally, without communication; the next backward outside syncs."""
        previous, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = previous
