"""From per-rank measurements to one entry per configuration, predictions beside (made-up numbers)."""

import pytest

from shardwise.bench.summary import global_losses, predict, summarize_configs

PSI = 1000  # parameters
NAMES = ("torch_ddp", "zero2", "zero3")


def rank_measurements(rank: int, seconds: dict, losses: dict, diff: float = 0.0) -> dict:
    """What measure_on_rank returns, for N = 2, fp32 Adam, Ψ = 1000, with exact ZeRO numbers."""
    states = {
        "torch_ddp": {"params": 4000, "grads": 4000, "optimizer": 8000, "other": 0},
        "zero2": {"params": 4000, "grads": 2000, "optimizer": 4000, "other": 0},
        "zero3": {"params": 2000, "grads": 2000, "optimizer": 4000, "other": 3000},
    }
    for split in states.values():
        split["total"] = sum(split.values())
    step_bytes = {"zero2": 4000, "zero3": 6000}  # 2(N-1)/N·4Ψ and 3(N-1)/N·4Ψ
    comm = {name: [{"all_gather": b / 2, "reduce_scatter": b / 2, "send": 0, "total": b}] * 3
            for name, b in step_bytes.items()}
    return {
        "psi": PSI,
        "seconds": seconds,
        "phases": {name: {"forward": [0.001] * 3, "backward": [0.002] * 3, "step": [0.003] * 3} for name in NAMES},
        "losses": losses,
        "comm": comm,
        "model_states": states,
        "buffer_bytes": {"torch_ddp": 0, "zero2": 0, "zero3": 3000},
        "param_diff": {"torch_ddp": 0.0, "zero2": diff, "zero3": 0.0},
        "peak_rss_bytes": 10**9 + rank,
    }


@pytest.fixture
def per_rank():
    seconds0 = {"torch_ddp": [0.10, 0.10, 0.10], "zero2": [0.11, 0.30, 0.12], "zero3": [0.20, 0.20, 0.20]}
    seconds1 = {"torch_ddp": [0.10, 0.14, 0.10], "zero2": [0.13, 0.10, 0.12], "zero3": [0.20, 0.20, 0.20]}
    losses0 = {"torch_ddp": [2.0, 1.0], "zero2": [2.0, 1.0], "zero3": [2.0, 1.0 + 1e-3]}
    losses1 = {"torch_ddp": [4.0, 3.0], "zero2": [4.0, 3.0], "zero3": [4.0, 3.0]}
    return [rank_measurements(0, seconds0, losses0), rank_measurements(1, seconds1, losses1, diff=2e-5)]


def test_a_step_lasts_as_long_as_its_slowest_rank(per_rank):
    entries = summarize_configs(per_rank, NAMES, "torch_ddp")
    assert entries["zero2"]["seconds"] == [0.13, 0.30, 0.12]
    assert entries["zero2"]["median_ms"] == pytest.approx(130.0)
    assert entries["zero2"]["ratio_to_baseline"] == pytest.approx(1.3)
    assert entries["torch_ddp"]["iqr_ms"] == pytest.approx(20.0)  # quartiles of 100, 100, 140: 100 and 120
    assert entries["zero3"]["phase_median_ms"] == pytest.approx({"forward": 1.0, "backward": 2.0, "step": 3.0})


def test_loss_is_the_global_batch_mean_and_parity_checks_loss_and_parameters(per_rank):
    assert global_losses(per_rank, "torch_ddp") == [3.0, 2.0]
    entries = summarize_configs(per_rank, NAMES, "torch_ddp")
    assert entries["torch_ddp"]["parity"]
    assert entries["zero3"]["loss_abs_diff"] == pytest.approx(5e-4) and not entries["zero3"]["parity"]
    assert entries["zero2"]["max_abs_param_diff"] == 2e-5 and not entries["zero2"]["parity"]  # over 1e-5


def test_predictions_only_for_shardwise_and_measured_over_predicted(per_rank):
    entries = summarize_configs(per_rank, NAMES, "torch_ddp")
    assert entries["torch_ddp"]["predicted"] is None and "measured_over_predicted" not in entries["torch_ddp"]
    zero3 = entries["zero3"]
    assert zero3["predicted"] == {"params": 2000, "grads": 2000, "optimizer": 4000, "total": 8000,
                                  "comm_bytes_per_step": 6000}
    assert zero3["model_state_split"]["other"] == [3000, 3000]
    # stage 3's buffers are left out of the comparison: exactly the formula
    assert zero3["measured_over_predicted"] == pytest.approx(
        {"params": 1.0, "grads": 1.0, "optimizer": 1.0, "model_states": 1.0, "comm_bytes_per_step": 1.0})
    assert zero3["comm_bytes_per_step"] == [6000, 6000]
    assert zero3["comm_bytes_per_step_by_kind"] == {"all_gather": 3000, "reduce_scatter": 3000}
    assert entries["torch_ddp"]["comm_bytes_per_step"] is None


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_predict_is_the_planners_fp32_adam(world_size):
    zero1 = predict("zero1", PSI, world_size)
    assert zero1["total"] == 8 * PSI + 8 * PSI / world_size
    assert zero1["comm_bytes_per_step"] == 2 * (world_size - 1) / world_size * 4 * PSI
    assert predict("torch_fsdp2", PSI, world_size) is None
