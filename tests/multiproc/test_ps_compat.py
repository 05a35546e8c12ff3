"""A PyTorch DDP script under a parameter server: clipping, unused parameters, per-step optimizer
options, buffers, the sync flag and clean endings, each against PyTorch DDP on the same workers.

Every launch is 1 server + 2 workers (one clipping case 2 + 2): the workers also train a copy of
the model under torch's DistributedDataParallel over the workers' group, on the same batches.
"""

import copy
import functools
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.nn.utils import clip_grad_norm_ as early_clip_grad_norm_  # bound before shardwise is imported
import torch.nn.functional as F

import shardwise as sw
from shardwise.runtime import env

TOL = {"rtol": 1e-5, "atol": 1e-6}


def _ddp(model, **kwargs):
    return torch.nn.parallel.DistributedDataParallel(model, process_group=env.training_group(), **kwargs)


def _batch(step, rank, d_in=6, rows=8):
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(rows, d_in, generator=g), torch.randn(rows, 3, generator=g)


def _mismatches(ps_model, ref_model):
    """Names of parameters and buffers where the two models differ beyond the tolerance."""
    ours = dict(ps_model.module.named_parameters()) | dict(ps_model.module.named_buffers())
    theirs = dict(ref_model.module.named_parameters()) | dict(ref_model.module.named_buffers())
    return [n for n, t in ours.items() if not torch.allclose(t.float(), theirs[n].float(), **TOL)]


# --- clipping ---------------------------------------------------------------------------------


def _clipping(servers):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    reference = copy.deepcopy(model)
    model, optimizer = sw.wrap(model, functools.partial(torch.optim.SGD, lr=0.2, momentum=0.9),
                               strategy=sw.ParameterServer(servers=servers))
    ref = _ddp(reference)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.2, momentum=0.9)
    c = 0.05
    ours, theirs = [], []
    for step in range(6):
        x, y = _batch(step, sw.rank())
        F.mse_loss(model(x), y).backward()
        F.mse_loss(ref(x), y).backward()
        if step % 3 == 0:  # the name taken before shardwise was imported
            got = [early_clip_grad_norm_(model.parameters(), c)]
            want = [early_clip_grad_norm_(ref.parameters(), c)]
        elif step % 3 == 1:  # two clips on parts of the model, through the module attribute; an inf-norm
            inf = float("inf")
            got = [torch.nn.utils.clip_grad_norm_(model.module[0].parameters(), c),
                   torch.nn.utils.clip_grad_norm_(model.module[2].parameters(), c / 2, norm_type=inf)]
            want = [torch.nn.utils.clip_grad_norm_(ref.module[0].parameters(), c),
                    torch.nn.utils.clip_grad_norm_(ref.module[2].parameters(), c / 2, norm_type=inf)]
        else:
            got = [optimizer.clip_grad_norm_(c)]
            want = [torch.nn.utils.clip_grad.clip_grad_norm_(ref.parameters(), c)]
        pending = [float(n) for n in got]
        optimizer.step()
        ref_opt.step()
        optimizer.zero_grad()
        ref_opt.zero_grad()
        ours += [float(n) for n in got]  # the servers' norms, filled in by the step
        theirs += [float(n) for n in want]
    F.mse_loss(model(x), y).backward()
    F.mse_loss(ref(x), y).backward()
    try:  # one call cannot clip a worker's gradients and other tensors together
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(ref.parameters()), c)
        mixed = None
    except sw.ConfigError as e:
        mixed = str(e)
    return {"norms": ours, "ref_norms": theirs, "mismatches": _mismatches(model, ref), "c": c,
            "pending": pending, "mixed": mixed}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("servers", [1, 2])
def test_torch_clipping_clips_the_averaged_gradient_like_ddp(servers):
    for result in [r for r in sw.launch(_clipping, servers + 2, args=(servers,)) if r is not None]:
        assert result["mismatches"] == []
        assert min(result["ref_norms"]) > result["c"]  # every clip did clip
        assert all(n != n for n in result["pending"])  # NaN until the step brings the servers' norm
        assert "clip the wrapped model's parameters in a call of their own" in result["mixed"]
        assert torch.allclose(torch.tensor(result["norms"]), torch.tensor(result["ref_norms"]), rtol=1e-5, atol=1e-6)


