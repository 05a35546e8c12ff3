"""Parity for model-parallel strategies: the model trained through `model.train_step` on every
rank equals one process training on the whole global batch (docs/api.md, Parity).

The one process sums its gradient over the same micro-batches the pipeline runs (data-parallel
replicas x micro-batches each, gradient accumulation): a matrix product over fewer rows rounds
differently in fp32, and on an ill-conditioned entry of the deep GPT that alone moves a weight
by 1.3e-6 after four Adam steps under MKL's AVX-512 kernels (9.5e-8 under its AVX2 ones), while
the whole-batch fp32 run is itself 3.1e-6 from the fp64 result there. The same micro-batches in
one process leave only the order of the final sums to differ."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..api import resolve_strategy, wrap
from ..checkpoint import load_checkpoint, save_checkpoint
from ..strategy.state import full_state_dict
from ..mesh.config import Mesh
from ..models.gpt import lm_loss
from ..pipeline.config import Pipeline
from ..tensor_parallel import vocab_parallel_cross_entropy
from ..runtime import env
from ..data.sampler import rank_slice
from .cases import CASES, GLOBAL_BATCH
from .parity import Run, compare, computing, run_reference

CRITERIA = {"mlp": F.mse_loss, "mlp_groups": F.mse_loss, "frozen_sgd": F.mse_loss, "mlp_deep": F.mse_loss,
            "gpt_tied": lm_loss, "gpt_deep": lm_loss}


def train_steps_on_rank(run: Run, save: str | None = None, load: str | None = None) -> dict:
    """This rank's part of `run`: its data-parallel replica's slice of each global batch into
    `model.train_step` (a strategy without one: forward and backward), resumed from `load` and
    saved to `save` if given."""
    case = CASES[run.case]
    torch.manual_seed(env.rank())  # ranks start different; wrap must make them equal
    model = case.build()
    model, optimizer = wrap(model, case.optimizer(model), strategy=run.strategy)
    by_step = resolve_strategy(run.strategy).trains_by_step
    start = load_checkpoint(load, model, optimizer)["step"] if load else 0
    losses = []
    mine = rank_slice(GLOBAL_BATCH, env.data_parallel_rank(), env.data_parallel_size())
    criterion = _criterion(run, model)
    for step in range(start, start + run.steps):
        x, y = case.batch(step)
        with computing(run):
            if by_step:
                loss = model.train_step(x[mine], y[mine], criterion)
            else:
                loss = case.loss(model, x[mine], y[mine])
                loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss))
    if save:
        save_checkpoint(save, model, optimizer, extra={"step": start + run.steps})
    return {"losses": losses, "state": full_state_dict(model)}


def _criterion(run: Run, model):
    """The case's loss; over split logits (a 'vocab-split' head) the vocabulary-parallel
    cross-entropy, which gives the same loss and gradients."""
    strategy = resolve_strategy(run.strategy)
    tensor = strategy.tensor_config() if isinstance(strategy, Mesh) else strategy
    if not getattr(tensor, "split_logits", False):
        return CRITERIA[run.case]
    group = model.tp_group
    return lambda logits, targets: vocab_parallel_cross_entropy(logits, targets, group).mean()


def batch_pieces(strategy) -> int:
    """Equal parts of the global batch the strategy computes separately: replicas x micro-batches
    for a pipeline or a mesh, 1 otherwise."""
    strategy = resolve_strategy(strategy)
    if isinstance(strategy, Mesh):
        pipelined = strategy.pp > 1 or strategy.pipeline is not None
        return strategy.dp * (strategy.pipeline_config().microbatches if pipelined else 1)
    return strategy.microbatches if isinstance(strategy, Pipeline) else 1


def run_all(runs: list[Run]) -> list[dict]:
    results = []
    for run in runs:
        results.append(train_steps_on_rank(run))
        env.set_data_parallel(None, None)
    return results


def check_model_parallel_parity(runs: list[Run], world_size: int, timeout_s: float = 240) -> list[str]:
    """Mismatches against the single-process reference (empty: parity). Every rank reports the
    mean loss of the whole batch, so each is compared with the reference's loss."""
    from ..runtime import launch

    per_rank = launch(run_all, world_size, args=(runs,), timeout_s=timeout_s)
    problems = []
    for index, run in enumerate(runs):
        reference = run_reference(run, pieces=batch_pieces(run.strategy))
        for rank, results in enumerate(per_rank):
            problems += [f"rank {rank}: {p}" for p in compare(run, reference, [results[index]])]
    return problems
