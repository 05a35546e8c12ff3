"""Compressors without processes: error feedback is exact bookkeeping, specs parse, the factors
PowerSGD would send are what it says."""

import pytest
import torch

from shardwise.compress import compressor_from_spec
from shardwise.compress.int8 import Int8, Int8Codec
from shardwise.compress.powersgd import PowerSGD, PowerSGDCodec
from shardwise.compress.topk import TopK, TopKCodec
from shardwise.errors import ConfigError


def _steps(codec, sent_of, numel, steps=5):
    """Several encodes: each time sent + residual equals the corrected input exactly."""
    torch.manual_seed(0)
    for _ in range(steps):
        grad = torch.randn(numel) * torch.logspace(-6, 2, numel)[torch.randperm(numel)]
        corrected = grad + codec.residual.value
        codec.encode(grad.clone())
        assert torch.equal(sent_of(codec, numel) + codec.residual.value, corrected)


def test_int8_error_feedback_is_exact():
    codec = Int8Codec(0, torch.zeros(5000), chunk=512)

    def sent(c, n):
        return (c.q.view(c.chunks, c.chunk).float() * c.scales[:, None]).view(-1)[:n]

    _steps(codec, sent, 5000)
    assert codec.q.abs().max() == 127 and codec.q.dtype == torch.int8


def test_topk_error_feedback_is_exact_and_keeps_the_largest():
    codec = TopKCodec(0, torch.zeros(1000), ratio=0.05)
    _steps(codec, lambda c, n: c.sent, 1000)
    assert codec.k == 50
    grad = torch.zeros(1000)
    grad[[3, 500, 999]] = torch.tensor([-9.0, 8.0, 7.0])
    fresh = TopKCodec(0, torch.zeros(1000), ratio=0.003)
    fresh.encode(grad)
    assert sorted(fresh.indices.tolist()) == [3, 500, 999]


def test_powersgd_compresses_only_matrices_worth_it():
    flat = torch.zeros(64 * 32 + 32 + 4 * 4)
    views = [flat[:2048].view(64, 32), flat[2048:2080], flat[2080:].view(4, 4)]
    codec = PowerSGDCodec(0, flat, views, PowerSGD(rank=2))
    assert codec.matrices == [(0, 64, 32, 2)] and codec.plain == [1, 2]  # (64 + 32) * 2 * 2 < 2048; 4x4 is not
    assert codec.first.numel() == 64 * 2 + 32 + 16 and codec.q.numel() == 32 * 2


@pytest.mark.parametrize("spec, name", [("fp16", "fp16"), ("bf16", "bf16"), ("int8", "int8"), ("topk:0.01", "topk:0.01"),
                                        ("powersgd:4", "powersgd:4")])
def test_specs(spec, name):
    assert compressor_from_spec(spec).name == name


@pytest.mark.parametrize("spec", ["fp8", "topk", "topk:0", "topk:2", "powersgd:0", "powersgd:x", "int8:3"])
def test_bad_specs_are_one_line_errors(spec):
    with pytest.raises(ConfigError):
        compressor_from_spec(spec)
    assert compressor_from_spec("none") is None and isinstance(compressor_from_spec(TopK(0.5)), TopK)
    assert isinstance(compressor_from_spec(Int8()), Int8)
