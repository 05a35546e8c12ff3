"""DDP beyond parity: bytes per step, no_sync, bucket views, memory, and the errors users hit."""

import functools

import pytest
import torch
from torch import nn

import shardwise as sw
from shardwise.models import MLP


def _small_model():
    torch.manual_seed(0)
    return MLP(d_in=7, width=13, depth=3, d_out=5)


def _comm_and_memory():
    model = _small_model()
    trainable = sum(p.numel() for p in model.parameters())
    model, optimizer = sw.wrap(model, functools.partial(torch.optim.Adam, lr=1e-3), strategy=sw.DDP(bucket_mb=0.0005, first_bucket_mb=0.0002))
    x = torch.randn(4, 7)
    sw.reset_comm_stats()
    with model.no_sync():
        model(x).sum().backward()
    no_sync_bytes = sw.comm_stats()["total"]
    model(x).sum().backward()
    step_bytes = sw.comm_stats()
    optimizer.step()
    views_ok = all(
        p.grad is None or p.grad.untyped_storage().data_ptr() == bucket.flat.untyped_storage().data_ptr()
        for bucket in model.buckets for p in bucket.params
    )
    return {
        "trainable": trainable, "no_sync_bytes": no_sync_bytes, "step": step_bytes, "buckets": len(model.buckets),
        "views_ok": views_ok, "state_bytes": sw.model_state_bytes(model, optimizer),
    }


@pytest.mark.timeout(90)
@pytest.mark.parametrize("n", [2, 3])
def test_bytes_per_step_are_one_ring_all_reduce_of_the_gradients(n):
    for result in sw.launch(_comm_and_memory, n):
        psi = result["trainable"]
        assert result["no_sync_bytes"] == 0
        assert result["step"]["all_reduce"] == round(2 * (n - 1) / n * 4 * psi)
        assert result["step"]["total"] == result["step"]["all_reduce"]
        assert result["buckets"] > 1
        assert result["views_ok"]
        # fp32 Adam: 4Ψ parameters + 4Ψ gradients + 8Ψ moments, plus Adam's scalar step counters.
        assert 16 * psi <= result["state_bytes"] <= 16 * psi + 64 * len(list(_small_model().parameters()))


class _WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(3, 3)
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        return self.used(x)


def _unused_parameter():
    model, _ = sw.wrap(_WithUnused(), functools.partial(torch.optim.SGD, lr=0.1))
    model(torch.randn(2, 3)).sum().backward()


@pytest.mark.timeout(60)
def test_parameter_without_gradient_is_named():
    with pytest.raises(sw.WorkerError, match=r"parameter 'unused\.(weight|bias)'.* received no gradient"):
        sw.launch(_unused_parameter, 2)


def _mismatched_model():
    width = 4 if sw.rank() == 0 else 5
    model = nn.Sequential(nn.Linear(3, width))
    sw.wrap(model, functools.partial(torch.optim.SGD, lr=0.1))


@pytest.mark.timeout(60)
def test_model_that_differs_between_ranks_names_the_parameter():
    with pytest.raises(sw.WorkerError, match=r"model differs between ranks at wrap: '0\.weight' is shape \(4, 3\) float32 on rank 0 but shape \(5, 3\) float32 on rank 1") as info:
        sw.launch(_mismatched_model, 2)
    assert isinstance(info.value.original, sw.ConfigError)


def test_unknown_strategy_and_stepped_optimizer_are_config_errors():
    model = _small_model()
    with pytest.raises(sw.ConfigError, match="unknown strategy 'zero9'"):
        sw.wrap(model, functools.partial(torch.optim.SGD, lr=0.1), strategy="zero9")
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 7)).sum().backward()
    optimizer.step()
    with pytest.raises(sw.ConfigError, match="already taken a step"):
        sw.wrap(model, optimizer)
    with pytest.raises(sw.ConfigError, match="not a parameter of the model"):
        sw.wrap(_small_model(), torch.optim.SGD(_small_model().parameters(), lr=0.1))


def test_gradient_clipping_sees_the_wrapped_gradients_in_one_process():
    model, optimizer = sw.wrap(_small_model(), functools.partial(torch.optim.SGD, lr=0.1))
    model(torch.randn(4, 7)).pow(2).sum().backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
    assert norm > 1e-3
    clipped = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert clipped == pytest.approx(1e-3, rel=1e-4)
