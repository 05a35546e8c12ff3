"""User-style scripts under every strategy equal one process on the same global batch.

Block reuse (0, 1, 2, 3, 0), activation checkpointing, and torch.compile before wrap
(nanoGPT's order); 2 ranks, or 1 server + 2 workers for "ps". rtol 1e-5, atol 1e-6.
"""

import pytest

import shardwise as sw
from compat_harness import STRATEGIES, compare_state, run_one_script, single_process_problems
from compat_job import processes_for


@pytest.mark.timeout(300)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", ["reuse", "checkpointing", "compile_aot_eager"])
def test_matches_single_process(compat, case, strategy):
    ranks = compat.ranks(strategy, case)
    assert single_process_problems(f"{case}/{strategy}", ranks, compat.reference(case)) == []


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("strategy", ["ddp", "zero3"])
@pytest.mark.parametrize("case", ["compile_inductor"])
def test_inductor_compiled_model_matches_single_process(compat, case, strategy):
    ranks = compat.ranks(strategy, case)
    assert single_process_problems(f"{case}/{strategy}", ranks, compat.reference(case)) == []


@pytest.mark.timeout(200)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_rank0_alone_saves_the_wrapped_state_dict_like_the_ddp_tutorial(strategy, tmp_path):
    """`if rank == 0: torch.save(model.state_dict(), PATH)` outside gathered: the full state with
    "module." keys, or a ConfigError that names sw.gathered within the collective timeout; a
    hang fails the launch's timeout."""
    try:
        per_rank = sw.launch(run_one_script, processes_for(strategy),
                             args=(strategy, "rank0_saves_outside_gathered", str(tmp_path)), timeout_s=60,
                             collective_timeout_s=5)
    except sw.WorkerError as error:
        assert "ConfigError" in str(error) and "gathered" in str(error), str(error)
        return
    master = [r for r in per_rank if r is not None][0]
    expected = {"module." + k: v for k, v in master["full"].items()}
    assert compare_state(f"rank 0 model.state_dict()/{strategy}", master["saved"], expected) == []