def _async_clipping():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    reference = copy.deepcopy(model)
    opt = functools.partial(torch.optim.SGD, lr=0.2, momentum=0.9)
    model, optimizer = sw.wrap(model, opt, strategy=sw.ParameterServer(mode="async"))
    ref_opt = opt(reference.parameters())
    ours, theirs = [], []
    for step in range(4):
        x, y = _batch(step, 0)
        F.mse_loss(model(x), y).backward()
        F.mse_loss(reference(x), y).backward()
        clip = optimizer.clip_grad_norm_ if step % 2 else functools.partial(early_clip_grad_norm_, model.parameters())
        ours.append(float(clip(0.05)))
        theirs.append(float(early_clip_grad_norm_(reference.parameters(), 0.05)))
        optimizer.step()
        ref_opt.step()
        optimizer.zero_grad()
        ref_opt.zero_grad()
    same = all(torch.allclose(a, b, **TOL) for a, b in zip(model.module.parameters(), reference.parameters()))
    return {"norms": ours, "ref_norms": theirs, "same": same}


@pytest.mark.timeout(60)
def test_async_clipping_clips_the_pushed_gradient_by_its_own_norm():
    """One async worker trains as a single process: its push is the gradient applied."""
    result = sw.launch(_async_clipping, 2)[1]
    assert result["same"]
    assert min(result["ref_norms"]) > 0.05
    assert torch.allclose(torch.tensor(result["norms"]), torch.tensor(result["ref_norms"]), **TOL)


# --- unused parameters and per-step options ---------------------------------------------------


class _Branches(nn.Module):
    """`sometimes` is used by worker 0 only, `never` by nobody."""

    def __init__(self):
        super().__init__()
        self.used = nn.Linear(6, 3)
        self.sometimes = nn.Linear(6, 3)
        self.never = nn.Linear(6, 3)

    def forward(self, x, use_sometimes: bool):
        out = self.used(x)
        return out + self.sometimes(x) if use_sometimes else out


def _unused():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = _Branches()
    initial_never = copy.deepcopy(model.never.state_dict())
    reference = copy.deepcopy(model)
    opt = functools.partial(torch.optim.AdamW, lr=0.05, weight_decay=0.3)
    model, optimizer = sw.wrap(model, opt, strategy="ps", find_unused_parameters=True)
    ref = _ddp(reference, find_unused_parameters=True)
    ref_opt = opt(ref.parameters())
    for step in range(4):
        x, y = _batch(step, sw.rank())
        use = sw.rank() == 0 and step != 2  # step 2: `sometimes` unused everywhere
        F.mse_loss(model(x, use), y).backward()
        F.mse_loss(ref(x, use), y).backward()
        optimizer.step()
        ref_opt.step()
        optimizer.zero_grad()
        ref_opt.zero_grad()
    never_untouched = all(torch.equal(model.module.never.state_dict()[k], v) for k, v in initial_never.items())
    return {"mismatches": _mismatches(model, ref), "never_untouched": never_untouched}


@pytest.mark.timeout(60)
def test_unused_parameters_are_skipped_by_the_servers_optimizer_like_ddp():
    for result in [r for r in sw.launch(_unused, 3) if r is not None]:
        assert result["never_untouched"]  # AdamW's weight decay did not touch it
        assert result["mismatches"] == []


def _options():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 3))
    reference = copy.deepcopy(model)

    def make(params):
        decay = [p for p in params if p.ndim >= 2]
        rest = [p for p in params if p.ndim < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=0.02)

    model, optimizer = sw.wrap(model, make(list(model.parameters())), strategy="ps")
    ref = _ddp(reference)
    ref_opt = make(list(ref.parameters()))
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (1 + s)) for o in (optimizer, ref_opt)]
    for step in range(5):
        for o in (optimizer, ref_opt):  # options a script changes between steps
            o.param_groups[0]["weight_decay"] = 0.1 * (step + 1)
            o.param_groups[1]["betas"] = (0.8, 0.99) if step >= 2 else (0.9, 0.999)
        x, y = _batch(step, sw.rank())
        F.mse_loss(model(x), y).backward()
        F.mse_loss(ref(x), y).backward()
        for o, s in zip((optimizer, ref_opt), schedules):
            o.step()
            s.step()
            o.zero_grad()
    return {"mismatches": _mismatches(model, ref)}


