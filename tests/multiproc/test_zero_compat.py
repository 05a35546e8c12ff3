"""ZeRO under a PyTorch DDP script: each stage against torch.nn.parallel.DistributedDataParallel
on gloo, run side by side in the same ranks on a deep copy of the same model.

Gradient part (issue 11): torch clip_grad_norm_ on `.grad` views, require_backward_grad_sync
accumulation, find_unused_parameters with ranks disagreeing, BatchNorm buffers, zero_grad on the
model, and the marked optimizer shard.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import shardwise as sw
from shardwise.errors import ConfigError
from shardwise.testing.parity import ATOL, RTOL

STAGES = (1, 2, 3)
GLOBAL = 8  # rows of the global batch; each of the 2 ranks takes 4


def _batch(step: int, rank: int, d_in: int = 8, d_out: int = 4):
    g = torch.Generator().manual_seed(100 + step)
    x, y = torch.randn(GLOBAL, d_in, generator=g), torch.randn(GLOBAL, d_out, generator=g)
    rows = slice(rank * GLOBAL // 2, (rank + 1) * GLOBAL // 2)
    return x[rows], y[rows]


def _adamw(model):
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)


def _pair(model: nn.Module, stage: int, bucket_mb: float = 25, **switches):
    """(ZeRO model, its optimizer, DDP model, its optimizer) from one initial model."""
    reference = DistributedDataParallel(copy.deepcopy(model), **switches)
    reference_opt = _adamw(reference.module)
    wrapped, optimizer = sw.wrap(model, _adamw(model), sw.ZeRO(stage=stage, bucket_mb=bucket_mb), **switches)
    return wrapped, optimizer, reference, reference_opt


def _differences(label: str, ours: dict, theirs: dict) -> list[str]:
    out = []
    for key, expected in theirs.items():
        got = ours[key]
        if got.dtype != expected.dtype or got.shape != expected.shape or \
                not torch.allclose(got.double(), expected.double(), rtol=RTOL, atol=ATOL):
            out.append(f"{label} rank {dist.get_rank()}: '{key}' differs from PyTorch DDP")
    return out


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4))


def _clip_and_accumulate(stage: int) -> list[str]:
    """nanoGPT's loop: 2 micro-steps per step through require_backward_grad_sync, torch clipping."""
    model, optimizer, reference, reference_opt = _pair(_mlp(), stage)
    problems, clip = [], 0.05
    rank = dist.get_rank()
    for step in range(3):
        x, y = _batch(step, rank)
        for micro in range(2):
            last = micro == 1
            for m in (model, reference):
                m.require_backward_grad_sync = last
            sw.reset_comm_stats()
            loss = 10 * nn.functional.mse_loss(model(x[micro::2]), y[micro::2]) / 2
            loss.backward()
            # Stage 3 must gather its parameters to compute; gradients must not move.
            moved = sw.comm_stats()["total"] - (sw.comm_stats()["all_gather"] if stage == 3 else 0)
            if not last and moved != 0:
                problems.append(f"zero{stage}: {sw.comm_stats()} communicated on a require_backward_grad_sync=False micro-step")
            (10 * nn.functional.mse_loss(reference(x[micro::2]), y[micro::2]) / 2).backward()
        # Step 1 clips through the inner module's parameters, as a script holding it would.
        params = model.module.parameters() if step == 1 else model.parameters()
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), clip)
        if not expected > clip:
            problems.append(f"zero{stage}: the test's gradient norm {expected} does not exceed the clip {clip}")
        if not torch.allclose(norm, expected, rtol=RTOL, atol=ATOL):
            problems.append(f"zero{stage} step {step}: clip_grad_norm_ returned {norm.item()}, PyTorch DDP {expected.item()}")
        optimizer.step()
        reference_opt.step()
        optimizer.zero_grad(set_to_none=True)
        reference_opt.zero_grad(set_to_none=True)
    problems += _differences(f"zero{stage} clip+accumulate", sw.full_state_dict(model), reference.module.state_dict())
    problems += _zero_grad_and_errors(model, stage)
    problems += _optimizer_shard_mark(optimizer, stage)
    return problems


def _zero_grad_and_errors(model, stage: int) -> list[str]:
    """model.zero_grad() clears the shards and the views; an op clipping does not use fails loudly."""
    problems = []
    x, y = _batch(9, dist.get_rank())
    nn.functional.mse_loss(model(x), y).backward()
    grad = next(iter(model.parameters())).grad
    try:
        grad.sum()
        problems.append(f"zero{stage}: p.grad.sum() did not raise")
    except ConfigError as error:
        if "clip_grad_norm_" not in str(error):
            problems.append(f"zero{stage}: unhelpful error {error}")
    if any(unit.grad_shard.abs().sum() == 0 for unit in model.engine.units):
        problems.append(f"zero{stage}: a gradient shard is zero after backward (test cannot see zero_grad work)")
    model.zero_grad()
    if any(p.grad is not None for p in model.parameters()):
        problems.append(f"zero{stage}: model.zero_grad() left a .grad")
    if any(unit.grad_shard.abs().sum() != 0 for unit in model.engine.units):
        problems.append(f"zero{stage}: model.zero_grad() left the gradient shards")
    return problems


