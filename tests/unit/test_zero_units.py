import pytest
from torch import nn

from shardwise.errors import ConfigError
from shardwise.models import GPT, MLP, GPTConfig
from shardwise.zero import ZeRO
from shardwise.zero.units import assign_parameters, kept_for_backward, unit_modules


def test_gpt_units_are_blocks_and_tied_embedding_goes_to_root():
    model = GPT(GPTConfig(vocab_size=11, block_size=4, n_layer=3, n_head=2, n_embd=8))
    modules = unit_modules(model)
    assert modules == list(model.blocks)
    trainable = list(model.parameters())
    root, per_unit = assign_parameters(trainable, modules)
    assert any(p is model.lm_head.weight for p in root)
    assert sum(len(u) for u in per_unit) + len(root) == len(trainable)


def test_sequential_members_with_parameters_become_units():
    model = MLP(d_in=3, width=5, depth=3, d_out=2)
    assert [type(m) for m in unit_modules(model)] == [nn.Linear] * 3  # GELUs hold nothing


def test_a_parameter_shared_by_two_units_belongs_to_the_root():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    root, per_unit = assign_parameters(list(model.parameters()), unit_modules(model))
    assert root == [a.weight] and per_unit == [[a.bias], [b.bias]]


def test_small_members_join_the_root_unit():
    # [Note: small units]: 8 x 256-wide layers of 0.26 MB each go to the root below 2 MiB;
    # 1024-wide layers (4 MiB each) stay units of their own; named classes ignore the size
    small, big = MLP(width=256, depth=8), MLP(width=1024, depth=2)
    assert unit_modules(small, min_bytes=2 << 20) == []
    assert len(unit_modules(big, min_bytes=2 << 20)) == 2
    assert len(unit_modules(small, (nn.Linear,), min_bytes=2 << 20)) == 8
    mixed = nn.Sequential(nn.Linear(1024, 1024), nn.Linear(8, 8))
    root, per_unit = assign_parameters(list(mixed.parameters()), unit_modules(mixed, min_bytes=2 << 20))
    assert per_unit == [[mixed[0].weight, mixed[0].bias]] and root == [mixed[1].weight, mixed[1].bias]
    assert ZeRO(stage=3).min_unit_mb == 2.0


def test_named_unit_classes():
    model = GPT(GPTConfig(vocab_size=11, block_size=4, n_layer=2, n_head=2, n_embd=8))
    assert unit_modules(model, (nn.LayerNorm,)) == [m for m in model.modules() if isinstance(m, nn.LayerNorm)]


@pytest.mark.parametrize("kwargs, message", [
    ({"stage": 4}, "stage must be 1, 2 or 3"),
    ({"offload": "disk"}, "offload must be 'none' or 'cpu'"),
    ({"min_unit_mb": -1}, "min_unit_mb must be at least 0"),
    ({"param_dtype": "fp8"}, "unknown dtype 'fp8'"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ZeRO(**kwargs)


def test_kept_for_backward_is_the_root_and_the_last_unit():
    # [Note: kept for backward]: what stage 3 gathers once for forward and backward
    big = MLP(d_in=1024, width=1024, depth=3, d_out=10)  # units: 2 x Linear(1024, 1024); the small head: root
    units = unit_modules(big, min_bytes=2 << 20)
    root, per_unit = assign_parameters(list(big.parameters()), units)
    expected = sum(p.numel() for p in root) + sum(p.numel() for p in per_unit[-1])
    assert kept_for_backward(big, min_bytes=2 << 20) == expected == (1024 * 10 + 10) + (1024 * 1024 + 1024)
    small = MLP(width=256, depth=8)  # everything in the root unit: gathered once a step
    assert ZeRO(stage=3).kept_for_backward(small) == sum(p.numel() for p in small.parameters())
    assert ZeRO(stage=2).kept_for_backward(small) == 0
