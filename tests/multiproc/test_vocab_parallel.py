"""Vocabulary parallelism: the split embedding, output layer and cross-entropy give one process's
values and gradients, for vocabularies that do not divide evenly over the ranks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import shardwise as sw
from shardwise.errors import ConfigError
from shardwise.tensor_parallel.plan import parse_style
from shardwise.tensor_parallel.vocab import (VocabParallelEmbedding, VocabParallelLinear, vocab_parallel_cross_entropy,
                                             vocab_range)


def _compare(vocab: int) -> dict:
    torch.set_num_threads(1)
    rank, world = sw.rank(), sw.world_size()
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, vocab, generator=generator) * 4
    targets = torch.randint(vocab, (3, 5), generator=generator)
    start, end = vocab_range(vocab, world, rank)
    out = {"range": (start, end)}

    whole = logits.clone().requires_grad_()
    F.cross_entropy(whole.reshape(-1, vocab), targets.reshape(-1)).backward()
    mine = logits[..., start:end].clone().requires_grad_()
    loss = vocab_parallel_cross_entropy(mine, targets).mean()
    loss.backward()
    out["ce_loss"] = (loss.item(), F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1)).item())
    out["ce_grad"] = (mine.grad - whole.grad[..., start:end]).abs().max().item()

    torch.manual_seed(1)  # the same whole layers on every rank
    embedding, head = nn.Embedding(vocab, 6), nn.Linear(6, vocab)
    ids = torch.randint(vocab, (4, 7), generator=generator)
    split_embedding = VocabParallelEmbedding(embedding, None, world, rank)
    split_head = VocabParallelLinear(head, None, world, rank)
    reference = head(embedding(ids))
    reference.square().mean().backward()
    result = split_head(split_embedding(ids))
    result.square().mean().backward()
    out["forward"] = (result - reference).abs().max().item()
    out["embedding_grad"] = (split_embedding.weight.grad - embedding.weight.grad[start:end]).abs().max().item()
    out["head_grad"] = (split_head.weight.grad - head.weight.grad[start:end]).abs().max().item()
    out["bias_grad"] = (split_head.bias.grad - head.bias.grad[start:end]).abs().max().item()
    local_head = VocabParallelLinear(head, None, world, rank, gather=False)  # 'vocab-split': this rank's columns
    out["split_forward"] = (local_head(embedding(ids)) - reference[..., start:end]).abs().max().item()
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("world", [2, 3])
def test_split_vocabulary_matches_one_process(world):
    results = sw.launch(_compare, world, args=(17,), timeout_s=100)
    assert [r["range"] for r in results] == ([(0, 9), (9, 17)] if world == 2 else [(0, 6), (6, 12), (12, 17)])
    for r in results:
        assert r["ce_loss"][0] == pytest.approx(r["ce_loss"][1], rel=1e-6)
        for key in ("ce_grad", "forward", "embedding_grad", "head_grad", "bias_grad", "split_forward"):
            assert r[key] < 1e-6, (key, r)


def test_vocab_is_a_plan_style_and_bad_uses_say_what_to_do():
    assert parse_style("vocab") == ("vocab", 1)
    with pytest.raises(ConfigError, match="vocab"):
        parse_style("vocab:2")
    with pytest.raises(ConfigError, match="give the embedding and head the style 'vocab'"):
        sw.TensorParallel(size=2, plan={"lm_head": "colwise"}, vocab=True)
    assert str(sw.TensorParallel(size=2, vocab=True)) == "tensor-parallel(size=2, vocab)"
    assert parse_style("vocab-split") == ("vocab-split", 1)
    assert str(sw.TensorParallel(size=2, vocab=True, split_logits=True)) == "tensor-parallel(size=2, vocab, split logits)"
    with pytest.raises(ConfigError, match="add vocab=True"):
        sw.TensorParallel(size=2, split_logits=True)
    from shardwise.models import GPT, GPTConfig

    plan = GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=1, n_head=2, n_embd=16)).tensor_parallel_plan(
        vocab=True, split_logits=True)
    assert plan["token_embedding"] == "vocab" and plan["lm_head"] == "vocab-split"
    with pytest.raises(ConfigError, match="padding_idx"):
        VocabParallelEmbedding(nn.Embedding(10, 4, padding_idx=0), None, 2, 0)


def _split_tied_head_alone():
    from shardwise.models import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=1, n_head=2, n_embd=16))
    sw.wrap(model, torch.optim.SGD(model.parameters(), lr=0.1), strategy=sw.TensorParallel(size=2, plan={"lm_head": "colwise"}))


@pytest.mark.timeout(60)
def test_splitting_one_of_two_tied_layers_fails_instead_of_untying_them():
    with pytest.raises(sw.WorkerError, match="shares its weight with a layer the tensor-parallel plan splits"):
        sw.launch(_split_tied_head_alone, 2, timeout_s=50)


def _step_bytes() -> float:
    from shardwise import comm
    from shardwise.models import GPT, GPTConfig

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=2, n_head=2, n_embd=16))
    strategy = sw.TensorParallel(size=2, vocab=True, split_logits=True)
    model, _ = sw.wrap(model, torch.optim.SGD(model.parameters(), lr=0.1), strategy=strategy)
    ids = torch.randint(17, (4, 9), generator=torch.Generator().manual_seed(1))
    comm.reset_comm_stats()
    model.train_step(ids[:, :-1], ids[:, 1:], lambda logits, y: vocab_parallel_cross_entropy(logits, y, model.tp_group).mean())
    return comm.comm_stats()["total"]


@pytest.mark.timeout(60)
def test_planner_counts_the_bytes_the_vocabulary_split_moves():
    from shardwise.plan.model_parallel import model_parallel_row
    from shardwise.plan.model_spec import from_shape

    measured = sw.launch(_step_bytes, 2, timeout_s=50)
    shape = from_shape(layers=2, hidden=16, heads=2, vocab=17, seq_len=8)
    row = model_parallel_row(shape, 2, pp=1, tp=2, microbatches=1, schedule="1f1b", precision="fp32", micro_batch=4,
                             vocab_parallel=True)
    # 4 all-reduces per layer, the embedding's and the head's (4 x 8 x 16 values each, all of them
    # per rank at T = 2), and the cross-entropy's: 33 values gathered from the other rank, 2 x 32 all-reduced
    assert row["tp_vocab_bytes_per_microbatch"] == (2 * 4 * 8 * 16 + 33 + 64) * 4
    assert measured == [row["tp_bytes_per_step"]] * 2


def test_a_model_plan_without_split_logits_still_serves_vocab():
    from shardwise.tensor_parallel.apply import resolve_plan

    class Older(nn.Module):
        def tensor_parallel_plan(self, vocab=False):
            return {"head": "vocab"} if vocab else {"head": "replicate"}

    assert resolve_plan(Older(), None, vocab=True) == {"head": "vocab"}
    with pytest.raises(ConfigError, match="leaves no logits split"):
        resolve_plan(Older(), None, vocab=True, split_logits=True)
