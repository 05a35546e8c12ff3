"""Scripts whose distributed run must equal one process on the same global batch.

Each is the loop a user writes around `DDP(model)`, with `sw.wrap` in its place: block reuse,
activation checkpointing, torch.compile before wrap (nanoGPT's order), and Hugging Face models
built from configs. Returns this rank's losses (its slice's mean per step) and the full state.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

import shardwise as sw

from compat_job import GLOBAL_BATCH, Job, final_state, my_rows
from compat_models import HF_SEQ, HF_VOCAB, BlockStack, SmallMLP, hf_bert, hf_gpt2

STEPS = 4


def _regression_batch(step: int, device):
    g = torch.Generator().manual_seed(500 + step)
    return torch.randn(GLOBAL_BATCH, 5, generator=g).to(device), torch.randn(GLOBAL_BATCH, 3, generator=g).to(device)


def _adamw_groups(model, lr=1e-2):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, weight_decay=0.1)


def _train_regression(job: Job, build) -> dict:
    device = job.torch_device()
    torch.manual_seed(job.seed_offset())
    model = build().to(device)
    optimizer = _adamw_groups(model)
    if job.distributed:
        model, optimizer = sw.wrap(model, optimizer, job.strategy)
    rows = my_rows(job)
    losses = []
    for step in range(STEPS):
        x, y = _regression_batch(step, device)
        loss = F.mse_loss(model(x[rows]), y[rows])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return {"losses": losses, "state": final_state(job, model)}


def reuse(job: Job) -> dict:
    """Block 0 runs first and last (0, 1, 2, 3, 0)."""
    return _train_regression(job, functools.partial(BlockStack, order=(0, 1, 2, 3, 0)))


def checkpointing(job: Job) -> dict:
    """Every block under torch.utils.checkpoint(use_reentrant=False)."""
    return _train_regression(job, functools.partial(BlockStack, checkpointed=True))


def _compiled(backend: str):
    def build():
        torch._dynamo.reset()
        return torch.compile(SmallMLP(), backend=backend)  # nanoGPT: compile, then wrap in DDP
    return build


def compile_aot_eager(job: Job) -> dict:
    return _train_regression(job, _compiled("aot_eager"))


def compile_inductor(job: Job) -> dict:
    return _train_regression(job, _compiled("inductor"))


def _sgd_momentum(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def _train_hf(job: Job, build, batch, make_optimizer) -> dict:
    """A Hugging Face model: forward(**inputs, labels=...) returns an output whose .loss is the mean."""
    device = job.torch_device()
    torch.manual_seed(job.seed_offset())
    model = build().to(device)
    optimizer = make_optimizer(model)
    if job.distributed:
        model, optimizer = sw.wrap(model, optimizer, job.strategy)
    model.train()
    rows = my_rows(job)
    losses = []
    for step in range(3):
        inputs, labels = batch(step)
        inputs = {k: v[rows].to(device) for k, v in inputs.items()}
        out = model(**inputs, labels=labels[rows].to(device))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as HF's Trainer does
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
    return {"losses": losses, "state": final_state(job, model)}


def _lm_batch(step: int):
    g = torch.Generator().manual_seed(700 + step)
    ids = torch.randint(HF_VOCAB, (GLOBAL_BATCH, HF_SEQ), generator=g)
    return {"input_ids": ids}, ids.clone()  # GPT-2 shifts the labels itself


def _classification_batch(step: int):
    g = torch.Generator().manual_seed(800 + step)
    ids = torch.randint(HF_VOCAB, (GLOBAL_BATCH, HF_SEQ), generator=g)
    mask = torch.ones_like(ids)
    mask[::3, -2:] = 0  # some padding, as a tokenizer's batch has
    return {"input_ids": ids, "attention_mask": mask}, torch.randint(3, (GLOBAL_BATCH,), generator=g)


def hf_gpt2_lm(job: Job) -> dict:
    # SGD, not Adam: GPT-2's fused c_attn bias holds the attention key bias, whose gradient is
    # zero in exact arithmetic; Adam scales its rounding noise up to ~lr-sized steps that differ
    # between 1 and 2 processes by more than the tolerance (shardwise.testing.cases,
    # [Note: attention key bias under Adam]). AdamW is covered by the BERT and nanoGPT scripts.
    return _train_hf(job, hf_gpt2, _lm_batch, _sgd_momentum)


def hf_bert_classifier(job: Job) -> dict:
    return _train_hf(job, hf_bert, _classification_batch, functools.partial(_adamw_groups, lr=1e-3))


def rank0_saves_outside_gathered(job: Job) -> dict:
    """PyTorch's DDP tutorial: `if rank == 0: torch.save(ddp_model.state_dict(), PATH)`, no gathered().

    Rank 0 alone asks for the wrapped model's state_dict; it must be the full state under DDP's
    "module." keys, or (where parameters are sharded and no collective is possible) a ConfigError
    on rank 0 saying to use `sw.gathered`; never a hang. Runs alone in a launch.
    """
    torch.manual_seed(job.seed_offset())
    model = SmallMLP()
    model, optimizer = sw.wrap(model, _adamw_groups(model), job.strategy)
    rows = my_rows(job)
    for step in range(2):
        x, y = _regression_batch(step, job.torch_device())
        F.mse_loss(model(x[rows]), y[rows]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    full = final_state(job, model)  # every rank, before rank 0 goes alone
    saved = None
    if sw.rank() == 0:
        saved = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"full": full, "saved": saved}
