"""Pipeline parallelism trains to the parameters of one process on the whole batch, for every
schedule, on an odd-sized MLP and on the GPT whose embedding is tied to its output head across
the first and last stage."""

import pytest
import torch

import shardwise as sw
from shardwise.testing.parity import ATOL, RTOL, Run, run_reference
from shardwise.testing.cases import CASES, GLOBAL_BATCH
from shardwise.testing.pipeline_parity import check_model_parallel_parity


# the GPT's plan with its token embedding and tied head split by vocabulary rows (17: 9 + 8)
VOCAB_PLAN = {"blocks.*.attn.qkv_proj": "colwise:3", "blocks.*.attn.out_proj": "rowwise",
              "blocks.*.mlp.up_proj": "colwise", "blocks.*.mlp.down_proj": "rowwise",
              "token_embedding": "vocab", "lm_head": "vocab"}


def _auto(case: str, stages: int, microbatches: int) -> sw.Pipeline:
    """Stages balanced by the layers' times measured on one micro-batch of the case."""
    example = CASES[case].batch(0)[0][:GLOBAL_BATCH // microbatches]
    return sw.Pipeline(stages=stages, microbatches=microbatches, split="auto", example=example)


def _pipelines(stages: int) -> list[Run]:
    return [Run(case, sw.Pipeline(stages=stages, microbatches=m, schedule=schedule), steps=4)
            for case in ("mlp_deep", "gpt_deep")
            for schedule, m in (("gpipe", 4), ("1f1b", 8), ("interleaved-1f1b", 2 * stages), ("zb-h1", 2 * stages))]


def _meshes(dp: int, pp: int, tp: int) -> list[Run]:
    runs = []
    for case in ("mlp", "gpt_tied"):
        for dp_strategy in ("ddp", "zero1", "zero2") if (dp, pp, tp) == (2, 2, 1) else ("ddp", "zero1"):
            for schedule, m in (("1f1b", 4), ("gpipe", 2), ("interleaved-1f1b", 2)):
                if pp == 1 and schedule != "1f1b":
                    continue
                if schedule != "1f1b" and (case == "mlp" or dp_strategy == "zero2"):
                    continue  # every schedule on the GPT with ddp and zero1
                pipeline = sw.Pipeline(stages=pp, microbatches=m, schedule=schedule) if pp > 1 else None
                runs.append(Run(case, sw.Mesh(dp=dp, pp=pp, tp=tp, dp_strategy=dp_strategy, pipeline=pipeline), steps=3))
    return runs


@pytest.mark.timeout(300)
def test_two_rank_pipeline_and_tensor_parallel_parity():
    # every schedule at pp = 2; tp = 2: the odd MLP's 13 features split 7 + 6, the GPT's
    # attention by heads and its MLP 32 + 32
    tensor = [Run(case, sw.TensorParallel(size=2), steps=4) for case in ("mlp", "mlp_deep", "gpt_tied")]
    tensor.append(Run("gpt_tied", sw.TensorParallel(size=2, plan=VOCAB_PLAN), steps=4))
    # the logits left split and the vocabulary-parallel cross-entropy as the loss
    tensor.append(Run("gpt_tied", sw.TensorParallel(size=2, vocab=True, split_logits=True), steps=4))
    auto = [Run("gpt_deep", _auto("gpt_deep", 2, 4), steps=4)]
    assert check_model_parallel_parity(_pipelines(2) + tensor + auto, 2) == []


@pytest.mark.timeout(500)
def test_four_rank_layouts_parity():
    # (1,4,1) with every schedule; (2,2,1), (2,1,2), (1,2,2) with ddp and zero1 (zero2 on (2,2,1)):
    # one launch of four ranks serves them all (each mesh makes its own groups)
    runs = _pipelines(4) + _meshes(2, 2, 1) + _meshes(2, 1, 2) + _meshes(1, 2, 2)
    # split="auto" on a mesh: every replica must cut alike (times averaged over all ranks)
    runs.append(Run("mlp_deep", sw.Mesh(dp=2, pp=2, pipeline=_auto("mlp_deep", 2, 2)), steps=3))
    runs.append(Run("gpt_tied", sw.Mesh(dp=2, pp=2, dp_strategy="zero1",
                                        pipeline=sw.Pipeline(stages=2, microbatches=2, schedule="zb-h1")), steps=3))
    runs.append(Run("gpt_tied", sw.Mesh(pp=2, tp=2, pipeline=sw.Pipeline(stages=2, microbatches=2, split="auto")),
                    steps=3))  # tensor-parallel slices timed on the GPT's example_input()
    runs.append(Run("gpt_tied", sw.Mesh(pp=2, tp=2, pipeline=sw.Pipeline(stages=2, microbatches=2),
                                        tensor=sw.TensorParallel(size=2, plan=VOCAB_PLAN)), steps=3))
    runs.append(Run("gpt_tied", sw.Mesh(dp=2, tp=2, dp_strategy="zero1",
                                        tensor=sw.TensorParallel(size=2, plan=VOCAB_PLAN)), steps=3))
    runs.append(Run("gpt_tied", sw.Mesh(pp=2, tp=2, pipeline=sw.Pipeline(stages=2, microbatches=2, schedule="1f1b"),
                                        tensor=sw.TensorParallel(size=2, vocab=True, split_logits=True)), steps=3))
    assert check_model_parallel_parity(runs, 4, timeout_s=450) == []


def _resume(run, save, load):
    from shardwise.testing.pipeline_parity import train_steps_on_rank

    return train_steps_on_rank(run, save, load)


@pytest.mark.timeout(400)
def test_mesh_checkpoints_reshard(tmp_path):
    # 3 steps saved on pp2 x dp2 (zero1 pieces), 2 more on tp2 x pp2 and on ZeRO-3 at 3 ranks:
    # the parameters of 5 steps in one process
    reference = run_reference(Run("gpt_tied", steps=5))["state"]
    zero1_pp = sw.Mesh(dp=2, pp=2, dp_strategy="zero1", pipeline=sw.Pipeline(stages=2, microbatches=2))
    pp_tp = sw.Mesh(pp=2, tp=2, pipeline=sw.Pipeline(stages=2, microbatches=4, schedule="gpipe"))
    folder = str(tmp_path / "pp2xdp2")
    sw.launch(_resume, 4, args=(Run("gpt_tied", zero1_pp, steps=3), folder, None))
    pp_tp_vocab = sw.Mesh(pp=2, tp=2, pipeline=sw.Pipeline(stages=2, microbatches=4),
                          tensor=sw.TensorParallel(size=2, plan=VOCAB_PLAN))  # the embedding split by rows
    for loader, world in ((pp_tp, 4), (pp_tp_vocab, 4), (sw.ZeRO(stage=3), 3)):  # other meshes; another family
        results = sw.launch(_resume, world, args=(Run("gpt_tied", loader, steps=2), None, folder))
        for rank, result in enumerate(results):
            for key, expected in reference.items():
                assert torch.allclose(result["state"][key], expected, rtol=RTOL, atol=ATOL), (loader, rank, key)


def _states_and_losses(strategy, width, depth, steps):
    from torch import nn
    import torch.nn.functional as F

    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.GELU()]
    model = nn.Sequential(*layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if strategy is not None:
        model, optimizer = sw.wrap(model, optimizer, strategy=strategy)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, width, generator=g), torch.randn(16, width, generator=g)
    losses = []
    for _ in range(steps):
        if strategy is None:
            loss = F.mse_loss(model(x), y)
            loss.backward()
        else:
            loss = model.train_step(x, y, F.mse_loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # gradients stay allocated, as they are counted
        losses.append(loss.item())
    return sw.model_state_bytes(model, optimizer), losses


@pytest.mark.timeout(300)
def test_a_model_over_one_ranks_budget_trains_split():
    width, depth, steps = 256, 8, 3
    budget = 2.2e6  # bytes of model states one rank may hold; the whole model needs 8.4 MB under Adam
    whole, reference = _states_and_losses(None, width, depth, steps)
    assert whole > 3.5 * budget
    # a plan for a plain nn.Sequential: its Linear layers (children 0, 2, ...) in column/row pairs
    plan = {str(2 * i): "colwise" if i % 2 == 0 else "rowwise" for i in range(depth)}
    strategies = [sw.Pipeline(stages=4, microbatches=4),
                  sw.Mesh(pp=2, tp=2, pipeline=sw.Pipeline(stages=2, microbatches=4),
                          tensor=sw.TensorParallel(size=2, plan=plan))]
    for per_strategy in sw.launch(_states_and_losses_each, 4, args=(strategies, width, depth, steps)):
        for strategy, (held, losses) in zip(strategies, per_strategy):
            assert held <= budget, (strategy, held)
            assert losses == pytest.approx(reference, rel=1e-5)


def _states_and_losses_each(strategies, width, depth, steps):
    return [_states_and_losses(strategy, width, depth, steps) for strategy in strategies]



def _clipped(strategy, steps, max_norm):
    from shardwise.data.sampler import rank_slice
    from shardwise.testing.cases import CASES, GLOBAL_BATCH
    from shardwise.testing.pipeline_parity import CRITERIA

    case = CASES["gpt_tied"]
    torch.manual_seed(0)
    model = case.build()
    optimizer = case.optimizer(model)
    if strategy is not None:
        model, optimizer = sw.wrap(model, optimizer, strategy=strategy)
    mine = rank_slice(GLOBAL_BATCH, sw.data_parallel_rank(), sw.data_parallel_size()) if strategy else slice(None)
    norms = []
    for step in range(steps):
        x, y = case.batch(step)
        if strategy is None:
            case.loss(model, x, y).backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)))
        else:
            model.train_step(x[mine], y[mine], CRITERIA["gpt_tied"])
            norms.append(float(model.clip_grad_norm_(max_norm)))
        optimizer.step()
        optimizer.zero_grad()
    return norms, sw.full_state_dict(model)


@pytest.mark.timeout(300)
def test_clipping_on_a_mesh_is_the_whole_models():
    norms, reference = _clipped(None, 3, 0.05)
    assert min(norms) > 0.05  # every step clips
    strategies = [sw.Mesh(dp=2, pp=2, dp_strategy="zero2", pipeline=sw.Pipeline(stages=2, microbatches=2)),
                  sw.Mesh(pp=2, tp=2)]
    for per_strategy in sw.launch(_clipped_each, 4, args=(strategies, 3, 0.05)):
        for strategy, (got_norms, state) in zip(strategies, per_strategy):
            assert got_norms == pytest.approx(norms, rel=1e-5), strategy
            for key, expected in reference.items():
                assert torch.allclose(state[key], expected, rtol=RTOL, atol=ATOL), (strategy, key)


def _clipped_each(strategies, steps, max_norm):
    return [_clipped(strategy, steps, max_norm) for strategy in strategies]
