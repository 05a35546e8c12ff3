"""Cutting layers into pipeline stages: balanced by weight, or at named layers."""

import itertools

import pytest
from torch import nn

from shardwise.errors import ConfigError
from shardwise.models.gpt import GPT, GPTConfig
from shardwise.pipeline.layers import layer_weights, pipeline_layers
from shardwise.pipeline.split import balanced_bounds, bounds_at


def _brute_force_best(weights, parts):
    n = len(weights)
    best = None
    for cuts in itertools.combinations(range(1, n), parts - 1):
        edges = [0, *cuts, n]
        worst = max(sum(weights[a:b]) for a, b in zip(edges, edges[1:]))
        best = worst if best is None else min(best, worst)
    return best


@pytest.mark.parametrize("weights,parts", [([5, 1, 1, 1, 1, 5], 2), ([3, 3, 3, 3], 4), ([10, 0, 7, 0, 4, 0], 4),
                                           ([1, 2, 3, 4, 5, 6, 7, 8, 9], 3), ([100, 1, 1, 1], 2), ([4], 1)])
def test_balanced_bounds_are_contiguous_nonempty_and_optimal(weights, parts):
    bounds = balanced_bounds(weights, parts)
    assert len(bounds) == parts and bounds[0][0] == 0 and bounds[-1][1] == len(weights)
    assert all(a < b for a, b in bounds) and all(b == c for (_, b), (c, _) in zip(bounds, bounds[1:]))
    assert max(sum(weights[a:b]) for a, b in bounds) == _brute_force_best(weights, parts)


def test_more_stages_than_layers_is_refused():
    with pytest.raises(ConfigError, match="at most 3 stages"):
        balanced_bounds([1, 1, 1], 4)


def test_named_cut_points():
    names = ["embeddings", "blocks.0", "blocks.1", "blocks.2", "head"]
    assert bounds_at(names, ["blocks.1", "blocks.2"], 3) == [(0, 2), (2, 3), (3, 5)]
    for bad in (["blocks.9", "head"], ["blocks.2", "blocks.1"], ["embeddings", "head"], ["head"]):
        with pytest.raises(ConfigError):
            bounds_at(names, bad, 3)


def test_gpt_lists_its_layers_and_counts_the_tied_weight_once():
    gpt = GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=3, n_head=2, n_embd=16))
    layers = pipeline_layers(gpt)
    assert [n for n, _ in layers] == ["embeddings", "blocks.0", "blocks.1", "blocks.2", "head"]
    assert sum(layer_weights(layers)) == gpt.num_params()
    x = gpt.token_embedding.weight.new_zeros(2, 5).long()
    out = x
    for _, layer in layers:
        out = layer(out)
    assert (out - gpt(x)).abs().max() == 0


def test_a_model_without_layers_is_refused():
    with pytest.raises(ConfigError, match="pipeline_layers"):
        pipeline_layers(nn.Linear(2, 2))
