"""The compat scripts, and ZeRO parity, on CUDA with NCCL at world size = number of GPUs.

Not part of CPU CI: skipped when CUDA is absent. On a GPU machine: `python -m pytest -q -s tests/gpu`
(`-s` shows the step times). Each strategy (ddp, zero1, zero2, zero3, and ZeRO-3 with
offload="cpu") runs every compat script in one launch on every GPU; results are compared with
one process on cuda:0 (or with torch DDP on the same ranks) at the suite's tolerance. World size:
the number of GPUs, rounded down to 1, 2 or 4 (the global batch of 8 rows and nanoGPT's 4
micro-batches split evenly). TF32 is off: parity means fp32 arithmetic.
"""

import os
import sys
import time

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("CUDA is not available: GPU checks run only on a machine with a GPU", allow_module_level=True)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "compat"))

import compat_harness as harness  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False

GPUS = max(w for w in (1, 2, 4) if w <= torch.cuda.device_count())  # the global batch of 8 splits evenly
STRATEGIES = ["ddp", "zero1", "zero2", "zero3", "zero3-offload"]
SINGLE = ["reuse", "checkpointing", "compile_aot_eager", "nanogpt_compiled", "nanogpt"]
TORCH_DDP = ["bn_cnn", "bn_cnn_local_buffers", "two_heads_unused"]
try:
    import transformers  # noqa: F401
    SINGLE += ["hf_gpt2_lm", "hf_bert_classifier"]
except ImportError:
    pass


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    return {case: harness.reference(case, str(tmp_path_factory.mktemp(case)), device="cuda") for case in SINGLE}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_compat_scripts_on_cuda(strategy, references, tmp_path):
    started = time.perf_counter()
    results = harness.launch_cases(strategy, SINGLE + TORCH_DDP, str(tmp_path), workers=GPUS, device="cuda",
                                   timeout_s=800)
    print(f"\n{strategy} on {GPUS} GPU(s): all compat scripts in {time.perf_counter() - started:.1f}s")
    problems = []
    for case in SINGLE:
        problems += harness.single_process_problems(f"{case}/{strategy}/cuda", results[case], references[case])
    for case in TORCH_DDP:
        problems += harness.torch_ddp_problems(f"{case}/{strategy}/cuda", results[case])
    assert problems == []


def _step_times(strategy: str, steps: int = 20) -> dict:
    """Median step time of the built-in GPT under `strategy` on this rank's GPU, after warmup."""
    import shardwise as sw
    from shardwise.models import GPT, GPTConfig

    device = torch.device("cuda", torch.cuda.current_device())
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=96, block_size=128, n_layer=4, n_head=4, n_embd=128)).to(device)
    model, optimizer = sw.wrap(model, torch.optim.AdamW(model.parameters(), lr=1e-3), harness.strategy_for(strategy))
    g = torch.Generator().manual_seed(sw.rank())
    x = torch.randint(96, (16, 128), generator=g).to(device)
    times = []
    for step in range(steps + 3):
        torch.cuda.synchronize()
        start = time.perf_counter()
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 96), x[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= 3:
            times.append(time.perf_counter() - start)
    return {"median_ms": 1000 * sorted(times)[len(times) // 2], "loss": loss.item()}


@pytest.mark.timeout(600)
def test_step_times_on_cuda():
    """Prints the median step time per strategy (built-in GPT, 16 x 127 tokens per GPU); asserts training runs."""
    import shardwise as sw

    for strategy in STRATEGIES:
        per_rank = sw.launch(_step_times, GPUS, args=(strategy,), timeout_s=300)
        print(f"{strategy:>14} x{GPUS}: " + ", ".join(f"{r['median_ms']:.1f} ms" for r in per_rank))
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in per_rank)
