"""Problem math and the oracle, single process: gradients, Hessians, packing, round and byte counts."""

import pytest
import torch

from shardwise.comm.stats import ring_bytes
from shardwise.convex.oracle import Oracle
from shardwise.convex.precondition import default_sample_size, sample_indices
from shardwise.convex.problems import make_local_problem
from shardwise.flat.ranges import even_range

torch.manual_seed(0)
ROWS, FEATURES, LAM = 37, 5, 0.3


def _problem(kind):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(ROWS, FEATURES, generator=gen, dtype=torch.float64)
    if kind == "ridge":
        y = torch.randn(ROWS, generator=gen, dtype=torch.float64)
    elif kind == "logistic":
        y = (torch.rand(ROWS, generator=gen) < 0.5).to(torch.float64)
    else:
        y = torch.randint(0, 3, (ROWS,), generator=gen)
    return make_local_problem(kind, x, y, 3 if kind == "multinomial" else 2)


def _objective(problem, w):
    return problem.loss_grad_sum(w, with_grad=False)[0] / ROWS + 0.5 * LAM * w.dot(w)


@pytest.mark.parametrize("n, world", [(10, 1), (10, 3), (7, 4), (3, 4), (100_000, 3)])
def test_row_ranges_tile_the_rows_contiguously_and_evenly(n, world):
    ranges = [even_range(n, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1


def test_sample_indices_are_spread_and_fixed():
    idx = sample_indices(100, 7)
    assert idx.tolist() == sorted(set(idx.tolist())) and idx[0] == 0 and idx[-1] < 100
    assert default_sample_size(569, 31) == 62 and default_sample_size(100_000, 201) == 5000
    assert default_sample_size(10, 31) == 10


@pytest.mark.parametrize("kind", ["ridge", "logistic", "multinomial"])
def test_gradient_hessian_and_diagonal_match_autograd(kind):
    problem = _problem(kind)
    oracle = Oracle(problem, ROWS, LAM)
    w = torch.randn(problem.dim, dtype=torch.float64) * 0.5
    v = torch.randn(problem.dim, dtype=torch.float64)
    f, g = oracle.value_grad(w)
    w_auto = w.clone().requires_grad_(True)
    f_auto = _objective(problem, w_auto)
    (g_auto,) = torch.autograd.grad(f_auto, w_auto)
    hessian = torch.autograd.functional.hessian(lambda u: _objective(problem, u), w)
    assert f == pytest.approx(float(f_auto.detach()), rel=1e-14)
    torch.testing.assert_close(g, g_auto, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(oracle.hessian_vector(w, v), hessian @ v, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(oracle.evaluate(diagonals_at=[w]).diagonals[0], hessian.diagonal(), rtol=1e-12, atol=1e-14)
    dense = problem.hessian_sum(w) / ROWS + LAM * torch.eye(problem.dim, dtype=torch.float64)
    torch.testing.assert_close(dense, hessian, rtol=1e-12, atol=1e-14)


def test_logistic_loss_is_exact_for_large_margins():
    """log(1 + e^z) at z = 40 is 40 + 4e-18: softplus's linear cut-off would be wrong by e^-20 at z = 20."""
    problem = make_local_problem("logistic", torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([0.0]))
    loss, _ = problem.loss_grad_sum(torch.tensor([21.0], dtype=torch.float64))
    assert float(loss) - 21.0 == pytest.approx(7.582560427911907e-10, rel=1e-6)


def test_one_evaluate_is_one_round_and_packs_every_request():
    problem = _problem("logistic")
    oracle = Oracle(problem, ROWS, LAM, world_size=4)
    points = [torch.randn(problem.dim, dtype=torch.float64) for _ in range(3)]
    packed = oracle.evaluate(values_at=points[:1], gradients_at=points[1:], diagonals_at=points[:1], hvp=(points[0], points[1]))
    assert oracle.rounds == 1
    floats = 1 + 2 * (1 + problem.dim) + problem.dim + problem.dim
    assert oracle.comm_bytes == pytest.approx(ring_bytes("all_reduce", 8 * floats, 4))
    single = Oracle(problem, ROWS, LAM)
    assert packed.values[0] == single.evaluate(values_at=points[:1]).values[0]
    for point, value, grad in zip(points[1:], packed.grad_values, packed.grads):
        f, g = single.value_grad(point)
        assert value == f and torch.equal(grad, g)
    assert torch.equal(packed.hvp, single.hessian_vector(points[0], points[1]))


def test_sums_over_shards_equal_the_whole():
    """What ranks contribute are sums: adding the shards' sums gives the full problem's (the all-reduce's job)."""
    full = _problem("multinomial")
    w = torch.randn(full.dim, dtype=torch.float64)
    parts = [make_local_problem("multinomial", full.features[a:b], full.labels[a:b], 3)
             for a, b in (even_range(ROWS, r, 3) for r in range(3))]
    total_grad = sum(p.loss_grad_sum(w)[1] for p in parts)
    torch.testing.assert_close(total_grad, full.loss_grad_sum(w)[1], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(sum(p.hvp_sum(w, w) for p in parts), full.hvp_sum(w, w), rtol=1e-13, atol=1e-13)
