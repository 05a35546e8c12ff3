"""Tensor-parallel plans and slice arithmetic, without processes."""

import pytest
import torch

from shardwise.errors import ConfigError
from shardwise.models.gpt import GPT, GPTConfig
from shardwise.models.mlp import MLP
from shardwise.strategy.slices import element_ranges, take
from shardwise.tensor_parallel.plan import parse_style, shard_indices, style_of


def test_styles():
    assert parse_style("colwise") == ("colwise", 1) and parse_style("colwise:3") == ("colwise", 3)
    assert parse_style("rowwise") == ("rowwise", 1) and parse_style("replicate") == ("replicate", 1)
    for bad in ("diagonal", "rowwise:2", "colwise:0", "colwise:x"):
        with pytest.raises(ConfigError):
            parse_style(bad)


def test_patterns_match_module_names():
    plan = GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16)).tensor_parallel_plan()
    assert style_of("blocks.1.attn.qkv_proj", plan) == "colwise:3"
    assert style_of("blocks.0.mlp.down_proj", plan) == "rowwise"
    assert style_of("lm_head", plan) is None
    vocab = GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16)).tensor_parallel_plan(vocab=True)
    assert style_of("lm_head", vocab) == style_of("token_embedding", vocab) == "vocab"
    assert style_of("position_embedding", vocab) is None
    assert MLP(d_in=7, width=13, depth=3, d_out=5).tensor_parallel_plan() == {"layers.0": "colwise", "layers.2": "rowwise"}


@pytest.mark.parametrize("features,parts,size", [(12, 3, 2), (13, 1, 2), (48, 3, 4), (7, 1, 3)])
def test_shard_indices_tile_every_part(features, parts, size):
    every = sorted(i for r in range(size) for i in shard_indices(features, parts, size, r))
    assert every == list(range(features))
    # q, k and v each give every rank a slice: the heads of one rank come from all three parts
    part = features // parts
    for r in range(size):
        mine = shard_indices(features, parts, size, r)
        assert {i // part for i in mine} == set(range(parts))


def test_too_many_ranks_is_refused():
    with pytest.raises(ConfigError):
        shard_indices(6, 3, 4, 0)


@pytest.mark.parametrize("shape,dim,indices", [((6, 4), 0, [1, 2, 4]), ((6, 4), 1, [1, 2]), ((5,), 0, [0, 3, 4]),
                                               ((3, 5), 1, [0, 1, 2, 3, 4])])
def test_element_ranges_place_the_slice_in_the_flat_tensor(shape, dim, indices):
    full = torch.arange(torch.Size(shape).numel(), dtype=torch.float32).reshape(shape)
    local = take(full, dim, indices).reshape(-1)
    flat = full.reshape(-1)
    covered = 0
    for fs, fe, ls, le in element_ranges(shape, dim, indices):
        assert torch.equal(flat[fs:fe], local[ls:le])
        covered += fe - fs
    assert covered == local.numel()
