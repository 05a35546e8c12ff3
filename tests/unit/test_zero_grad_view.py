"""`.grad` views of gradient shards (see [Note: gradient views]), without a process group:
pieces of each gradient stand in for the shards of two ranks, and `gather_terms` stacks both
ranks' terms as the collective would."""

import math

import pytest
import torch

from shardwise.errors import ConfigError
from shardwise.zero.grad_view import ShardGrads, ShardGradView, combine_terms, partial_norm_terms
from shardwise.strategy.buffers import pack_layout


def _setup(seed=0):
    """Two parameters; plain copies with ordinary grads; views over a flat copy split in two 'ranks'."""
    torch.manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
    grads = [torch.randn(3, 4) * 3, torch.randn(5)]
    plain = [p.detach().clone().requires_grad_() for p in params]
    for p, g in zip(plain, grads):
        p.grad = g.clone()
    flat = [g.clone().reshape(-1) for g in grads]
    # "rank 0" owns flat[0][:7]; "rank 1" owns flat[0][7:] and all of flat[1].
    rank0, rank1 = [(0, flat[0][:7])], [(0, flat[0][7:]), (1, flat[1])]
    calls = []

    def gather_terms(terms):  # this process plays rank 1; rank 0's terms are computed alongside
        calls.append(1)
        return torch.stack([partial_norm_terms(rank0, 2, current_ord[0]), terms])

    current_ord = [2.0]
    shard_grads = ShardGrads(rank1, 2, gather_terms)
    # Rank 0's slice must scale too: wrap the scale so both 'ranks' apply it (as each rank would).
    both = ShardGrads(rank0 + rank1, 2, lambda t: t.unsqueeze(0))
    for i, p in enumerate(params):
        p.grad = ShardGradView(p, both, i, stage=2)
    return params, plain, flat, shard_grads, current_ord, calls


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_torch_clip_grad_norm_on_views_equals_whole_gradients(norm_type):
    params, plain, flat, *_ = _setup()
    ours = torch.nn.utils.clip_grad_norm_(params, 0.5, norm_type=norm_type)
    theirs = torch.nn.utils.clip_grad_norm_(plain, 0.5, norm_type=norm_type)
    assert theirs > 0.5  # the clip actually clips
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    for f, p in zip(flat, plain):
        torch.testing.assert_close(f, p.grad.reshape(-1), rtol=1e-6, atol=1e-7)


def test_foreach_and_value_clipping_on_views():
    params, plain, flat, *_ = _setup(1)
    ours = torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=True)
    theirs = torch.nn.utils.clip_grad_norm_(plain, 0.5)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    torch.nn.utils.clip_grad_value_(params, 0.01)
    torch.nn.utils.clip_grad_value_(plain, 0.01)
    for f, p in zip(flat, plain):
        assert torch.equal(f, p.grad.reshape(-1))


def test_norm_terms_of_two_ranks_combine_into_the_global_norm():
    _, plain, _, shard_grads, current_ord, calls = _setup(2)
    for ord in (2.0, 1.0, math.inf, 0.0):
        current_ord[0] = ord
        shard_grads.invalidate()
        got = torch.stack([shard_grads.norm(i, ord) for i in range(2)])
        expected = torch.stack([torch.linalg.vector_norm(p.grad, ord) for p in plain])
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)
    assert len(calls) == 4  # one collective per norm type, however many parameters ask


def test_cache_is_dropped_when_a_gradient_is_scaled():
    params, *_ = _setup(3)
    first = torch.linalg.vector_norm(params[0].grad)
    params[0].grad.mul_(0.5)
    torch.testing.assert_close(torch.linalg.vector_norm(params[0].grad), first * 0.5)


def test_other_ops_fail_with_one_line_naming_the_op():
    params, *_ = _setup()
    with pytest.raises(ConfigError, match=r"^sum is not available.*clip_grad_norm_") as error:
        params[0].grad.sum()
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="dim"):
        torch.linalg.vector_norm(params[0].grad, 2, dim=0)


def test_before_read_runs_before_norms_and_scaling():
    g = torch.ones(4) * 8
    seen = []
    shard_grads = ShardGrads([(0, g)], 1, lambda t: t.unsqueeze(0), before_read=lambda: seen.append(g.clone()))
    shard_grads.norm(0, 2)
    shard_grads.scale_(0, torch.tensor(0.5))
    assert len(seen) == 2 and torch.equal(g, torch.ones(4) * 4)


def test_combine_terms_sums_powers_and_takes_extremes():
    per_rank = torch.tensor([[4.0, 1.0], [5.0, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(combine_terms(per_rank, 2.0), torch.tensor([3.0, 2.0]))
    torch.testing.assert_close(combine_terms(per_rank, math.inf), torch.tensor([5.0, 3.0]))
    torch.testing.assert_close(combine_terms(per_rank, -math.inf), torch.tensor([4.0, 1.0]))


def test_buffer_pack_layout_aligns_every_dtype():
    buffers = [torch.zeros(3), torch.zeros((), dtype=torch.int64), torch.zeros(5, dtype=torch.float16)]
    offsets, total = pack_layout(buffers)
    assert offsets == [0, 16, 24] and total == 40
    assert all(start % b.element_size() == 0 for start, b in zip(offsets, buffers))
