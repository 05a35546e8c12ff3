"""The planner's pipeline and tensor-parallel predictions, checked against hand counts and the
schedule simulation."""

import pytest

from shardwise.errors import ConfigError
from shardwise.pipeline.schedules import make_schedule
from shardwise.pipeline.simulate import simulate
from shardwise.plan.model_parallel import model_parallel_row
from shardwise.plan.model_spec import from_shape


def test_tensor_parallel_bytes_are_four_all_reduces_per_layer():
    gpt = from_shape(layers=4, hidden=128, heads=4, vocab=96, seq_len=128)
    row = model_parallel_row(gpt, 2, pp=1, tp=2, microbatches=1, schedule="1f1b", precision="fp32", micro_batch=16)
    # the bytes shardwise's TensorParallel moves per step on the built-in GPT (benchmarks/tensor_parallel.py)
    assert row["tp_bytes_per_step"] == 4 * 4 * 16 * 128 * 128 * 4 == 16_777_216
    assert row["bubble"] == 0 and row["pp_bytes_per_step"] == 0
    split = model_parallel_row(gpt, 2, pp=1, tp=2, microbatches=1, schedule="1f1b", precision="fp32", micro_batch=16,
                               vocab_parallel=True)
    assert split["params_per_rank"] == row["params_per_rank"] - 96 * 128 / 2  # half the tied embedding's rows
    # the embedding's and the head's all-reduces, and the split cross-entropy's: 2048 row maxima and a
    # width from the other rank, 2 x 2048 values all-reduced (the logits, 96 a token, never move)
    assert split["tp_bytes_per_step"] == 16_777_216 + (2 * 16 * 128 * 128 + 2049 + 2 * 2048) * 4


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved-1f1b"])
def test_pipeline_memory_and_bubble_follow_the_schedule(schedule):
    gpt = from_shape(layers=32, hidden=4096, heads=32, vocab=50257, seq_len=2048)
    row = model_parallel_row(gpt, 16, pp=4, tp=2, microbatches=8, schedule=schedule)
    sim = simulate(make_schedule(schedule, 4, 8))
    assert row["bubble"] == pytest.approx(sim.bubble)
    assert row["stored_microbatches"] == pytest.approx(sim.peak_stored[0])
    assert row["dp"] == 2
    # the first stage: 8 layers, matrices halved, plus both embeddings
    assert row["params_per_rank"] == 8 * (12 * 4096 ** 2 / 2 + 13 * 4096) + 50257 * 4096 + 2048 * 4096


def test_zero_over_replicas_shrinks_optimizer_state():
    gpt = from_shape(layers=8, hidden=1024, heads=16, vocab=50257, seq_len=1024)
    ddp = model_parallel_row(gpt, 8, pp=2, tp=2, microbatches=4, schedule="1f1b")
    zero1 = model_parallel_row(gpt, 8, pp=2, tp=2, microbatches=4, schedule="1f1b", dp_strategy="zero1")
    assert zero1["optimizer_bytes"] == pytest.approx(ddp["optimizer_bytes"] / 2)


def test_refusals():
    gpt = from_shape(layers=4, hidden=128, heads=4, vocab=96, seq_len=128)
    with pytest.raises(ConfigError, match="--tp 2 or more"):
        model_parallel_row(gpt, 2, pp=2, tp=1, microbatches=2, schedule="1f1b", vocab_parallel=True)
    with pytest.raises(ConfigError):
        model_parallel_row(gpt, 6, pp=4, tp=1, microbatches=4, schedule="1f1b")
    with pytest.raises(ConfigError):
        model_parallel_row(gpt, 8, pp=8, tp=1, microbatches=8, schedule="1f1b")
