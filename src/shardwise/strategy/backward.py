"""What every strategy that communicates in backward does at its end: a callback queued once,
and the error for a parameter that received no gradient."""

from __future__ import annotations

import torch

from ..errors import ConfigError


class EndOfBackward:
    """Runs `callback` once at the end of the backward pass in which `arm()` is first called
    (autograd's queued callback, as PyTorch DDP's reducer uses)."""

    def __init__(self, callback):
        self.callback = callback
        self.queued = False

    def arm(self) -> None:
        if not self.queued:
            torch.autograd.Variable._execution_engine.queue_callback(self._run)
            self.queued = True

    def _run(self) -> None:
        self.queued = False
        self.callback()


def missing_gradient_error(names: list[str]) -> ConfigError:
    """One line naming the parameters (the first three) that took no part in the loss, and the fixes."""
    shown = ", ".join(repr(name) for name in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return ConfigError(f"parameter {shown}{more} received no gradient in this backward pass; every trainable "
                       "parameter must take part in the loss (or pass find_unused_parameters=True to sw.wrap, "
                       "or freeze it with requires_grad_(False))")
