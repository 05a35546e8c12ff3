"""ZeRO++-style int8 communication: gradients reduce-scattered and stage-3 parameters gathered
as int8 blocks train close to the exact run, with replicas equal, masters exact, and about a
quarter of the bytes."""

import pytest
import torch

import shardwise as sw
from shardwise.testing.slices import train_slices


def _train(strategies: dict, steps: int) -> dict:
    out = {}
    for name, strategy in strategies.items():
        sw.reset_comm_stats()
        model, _, start = train_slices("frozen_sgd", strategy, steps)
        stats = sw.comm_stats()
        out[name] = {"state": sw.full_state_dict(model), "start": start, "stats": stats}
    return out


@pytest.mark.timeout(180)
@pytest.mark.parametrize("world", [2, 3])
def test_quantized_zero_trains_close_with_fewer_bytes(world):
    strategies = {"zero2": sw.ZeRO(stage=2), "zero2_q": sw.ZeRO(stage=2, quantized_gradients=True),
                  "zero3": sw.ZeRO(stage=3, min_unit_mb=0),
                  "zero3_q": sw.ZeRO(stage=3, quantized_gradients=True, quantized_weights=True, min_unit_mb=0)}
    results = sw.launch(_train, world, args=(strategies, 6))
    ours = results[0]
    for other in results[1:]:  # everyone holds the same full parameters
        for name in strategies:
            assert all(torch.equal(other[name]["state"][k], v) for k, v in ours[name]["state"].items()), name
    for exact, quantized in (("zero2", "zero2_q"), ("zero3", "zero3_q")):
        a, b = ours[exact], ours[quantized]
        moved = max((a["state"][k] - a["start"][k]).abs().max().item() for k in a["start"])
        diff = max((b["state"][k] - a["state"][k]).abs().max().item() for k in a["start"])
        assert diff <= 0.05 * moved, (quantized, diff, moved)
        assert b["stats"]["reduce_scatter"] < a["stats"]["reduce_scatter"] / 3
    assert ours["zero3_q"]["stats"]["all_gather"] < ours["zero3"]["stats"]["all_gather"] / 1.5  # parameters quantized, not the step's refresh


def test_quantized_weights_need_stage_3():
    with pytest.raises(sw.ConfigError, match="stage 3"):
        sw.ZeRO(stage=2, quantized_weights=True)
