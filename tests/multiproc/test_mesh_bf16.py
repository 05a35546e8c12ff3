"""Pipeline and tensor parallelism under bf16 autocast compute what one process computes under
it on the same micro-batches.

A pipeline runs each micro-batch's forward and backward as one process does, so its parameters
match to fp32 rounding. Tensor parallelism sums row-parallel partial products in bf16 (as
Megatron-LM and DTensor do under autocast), where one process rounds the whole product once:
its losses match to bf16 rounding, and its parameters are then as far from one process's as
bf16 is from fp32 under Adam (an update of about lr per entry whatever the gradient's size), so
only the losses are compared there, with the bytes that show the bf16 sums."""

import pytest
import torch

import shardwise as sw
from shardwise.runtime import launch
from shardwise.testing.parity import Run, run_reference
from shardwise.testing.pipeline_parity import batch_pieces, run_all


def _runs(specs):
    return [Run(case, strategy, steps=4, precision="bf16") for case, strategy in specs]


def _check(runs, world_size):
    per_rank = launch(run_all, world_size, args=(runs,), timeout_s=300)
    for index, run in enumerate(runs):
        pieces = batch_pieces(run.strategy)
        reference = run_reference(run, pieces=pieces)
        fp32 = run_reference(Run(run.case, run.strategy, steps=run.steps), pieces=pieces)
        assert reference["losses"] != fp32["losses"], "bf16 autocast changed nothing in the reference"
        for rank, results in enumerate(per_rank):
            got = results[index]
            assert got["losses"] == pytest.approx(reference["losses"], rel=1e-4), (run.label(), rank)
            if run.strategy.tp > 1:
                continue
            for key, expected in reference["state"].items():
                assert torch.allclose(got["state"][key], expected, rtol=1e-4, atol=5e-5), (run.label(), rank, key)
            gap = max(abs(a - b) for a, b in zip(got["losses"], reference["losses"]))
            gap_fp32 = max(abs(a - b) for a, b in zip(got["losses"], fp32["losses"]))
            assert gap < gap_fp32, (run.label(), rank, gap, gap_fp32)  # computed in bf16, not fp32


def _pipeline(schedule, microbatches=4):
    return sw.Pipeline(stages=2, microbatches=microbatches, schedule=schedule)


@pytest.mark.timeout(300)
def test_two_rank_pipeline_and_tensor_parallel_under_bf16():
    specs = [(case, sw.Mesh(pp=2, pipeline=_pipeline(schedule)))
             for case in ("gpt_tied", "gpt_deep") for schedule in ("1f1b", "zb-h1")]
    specs += [("gpt_tied", sw.Mesh(tp=2, tensor=sw.TensorParallel(2))),
              ("gpt_deep", sw.Mesh(tp=2, tensor=sw.TensorParallel(2, vocab=True))),
              ("gpt_tied", sw.Mesh(tp=2, tensor=sw.TensorParallel(2, vocab=True, split_logits=True)))]
    _check(_runs(specs), 2)


def _tensor_parallel_bytes() -> dict:
    from shardwise import comm
    from shardwise.models import GPT, GPTConfig
    from shardwise.tensor_parallel import vocab_parallel_cross_entropy

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16))
    strategy = sw.TensorParallel(size=2, vocab=True, split_logits=True)
    model, _ = sw.wrap(model, torch.optim.SGD(model.parameters(), lr=0.1), strategy=strategy)
    ids = torch.randint(17, (4, 9), generator=torch.Generator().manual_seed(1))
    measured = {}
    for precision in ("fp32", "bf16"):
        comm.reset_comm_stats()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            model.train_step(ids[:, :-1], ids[:, 1:],
                             lambda logits, y: vocab_parallel_cross_entropy(logits.float(), y, model.tp_group).mean())
        measured[precision] = comm.comm_stats()["total"]
    return measured


@pytest.mark.timeout(60)
def test_tensor_parallel_sends_bf16_sums_under_autocast_as_planned():
    from shardwise.plan.model_parallel import model_parallel_row
    from shardwise.plan.model_spec import from_shape

    shape = from_shape(layers=2, hidden=16, heads=2, vocab=17, seq_len=8)
    planned = {p: model_parallel_row(shape, 2, pp=1, tp=2, microbatches=1, schedule="1f1b", precision=p,
                                     micro_batch=4, vocab_parallel=True)["tp_bytes_per_step"] for p in ("fp32", "bf16")}
    measured = sw.launch(_tensor_parallel_bytes, 2, timeout_s=50)
    assert measured == [planned] * 2
    # per layer, the forward's two row-parallel sums of 4 x 8 x 16 values in 2 bytes instead of 4
    assert planned["fp32"] - planned["bf16"] == 2 * 2 * 4 * 8 * 16 * 2


@pytest.mark.timeout(300)
def test_four_rank_meshes_under_bf16():
    specs = [("gpt_deep", sw.Mesh(dp=2, pp=2, dp_strategy="zero1", pipeline=_pipeline("gpipe", 2))),
             ("gpt_deep", sw.Mesh(pp=2, tp=2, pipeline=_pipeline("interleaved-1f1b"), tensor=sw.TensorParallel(2)))]
    _check(_runs(specs), 4)
