"""The distributed sampler: rank slices compose the global batch, epochs are permutations."""

import pytest
import torch

from shardwise.data import BatchSampler, random_eval_batches, rank_slice
from shardwise.errors import ConfigError

BLOCK = 4
NUM_EXAMPLES = 50


def token_data(num_examples: int = NUM_EXAMPLES, block_size: int = BLOCK) -> torch.Tensor:
    """Token i has value i, so an example is identified by x[:, 0] // block_size."""
    return torch.arange(num_examples * block_size + 1)


def example_ids(x: torch.Tensor) -> list[int]:
    return (x[:, 0] // BLOCK).tolist()


def test_windows_are_shifted_targets():
    sampler = BatchSampler(token_data(), BLOCK, global_batch=6)
    x, y = sampler.batch(0)
    assert x.shape == y.shape == (6, BLOCK) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)
    assert torch.equal(x[:, 0] % BLOCK, torch.zeros(6, dtype=torch.int64))  # non-overlapping, aligned windows


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_rank_slices_concatenate_to_the_global_batch(world_size):
    global_batch = 12
    data = token_data()
    for step in (0, 1, 3, 4, 9):  # 4 batches per epoch: crosses epoch boundaries
        reference = BatchSampler(data, BLOCK, global_batch, seed=7).global_batch_at(step)
        slices = [BatchSampler(data, BLOCK, global_batch, r, world_size, seed=7).batch(step) for r in range(world_size)]
        assert all(x.shape == (global_batch // world_size, BLOCK) for x, _ in slices)
        assert torch.equal(torch.cat([x for x, _ in slices]), reference[0])
        assert torch.equal(torch.cat([y for _, y in slices]), reference[1])


def test_no_example_repeats_within_an_epoch_across_ranks_and_steps():
    world_size, global_batch = 3, 9
    samplers = [BatchSampler(token_data(), BLOCK, global_batch, r, world_size, seed=1) for r in range(world_size)]
    batches_per_epoch = NUM_EXAMPLES // global_batch
    seen = [i for step in range(batches_per_epoch) for s in samplers for i in example_ids(s.batch(step)[0])]
    assert len(seen) == len(set(seen)) == batches_per_epoch * global_batch
    assert samplers[0].epoch_of(batches_per_epoch - 1) == 0 and samplers[0].epoch_of(batches_per_epoch) == 1


def test_epochs_and_seeds_differ():
    sampler = BatchSampler(token_data(), BLOCK, global_batch=10, seed=0)
    first_epoch = [i for step in range(5) for i in example_ids(sampler.batch(step)[0])]
    second_epoch = [i for step in range(5, 10) for i in example_ids(sampler.batch(step)[0])]
    assert sorted(first_epoch) == sorted(second_epoch) == list(range(NUM_EXAMPLES))
    assert first_epoch != second_epoch
    other_seed = BatchSampler(token_data(), BLOCK, global_batch=10, seed=1)
    assert example_ids(other_seed.batch(0)[0]) != first_epoch[:10]


def test_same_seed_is_deterministic():
    a = BatchSampler(token_data(), BLOCK, global_batch=10, seed=3)
    b = BatchSampler(token_data(), BLOCK, global_batch=10, seed=3)
    for step in (7, 0, 12):  # out of order: the answer depends on the step alone
        assert torch.equal(a.batch(step)[0], b.batch(step)[0])


def test_state_dict_round_trip_resumes_under_another_world_size():
    sampler = BatchSampler(token_data(), BLOCK, global_batch=8, seed=5)
    for _ in range(7):
        sampler.next_batch()
    state = sampler.state_dict()
    assert state == {"seed": 5, "step": 7, "global_batch": 8, "block_size": BLOCK}
    expected_x, _ = sampler.next_batch()

    resumed = [BatchSampler(token_data(), BLOCK, global_batch=8, rank=r, world_size=2, seed=0) for r in range(2)]
    for s in resumed:
        s.load_state_dict(dict(state))
    assert torch.equal(torch.cat([s.next_batch()[0] for s in resumed]), expected_x)


def test_state_dict_with_other_batch_shape_is_rejected():
    state = BatchSampler(token_data(), BLOCK, global_batch=8).state_dict()
    with pytest.raises(ConfigError, match="saved with global batch 8, this run uses 10"):
        BatchSampler(token_data(), BLOCK, global_batch=10).load_state_dict(state)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(global_batch=10, world_size=4, rank=0), "global batch 10 does not split evenly over 4 ranks"),
        (dict(global_batch=8, world_size=4, rank=4), "rank 4 is outside a world of 4 ranks"),
        (dict(global_batch=8, block_size=0), "block size must be at least 1, got 0"),
        (dict(global_batch=0), "global batch must be at least 1, got 0"),
        (dict(global_batch=64), "give 50 examples of block size 4, fewer than the global batch 64"),
        (dict(global_batch=4, world_size=4, rank=0, data=token_data(3)), "give 3 examples .* fewer than the 4 ranks"),
        (dict(global_batch=4, data=torch.zeros(3, 3)), "must be a 1D tensor"),
    ],
)
def test_bad_inputs_raise_config_error(kwargs, message):
    arguments = dict(data=token_data(), block_size=BLOCK, global_batch=8, rank=0, world_size=1)
    arguments.update(kwargs)
    with pytest.raises(ConfigError, match=message):
        BatchSampler(**arguments)


def test_rank_slice_rows():
    assert [rank_slice(12, r, 3) for r in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 12)]
    with pytest.raises(ConfigError, match="global batch 10 does not split evenly over 4 ranks"):
        rank_slice(10, 0, 4)


def test_random_eval_batches_are_deterministic_windows():
    data = token_data()
    first = random_eval_batches(data, BLOCK, batch_size=5, num_batches=3, seed=2)
    second = random_eval_batches(data, BLOCK, batch_size=5, num_batches=3, seed=2)
    assert len(first) == 3
    for (x, y), (x2, y2) in zip(first, second):
        assert x.shape == (5, BLOCK) and torch.equal(x, x2) and torch.equal(y, y2)
        assert torch.equal(y, x + 1) and int(y.max()) < len(data)
    with pytest.raises(ConfigError, match="too few for one window"):
        random_eval_batches(torch.arange(4), BLOCK, 1, 1)
