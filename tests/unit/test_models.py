"""Built-in models: shapes, tied weights, reproducible init, parameter counts."""

import math

import pytest
import torch

from shardwise.errors import ConfigError
from shardwise.models import GPT, MLP, GPTConfig
from shardwise.models.gpt import lm_loss

SMALL = GPTConfig(vocab_size=96, block_size=16, n_layer=2, n_head=4, n_embd=32)


def make_gpt(seed: int = 0, config: GPTConfig = SMALL) -> GPT:
    torch.manual_seed(seed)
    return GPT(config)


def test_forward_shape_and_dtype():
    model = make_gpt()
    idx = torch.randint(0, SMALL.vocab_size, (3, 10))
    logits = model(idx)
    assert logits.shape == (3, 10, SMALL.vocab_size)
    assert logits.dtype == torch.float32


def test_lm_head_is_the_token_embedding_parameter():
    model = make_gpt()
    assert model.lm_head.weight is model.token_embedding.weight
    names = [name for name, _ in model.named_parameters()]
    assert "lm_head.weight" not in names  # named_parameters lists a shared Parameter once
    assert model.num_params() == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_tied_weight_gets_gradient_from_both_uses():
    model = make_gpt()
    idx = torch.randint(0, SMALL.vocab_size, (2, 8))
    lm_loss(model(idx), idx).backward()
    grad = model.token_embedding.weight.grad
    unused_rows = torch.ones(SMALL.vocab_size, dtype=torch.bool)
    unused_rows[idx.unique()] = False
    # Rows of tokens not in the input get gradient only through the output head.
    assert grad[unused_rows].abs().sum() > 0


def test_init_is_reproducible_under_seed_and_differs_across_seeds():
    a, b, c = make_gpt(1), make_gpt(1), make_gpt(2)
    for (name, pa), pb, pc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.token_embedding.weight, c.token_embedding.weight)


def test_residual_projections_have_scaled_init():
    model = make_gpt(config=GPTConfig(n_layer=8, n_embd=64, n_head=4, block_size=8))
    expected = 0.02 / math.sqrt(2 * 8)
    assert model.blocks[0].mlp.down_proj.weight.std().item() == pytest.approx(expected, rel=0.1)
    assert model.blocks[0].mlp.up_proj.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_initial_loss_is_near_uniform():
    model = make_gpt()
    idx = torch.randint(0, SMALL.vocab_size, (4, 16))
    targets = torch.randint(0, SMALL.vocab_size, (4, 16))  # not idx: tied weights favour the input token
    assert lm_loss(model(idx), targets).item() == pytest.approx(math.log(SMALL.vocab_size), abs=0.1)


def test_attention_is_causal():
    model = make_gpt()
    idx = torch.randint(0, SMALL.vocab_size, (1, 12))
    changed = idx.clone()
    changed[0, 7] = (changed[0, 7] + 1) % SMALL.vocab_size
    before, after = model(idx), model(changed)
    torch.testing.assert_close(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])


def test_lm_loss_is_mean_over_positions():
    logits = torch.randn(2, 3, 5)
    targets = torch.randint(0, 5, (2, 3))
    per_position = [torch.nn.functional.cross_entropy(logits[b, t], targets[b, t]) for b in range(2) for t in range(3)]
    torch.testing.assert_close(lm_loss(logits, targets), torch.stack(per_position).mean())


def test_generate_length_crops_context_and_restores_mode():
    model = make_gpt()
    model.train()
    prompt = torch.randint(0, SMALL.vocab_size, (2, 14))
    out = model.generate(prompt, max_new_tokens=6, top_k=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 20)  # longer than block_size 16: the context was cropped
    assert torch.equal(out[:, :14], prompt)
    assert model.training
    again = model.generate(prompt, max_new_tokens=6, top_k=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_forward_rejects_too_long_sequence():
    with pytest.raises(ConfigError, match="exceeds the model's block_size 16"):
        make_gpt()(torch.zeros(1, 17, dtype=torch.long))


def test_config_rejects_heads_that_do_not_divide_width():
    with pytest.raises(ConfigError, match="n_embd 30 does not split evenly over n_head 4"):
        GPTConfig(n_embd=30, n_head=4)


def test_default_gpt_param_count():
    model = make_gpt(config=GPTConfig())
    c = GPTConfig()
    per_block = 12 * c.n_embd**2 + 13 * c.n_embd  # attn 4C^2+4C, mlp 8C^2+5C, two LayerNorms 4C
    expected = c.vocab_size * c.n_embd + c.block_size * c.n_embd + c.n_layer * per_block + 2 * c.n_embd
    assert model.num_params() == expected


def test_mlp_default_is_the_benchmark_size():
    model = MLP()
    assert sum(p.numel() for p in model.parameters()) == 8_396_800


def test_mlp_odd_sizes():
    torch.manual_seed(0)
    model = MLP(width=13, depth=3, d_in=7, d_out=5)
    assert model(torch.randn(4, 7)).shape == (4, 5)
    assert sum(p.numel() for p in model.parameters()) == (7 * 13 + 13) + (13 * 13 + 13) + (13 * 5 + 5)
    assert MLP(width=13, depth=1, d_in=7, d_out=5)(torch.randn(2, 7)).shape == (2, 5)


def test_mlp_rejects_zero_depth():
    with pytest.raises(ConfigError, match="MLP depth must be at least 1, got 0"):
        MLP(width=4, depth=0)
