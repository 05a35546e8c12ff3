"""Differential privacy for federated rounds (DP-FedAvg, McMahan et al., ICLR 2018).

[Note: DP-FedAvg]
Each returned client's update Δ_k is clipped to norm S (`dp_clip`) and the clients count
equally (weights 1, not n_k: a client's influence must be bounded). The coordinator divides the
sum by the expected number of clients m = ⌈C·K⌉ (a fixed denominator, unbiased) and adds
Gaussian noise of standard deviation z·S/m (`dp_noise` = z), then the server optimizer steps.
Each round is a sampled Gaussian mechanism at the client level: m of K clients drawn without
replacement, noise multiplier z. ε at δ after r rounds comes from Google's `dp_accounting` RDP
accountant (replace-one neighbours, as fixed-size sampling requires), reported per round. It
covers the clients' participation; the noise is drawn on the coordinator, which is trusted to
add it (with `--secure-agg`, it still sees only the sum).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


def clip_update(delta: torch.Tensor, clip: float) -> torch.Tensor:
    norm = float(delta.norm())
    return delta * min(1.0, clip / (norm + 1e-12))


def epsilon(rounds: int, clients: int, sampled: int, noise: float, delta: float) -> float:
    """ε after `rounds` rounds of sampling `sampled` of `clients` with noise multiplier `noise`."""
    try:
        import absl.logging
        import dp_accounting
        from dp_accounting import rdp
    except ImportError:
        raise ConfigError("--dp-noise needs the dp-accounting package: pip install dp-accounting") from None
    absl.logging.set_verbosity(absl.logging.ERROR)  # orders it cannot evaluate are skipped, not errors
    if noise <= 0:
        return math.inf
    accountant = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    event = dp_accounting.SampledWithoutReplacementDpEvent(clients, sampled, dp_accounting.GaussianDpEvent(noise))
    accountant.compose(event, rounds)
    return float(accountant.get_epsilon(delta))
