"""Parity (API.md): DDP at N = 1..4 trains to the single-process parameters on the same global batch."""

import pytest

from shardwise.testing.parity import Run, check_parity

CASES = ["mlp", "mlp_groups", "frozen_sgd", "gpt_tied"]
RUNS = [Run(case, strategy, accumulation) for case in CASES for strategy in ("ddp", "ddp-naive") for accumulation in (1, 2)]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_ddp_parity(world_size):
    assert check_parity(RUNS, world_size) == []


@pytest.mark.timeout(120)
def test_small_buckets_parity():
    """Many tiny buckets (one parameter each, mostly) exercise in-order launching."""
    import shardwise as sw

    runs = [Run("gpt_tied", sw.DDP(bucket_mb=0.001, first_bucket_mb=0.0005), 2)]
    assert check_parity(runs, 3) == []
