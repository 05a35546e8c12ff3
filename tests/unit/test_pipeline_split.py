"""Cutting layers into pipeline stages: balanced by weight, or at named layers."""

import itertools

import pytest
import torch
from torch import nn

from shardwise.errors import ConfigError
from shardwise.models.gpt import GPT, GPTConfig
from shardwise.pipeline.layers import layer_weights, pipeline_layers
from shardwise.pipeline.split import balanced_bounds, bounds_at
from shardwise.pipeline.timing import layer_times, made_up_example, timed_layers


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


class _Busy(nn.Module):
    """No parameters, much compute: a parameter count says it costs nothing."""

    def __init__(self, width: int, rounds: int):
        super().__init__()
        self.register_buffer("mix", torch.eye(width) * 0.5)
        self.rounds = rounds

    def forward(self, x):
        for _ in range(self.rounds):
            x = torch.tanh(x @ self.mix)
        return x


def test_auto_split_follows_measured_time_where_parameter_counts_mislead():
    torch.manual_seed(0)
    layers = [("a", nn.Linear(64, 64)), ("busy", _Busy(64, 400)), ("b", nn.Linear(64, 64)), ("c", nn.Linear(64, 64))]
    example = torch.randn(32, 64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as ranks run; two intra-op threads on a busy machine stall for tens of ms
    try:
        times = layer_times(layers, example)
    finally:
        torch.set_num_threads(threads)
    assert times[1] > 3 * max(times[0], times[2], times[3])
    assert balanced_bounds(layer_weights(layers), 3) == [(0, 1), (1, 3), (3, 4)]  # by parameters: busy + b
    assert balanced_bounds(times, 3) == [(0, 1), (1, 2), (2, 4)]  # by time: the busy layer alone


def test_timing_the_layers_leaves_training_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model[0].weight.grad = torch.ones_like(model[0].weight)
    example = torch.randn(16, 8)
    rng = torch.get_rng_state()
    times = layer_times(list(model.named_children()), example)
    assert len(times) == 4 and all(t > 0 for t in times)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running statistics too
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight)) and model[3].weight.grad is None
    assert torch.equal(torch.get_rng_state(), rng)


def test_auto_split_makes_up_an_example_when_none_is_given():
    import shardwise as sw

    assert sw.Pipeline(stages=2, split="auto", example=torch.zeros(2, 8)) == sw.Pipeline(stages=2, split="auto")
    gpt = GPT(GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8))
    rng = torch.get_rng_state()
    tokens = made_up_example(gpt, pipeline_layers(gpt))
    assert tokens.shape == (4, 6) and tokens.dtype == torch.int64 and int(tokens.max()) < 11
    assert len(timed_layers(gpt, pipeline_layers(gpt), None)) == 4  # embeddings, 2 blocks, head
    assert torch.equal(torch.get_rng_state(), rng)
    odd = nn.Sequential(nn.Linear(7, 13), nn.GELU(), nn.Linear(13, 5))
    assert made_up_example(odd, list(odd.named_children())).shape == (4, 7)
    convs = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with pytest.raises(ConfigError, match="cannot make up an input for Sequential: pass"):
        timed_layers(convs, list(convs.named_children()), None)
    with pytest.raises(ConfigError, match="could not time the layers on the example"):
        timed_layers(odd, list(odd.named_children()), torch.zeros(2, 9))