@pytest.mark.timeout(60)
def test_lr_schedule_weight_decay_and_betas_changed_between_steps_reach_the_servers():
    for result in [r for r in sw.launch(_options, 3) if r is not None]:
        assert result["mismatches"] == []


# --- buffers and the sync flag ----------------------------------------------------------------


def _buffers():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    reference = copy.deepcopy(model)
    model, optimizer = sw.wrap(model, functools.partial(torch.optim.SGD, lr=0.1), strategy="ps")
    ref = _ddp(reference)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    flags = []
    accumulation = 2
    for step in range(4):
        for micro in range(accumulation):
            model.require_backward_grad_sync = ref.require_backward_grad_sync = micro == accumulation - 1
            flags.append(model.require_backward_grad_sync)
            x, y = _batch(10 * step + micro, sw.rank())
            (F.mse_loss(model(x), y) / accumulation).backward()
            (F.mse_loss(ref(x), y) / accumulation).backward()
        optimizer.step()
        ref_opt.step()
        optimizer.zero_grad()
        ref_opt.zero_grad()
    with model.no_sync():
        inside = model.require_backward_grad_sync
    own_buffers_differ = sw.rank() == 1 and not torch.equal(model.module[1].running_mean, torch.zeros(8))
    return {"mismatches": _mismatches(model, ref), "flags": flags, "inside": inside,
            "after": model.require_backward_grad_sync, "moved": own_buffers_differ or sw.rank() == 0}


@pytest.mark.timeout(60)
def test_batchnorm_buffers_follow_worker_0_like_ddp_and_the_sync_flag_is_kept():
    results = [r for r in sw.launch(_buffers, 3) if r is not None]
    assert len(results) == 2
    assert [r["mismatches"] for r in results] == [[], []]  # parameters and running statistics, on each worker
    for result in results:
        assert result["flags"] == [False, True] * 4
        assert result["inside"] is False and result["after"] is True
        assert result["moved"]


# --- clean endings ----------------------------------------------------------------------------


SCRIPT = """
import functools, torch
from torch.distributed import destroy_process_group  # as nanoGPT imports it
import shardwise as sw

sw.init()
torch.set_num_threads(1)
torch.manual_seed(0)
model, optimizer = sw.wrap(torch.nn.Linear(4, 2), functools.partial(torch.optim.SGD, lr=0.1), strategy="ps")
for step in range(3):
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
if sw.rank() == 0:
    optimizer.finish()  # an explicit finish, then the shutdown hook: DONE is sent once
destroy_process_group()
print("worker", sw.rank(), "ended")
"""


@pytest.mark.timeout(90)
def test_script_ending_in_destroy_process_group_ends(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    command = [sys.executable, "-m", "shardwise", "run", "-n", "3", str(script)]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                           env={**os.environ, "SHARDWISE_TIMEOUT_S": "50"}, start_new_session=True)
    try:
        out, err = job.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)  # the launcher and its ranks
        job.communicate()
        pytest.fail("the job hung after destroy_process_group()")
    assert job.returncode == 0, err[-2000:]
    assert out.count("ended") == 2


def _ends_with_destroy():
    from torch.distributed import destroy_process_group

    torch.set_num_threads(1)
    model, optimizer = sw.wrap(nn.Linear(4, 2), functools.partial(torch.optim.SGD, lr=0.1), strategy="ps")
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    destroy_process_group()
    return "ended"


@pytest.mark.timeout(60)
def test_launched_function_ending_in_destroy_process_group_ends():
    assert sw.launch(_ends_with_destroy, 3, timeout_s=50) == [None, "ended", "ended"]
