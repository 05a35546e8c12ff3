"""The backward split into B (input gradient) and W (weights' gradients) gives the gradients of
one ordinary backward, and leaves to W only weights that reach the loss through their own
module ([Note: split backward]); no processes."""

import torch
import torch.nn.functional as F
from torch import nn

from shardwise.models.gpt import GPT, GPTConfig
from shardwise.pipeline.runner import Stage
from shardwise.pipeline.split_backward import WeightGradients


class _Reused(nn.Module):
    """A Linear called twice, and a weight also used functionally outside its module."""

    def __init__(self):
        super().__init__()
        self.twice = nn.Linear(6, 6)
        self.shared = nn.Linear(6, 6)
        self.frozen = nn.Linear(6, 6)
        self.frozen.weight.requires_grad_(False)

    def forward(self, x):
        h = torch.tanh(self.twice(torch.tanh(self.twice(x))))
        h = self.shared(h) + F.linear(h, self.shared.weight)  # a second use, not through the module
        return self.frozen(h)


def _gradients(model, run_input, grad, split: bool):
    model.zero_grad(set_to_none=True)
    x = run_input.detach().requires_grad_(run_input.is_floating_point())
    if not split:
        model(x).backward(grad)
        return x.grad, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, None
    weights = WeightGradients([model])
    out, pending = weights.forward(lambda: model(x))
    weights.input_backward(out, grad, x if x.requires_grad else None, pending)
    after_b = {n for n, p in model.named_parameters() if p.grad is not None}
    weights.weight_backward(pending)
    return x.grad, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, after_b


def _check(model, x, grad):
    ref_x, ref, _ = _gradients(model, x, grad, split=False)
    got_x, got, after_b = _gradients(model, x, grad, split=True)
    assert (ref_x is None) == (got_x is None) and (ref_x is None or torch.allclose(ref_x, got_x, atol=1e-6))
    assert ref.keys() == got.keys()
    for name in ref:
        assert torch.allclose(ref[name], got[name], rtol=1e-5, atol=1e-6), name
    return after_b


def test_an_mlp_defers_every_weight_to_w():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.GELU(), nn.Linear(7, 7), nn.LayerNorm(7), nn.Linear(7, 3))
    after_b = _check(model, torch.randn(4, 5), torch.randn(4, 3))
    assert after_b == set()  # B computed no weight gradient


def test_gpt_stages_with_the_tied_head_and_3d_activations():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=17, block_size=6, n_layer=2, n_head=2, n_embd=8))
    layers = [layer for _, layer in gpt.pipeline_layers()]
    first, last = Stage(layers[:2]), Stage(layers[2:])
    tokens = torch.randint(17, (3, 6))
    assert _check(first, tokens, torch.randn(3, 6, 8)) == set()
    assert _check(last, torch.randn(3, 6, 8), torch.randn(3, 6, 17)) == set()


def test_weights_used_twice_or_outside_their_module_stay_correct():
    torch.manual_seed(0)
    model = _Reused()
    after_b = _check(model, torch.randn(4, 6), torch.randn(4, 6))
    assert "shared.weight" in after_b  # used outside its module: computed whole in B
    assert "twice.weight" not in after_b and "frozen.weight" not in after_b
