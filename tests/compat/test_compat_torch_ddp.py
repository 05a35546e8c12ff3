"""Where buffers or unused parameters decide, the answer is PyTorch DDP's, rank by rank.

Each script trains sw.wrap(model) and torch's DistributedDataParallel(deepcopy) in one launch on
the same data and compares losses, parameters and buffers (BatchNorm running statistics and
num_batches_tracked) on every rank.
"""

import pytest

import shardwise as sw
from compat_harness import STRATEGIES, run_one_script, torch_ddp_problems
from compat_job import processes_for


@pytest.mark.timeout(300)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", ["bn_cnn", "bn_cnn_local_buffers", "two_heads_unused"])
def test_matches_torch_ddp(compat, case, strategy):
    ranks = compat.ranks(strategy, case)
    assert torch_ddp_problems(f"{case}/{strategy}", ranks) == []


@pytest.mark.timeout(300)
def test_the_batchnorm_cases_can_tell_wrong_from_right(compat):
    """Under torch DDP the running statistics differ across ranks, and between broadcasting
    buffers or not, so a strategy that ignores broadcast_buffers cannot match both cases."""
    broadcast = compat.ranks("ddp", "bn_cnn")
    local = compat.ranks("ddp", "bn_cnn_local_buffers")
    key = "features.1.running_mean"
    assert not broadcast[0]["torch"]["state"][key].equal(broadcast[1]["torch"]["state"][key])
    assert not broadcast[1]["torch"]["state"][key].equal(local[1]["torch"]["state"][key])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("case", ["unused_without_flag"])
def test_unused_parameter_without_the_flag_fails_loudly_or_matches_torch_ddp(compat, case, strategy):
    """find_unused_parameters=False with a head no rank uses: ConfigError naming the flag, or DDP's numbers."""
    ranks = compat.ranks(strategy, case)
    loud = [r["sw"]["config_error"] for r in ranks if "sw" in r and "config_error" in r["sw"]]
    if loud:
        assert len(loud) == len(ranks), "some ranks raised ConfigError and some did not"
        assert all("find_unused_parameters" in message and "\n" not in message for message in loud), loud
        return
    assert torch_ddp_problems(f"{case}/{strategy}", ranks) == []


@pytest.mark.timeout(200)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_unused_parameter_on_one_rank_without_the_flag_ends_the_job_loudly_or_matches(strategy, tmp_path):
    """Rank 1 alone skips the aux head: the job fails within the timeout naming find_unused_parameters
    (ConfigError), or its numbers are torch DDP's with the flag; never a hang or silent drift."""
    try:
        per_rank = sw.launch(run_one_script, processes_for(strategy),
                             args=(strategy, "unused_on_one_rank_without_flag", str(tmp_path)), timeout_s=120)
    except sw.WorkerError as error:
        assert "ConfigError" in str(error) and "find_unused_parameters" in str(error), str(error)
        return
    ranks = [r for r in per_rank if r is not None]
    assert torch_ddp_problems(f"unused_on_one_rank_without_flag/{strategy}", ranks) == []
