"""Mixed precision under ZeRO: low-precision compute, fp32 masters, fp16 loss scaling."""

import functools

import pytest
import torch
import torch.nn.functional as F

import shardwise as sw
from shardwise.models import MLP


def _train(strategy, steps=6):
    torch.manual_seed(0)
    model = MLP(d_in=16, width=32, depth=3, d_out=4)
    model, optimizer = sw.wrap(model, functools.partial(torch.optim.AdamW, lr=1e-2), strategy=strategy)
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(64, 16, generator=g), torch.randn(64, 4, generator=g)
    mine = slice(sw.rank() * 64 // sw.world_size(), (sw.rank() + 1) * 64 // sw.world_size())
    losses = []
    for _ in range(steps):
        out = model(x[mine])
        loss = F.mse_loss(out, y[mine])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    state = sw.full_state_dict(model)
    compute_dtypes = {p.dtype for p in model.parameters()}  # stage 3: empty between uses, still typed
    return {"losses": losses, "out_dtype": out.dtype, "state_dtypes": {v.dtype for v in state.values()},
            "compute_dtypes": compute_dtypes, "state": state}


def _precision_runs():
    runs = {"fp32": _train("zero2")}
    for stage in (1, 2, 3):
        runs[f"bf16-{stage}"] = _train(sw.ZeRO(stage=stage, param_dtype="bf16"))
    runs["fp16-2"] = _train(sw.ZeRO(stage=2, param_dtype="fp16", offload="cpu"))
    return runs


@pytest.mark.timeout(120)
def test_low_precision_compute_tracks_fp32_with_fp32_masters():
    for runs in sw.launch(_precision_runs, 2):
        reference = runs["fp32"]
        for name, run in runs.items():
            assert run["out_dtype"] == torch.float32, name  # outputs come back in fp32 for the loss
            assert run["state_dtypes"] == {torch.float32}, name  # full_state_dict gives fp32 masters
            if name.startswith("bf16"):
                assert run["compute_dtypes"] == {torch.bfloat16}, name
            if name.startswith("fp16"):
                assert run["compute_dtypes"] == {torch.float16}, name
            assert run["losses"][-1] < run["losses"][0], name
            for a, b in zip(run["losses"], reference["losses"]):
                assert abs(a - b) <= 0.03 * abs(b) + 1e-3, (name, run["losses"], reference["losses"])


def _overflow_is_skipped():
    torch.manual_seed(0)
    model = MLP(d_in=8, width=8, depth=2, d_out=2)
    model, optimizer = sw.wrap(model, functools.partial(torch.optim.SGD, lr=0.1), strategy=sw.ZeRO(stage=3, param_dtype="fp16", min_unit_mb=0))
    scaler = model.engine.scaler
    scaler.scale = 256.0  # small enough that only the injected inf overflows fp16
    before = sw.full_state_dict(model)
    scale = scaler.scale
    x = torch.randn(4, 8)
    x[0, 0] = float("inf") if sw.rank() == 1 else 0.0  # overflow on one rank only: every rank must skip
    model(x).mean().backward()
    optimizer.step()
    optimizer.zero_grad()
    after_skip = sw.full_state_dict(model)
    skipped = all(torch.equal(before[k], after_skip[k]) for k in before)
    model(torch.randn(4, 8)).mean().backward()
    optimizer.step()
    after_step = sw.full_state_dict(model)
    moved = any(not torch.equal(after_skip[k], after_step[k]) for k in before)
    return skipped, scaler.scale / scale, scaler.skipped_steps, moved


@pytest.mark.timeout(60)
def test_fp16_overflow_on_any_rank_skips_the_step_everywhere_and_halves_the_scale():
    for skipped, ratio, skipped_steps, moved in sw.launch(_overflow_is_skipped, 2):
        assert skipped and ratio == 0.5 and skipped_steps == 1 and moved