def _optimizer_shard_mark(optimizer, stage: int) -> list[str]:
    """Resume from this rank's own shard works; another rank's shard is refused in one line."""
    problems = []
    mine = optimizer.state_dict()
    before = {k: v.clone() for k, v in next(iter(optimizer.state.values())).items() if torch.is_tensor(v)}
    optimizer.load_state_dict(copy.deepcopy(mine))
    after = next(iter(optimizer.state.values()))
    if any(not torch.equal(after[k], v) for k, v in before.items()):
        problems.append(f"zero{stage}: reloading this rank's own optimizer shard changed it")
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    other = everyone[1 - dist.get_rank()]
    try:
        optimizer.load_state_dict(other)
        problems.append(f"zero{stage}: loading another rank's optimizer shard did not raise")
    except ConfigError as error:
        if "sw.load_checkpoint" not in str(error) or "\n" in str(error):
            problems.append(f"zero{stage}: unhelpful error {error}")
    return problems


class Branches(nn.Module):
    """A shared trunk, two heads chosen per call, and a head no forward ever uses."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(8, 8)
        self.left, self.right, self.never = nn.Linear(8, 4), nn.Linear(8, 4), nn.Linear(8, 4)

    def forward(self, x, use_left: bool):
        h = torch.tanh(self.trunk(x))
        return self.left(h) if use_left else self.right(h)


def _find_unused(stage: int, bucket_mb: float = 25) -> list[str]:
    """bucket_mb tiny: one unit per parameter, so units complete in different orders on the two ranks."""
    torch.manual_seed(0)
    model, optimizer, reference, reference_opt = _pair(Branches(), stage, bucket_mb, find_unused_parameters=True)
    if bucket_mb < 1 and len(model.engine.units) != len(list(model.parameters())):
        return [f"zero{stage}: expected one unit per parameter with bucket_mb={bucket_mb}"]
    never_before = {k: v.clone() for k, v in reference.module.never.state_dict().items()}
    rank = dist.get_rank()
    # Step 0: ranks disagree; step 1: nobody uses `right` (AdamW must leave it alone); step 2: disagree again.
    plan = [(True, False), (True, True), (False, True)]
    for step, per_rank in enumerate(plan):
        x, y = _batch(step, rank)
        for m, opt in ((model, optimizer), (reference, reference_opt)):
            nn.functional.mse_loss(m(x, per_rank[rank]), y).backward()
            opt.step()
            opt.zero_grad()
    problems = _differences(f"zero{stage} find_unused bucket_mb={bucket_mb}", sw.full_state_dict(model), reference.module.state_dict())
    state = sw.full_state_dict(model)
    if any(not torch.equal(state[f"never.{k}"], v) for k, v in never_before.items()):
        problems.append(f"zero{stage}: a parameter no rank used was changed by the step")
    return problems


def _batchnorm(stage: int) -> list[str]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Linear(16, 4))
    model, optimizer, reference, reference_opt = _pair(model, stage)
    rank = dist.get_rank()
    for step in range(3):
        x, y = _batch(step, rank)
        for m, opt in ((model, optimizer), (reference, reference_opt)):
            nn.functional.mse_loss(m(x), y).backward()
            opt.step()
            opt.zero_grad()
    problems = _differences(f"zero{stage} batchnorm", sw.full_state_dict(model), reference.module.state_dict())
    for m in (model, reference):  # an evaluation forward after training: rank 0's statistics first
        m.eval()
        with torch.no_grad():
            m(_batch(5, rank)[0])
    stats = {k: v for k, v in sw.full_state_dict(model).items() if "running" in k}
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, stats)
    if any(not torch.equal(everyone[0][k], everyone[1][k]) for k in stats):
        problems.append(f"zero{stage}: BatchNorm running statistics differ between ranks")
    problems += _differences(f"zero{stage} batchnorm eval", sw.full_state_dict(model), reference.module.state_dict())
    return problems


def _fp16_clip(stage: int) -> list[str]:
    """Under fp16 loss scaling, torch clipping sees unscaled gradients, unscaled once per step."""
    reference = DistributedDataParallel(_mlp())
    model = _mlp()
    model, optimizer = sw.wrap(model, _adamw(model), sw.ZeRO(stage=stage, param_dtype="fp16"))
    model.engine.scaler.scale = 2.0 ** 10  # no overflow at this loss: the step must not be skipped
    x, y = _batch(0, dist.get_rank())
    (10 * nn.functional.mse_loss(model(x), y)).backward()
    (10 * nn.functional.mse_loss(reference(x), y)).backward()
    expected = torch.nn.utils.clip_grad_norm_(reference.parameters(), 1e9)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
    again = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
    problems = []
    if not torch.allclose(norm, expected, rtol=2e-2):
        problems.append(f"zero{stage} fp16: clip_grad_norm_ gave {norm.item()}, fp32 DDP {expected.item()}")
    if not torch.allclose(again, torch.tensor(0.05), rtol=1e-3):
        problems.append(f"zero{stage} fp16: after clipping to 0.05 the norm is {again.item()}")
    optimizer.step()
    if model.engine.scaler.skipped_steps != 0:
        problems.append(f"zero{stage} fp16: the step was skipped")
    return problems


def _all_checks() -> list[str]:
    torch.set_num_threads(1)
    problems = []
    for stage in STAGES:
        problems += _clip_and_accumulate(stage)
        problems += _find_unused(stage)
        problems += _batchnorm(stage)
    problems += _find_unused(1, bucket_mb=1e-5) + _find_unused(2, bucket_mb=1e-5)
    problems += _fp16_clip(2) + _fp16_clip(3)
    return problems


@pytest.mark.timeout(150)
def test_zero_gradients_match_pytorch_ddp():
    per_rank = sw.launch(_all_checks, 2)
    assert per_rank == [[], []]
