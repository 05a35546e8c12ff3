"""Dynamic loss scaling for fp16 compute, as torch.amp.GradScaler does it (pure state machine).

Gradients are computed for `scale` times the loss so that small values survive fp16. If any
rank finds an inf or NaN after unscaling, every rank skips the step and halves the scale;
after `growth_interval` good steps in a row the scale doubles.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DynamicLossScaler:
    scale: float = 2.0 ** 16
    """Current factor on the loss."""
    growth_factor: float = 2.0
    """Multiplier after `growth_interval` good steps."""
    backoff_factor: float = 0.5
    """Multiplier after a step with inf/NaN gradients."""
    growth_interval: int = 2000
    """Good steps in a row before the scale grows."""
    good_steps: int = 0
    """Good steps since the last change."""
    skipped_steps: int = 0
    """Steps skipped so far for inf/NaN gradients."""
    skipped_in_a_row: int = 0
    """Steps skipped since the last good one (a run that never recovers shows here)."""

    def update(self, found_inf: bool) -> None:
        if found_inf:
            self.scale *= self.backoff_factor
            self.good_steps = 0
            self.skipped_steps += 1
            self.skipped_in_a_row += 1
            return
        self.skipped_in_a_row = 0
        self.good_steps += 1
        if self.good_steps >= self.growth_interval:
            self.scale *= self.growth_factor
            self.good_steps = 0
