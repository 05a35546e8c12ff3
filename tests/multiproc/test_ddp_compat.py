"""PyTorch DDP's switches under sw.wrap, held to PyTorch DDP itself on gloo in the same launch.

Each rank builds the reference `torch.nn.parallel.DistributedDataParallel` on a deep copy of the
same model, feeds both the same inputs and compares gradients (and which are None), parameters
and buffers after every step. See [Note: unused parameters] in ddp/data_parallel.py and
ddp/buffers.py.
"""

import copy
import functools

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as TorchDDP

import shardwise as sw

RTOL, ATOL = 1e-5, 1e-6

STRATEGIES = {
    "ddp-many-buckets": sw.DDP(bucket_mb=0.0002, first_bucket_mb=0.0001),
    "ddp": sw.DDP(),
    "ddp-naive": sw.NaiveDDP(),
}


def _differences(label, ours: nn.Module, reference: nn.Module, grads: bool = False) -> list[str]:
    """Names of tensors (and gradients, and None-ness of gradients) that differ."""
    found = []
    theirs = dict(reference.named_parameters())
    for name, p in ours.named_parameters():
        q = theirs[name]
        if not torch.allclose(p, q, rtol=RTOL, atol=ATOL):
            found.append(f"{label}: parameter {name}")
        if grads and (p.grad is None) != (q.grad is None):
            found.append(f"{label}: {name}.grad is {'None' if p.grad is None else 'set'}, PyTorch DDP's is not")
        elif grads and p.grad is not None and not torch.allclose(p.grad, q.grad, rtol=RTOL, atol=ATOL):
            found.append(f"{label}: {name}.grad")
    their_buffers = dict(reference.named_buffers())
    for name, b in ours.named_buffers():
        if not torch.allclose(b.double(), their_buffers[name].double(), rtol=RTOL, atol=ATOL):
            found.append(f"{label}: buffer {name}")
    return found


# --- find_unused_parameters -----------------------------------------------------------------------

class _Branchy(nn.Module):
    """A trunk and two heads, one taken per call; `never` is used by no rank ever."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(6, 8)
        self.left = nn.Linear(8, 3)
        self.right = nn.Linear(8, 3)
        self.never = nn.Linear(8, 3)

    def forward(self, x, branch: str):
        h = torch.tanh(self.trunk(x))
        if branch == "both":
            return self.left(h) + self.right(h)
        return self.left(h) if branch == "left" else self.right(h)


# Per step, per micro-step, the head each of the 2 ranks takes. Ranks disagree (steps 0, 2), a
# head no rank uses (step 1: right; AdamW must not decay it), a head used only inside no_sync on
# one rank (step 3: right on rank 0), and a step where every head is used (step 4).
SCHEDULE = [
    [("left", "right")],
    [("left", "left")],
    [("right", "left")],
    [("right", "left"), ("left", "left")],
    [("both", "left")],
    [("left", "left")],
]


def _unused_parameters() -> list[str]:
    torch.set_num_threads(1)
    rank = sw.rank()
    problems = []
    for label, strategy in STRATEGIES.items():
        for set_to_none in (True, False):
            torch.manual_seed(0)
            model = _Branchy()
            reference = TorchDDP(copy.deepcopy(model), find_unused_parameters=True)
            reference_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.1)
            ours, opt = sw.wrap(model, functools.partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1), strategy,
                                find_unused_parameters=True)
            torch.manual_seed(100 + rank)
            for step, micro_steps in enumerate(SCHEDULE):
                for micro, branches in enumerate(micro_steps):
                    x = torch.randn(4, 6)
                    last = micro == len(micro_steps) - 1
                    for net in (ours, reference):
                        net.require_backward_grad_sync = last
                        net(x, branches[rank]).pow(2).mean().backward()
                problems += _differences(f"{label}/set_to_none={set_to_none}/step {step}", ours.module,
                                         reference.module, grads=True)
                for optimizer in (opt, reference_opt):
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=set_to_none)
            problems += _differences(f"{label}/set_to_none={set_to_none}/end", ours.module, reference.module)
            if ours.module.never.weight.grad is not None or not torch.equal(ours.module.never.weight,
                                                                             reference.module.never.weight):
                problems.append(f"{label}/set_to_none={set_to_none}: the never-used head was touched")
    return problems


@pytest.mark.timeout(120)
def test_find_unused_parameters_matches_pytorch_ddp_when_ranks_disagree():
    for rank, problems in enumerate(sw.launch(_unused_parameters, 2)):
        assert problems == [], f"rank {rank}: {problems[:5]}"


class _HalfUsed(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(3, 3)
        self.unused = nn.Linear(3, 3)

    def forward(self, x):
        return self.used(x)


def _unused_without_switch(strategy):
    torch.set_num_threads(1)
    model, _ = sw.wrap(_HalfUsed(), functools.partial(torch.optim.SGD, lr=0.1), strategy)
    model(torch.randn(2, 3)).sum().backward()


@pytest.mark.timeout(60)
def test_without_the_switch_an_unused_parameter_says_what_to_do():
    with pytest.raises(sw.WorkerError, match=r"'unused\.(weight|bias)'.* find_unused_parameters=True") as info:
        sw.launch(_unused_without_switch, 2, args=("ddp",))
    assert isinstance(info.value.original, sw.ConfigError)


# --- broadcast_buffers ----------------------------------------------------------------------------

class _BatchNormCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3),
                                      nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))

    def forward(self, x):
        return self.head(self.features(x))


def _buffers() -> list[str]:
    torch.set_num_threads(1)
    rank = sw.rank()
    problems = []
    for label, strategy in STRATEGIES.items():
        if label == "ddp-many-buckets":
            continue
        for broadcast in (True, False):
            torch.manual_seed(0)
            model = _BatchNormCNN()
            reference = TorchDDP(copy.deepcopy(model), broadcast_buffers=broadcast)
            reference_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
            ours, opt = sw.wrap(model, functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9), strategy,
                                broadcast_buffers=broadcast)
            torch.manual_seed(100 + rank)  # ranks see different data, so their statistics drift apart
            for step in range(4):
                for micro in range(2):  # nanoGPT-style accumulation: buffers travel before micro-step 0 only
                    x = torch.randn(6, 3, 8, 8) * (1 + rank) + rank
                    for net in (ours, reference):
                        net.require_backward_grad_sync = micro == 1
                        net(x).pow(2).mean().backward()
                for optimizer in (opt, reference_opt):
                    optimizer.step()
                    optimizer.zero_grad()
                if step % 2 == 1:  # an evaluation forward in between, as training scripts do
                    x = torch.randn(6, 3, 8, 8) + rank
                    for net in (ours, reference):
                        net.eval()
                        with torch.no_grad():
                            net(x)
                        net.train()
                problems += _differences(f"{label}/broadcast={broadcast}/step {step}", ours.module, reference.module)
    return problems


@pytest.mark.timeout(120)
def test_batchnorm_cnn_matches_pytorch_ddp_parameters_and_running_statistics():
    for rank, problems in enumerate(sw.launch(_buffers, 2)):
        assert problems == [], f"rank {rank}: {problems[:5]}"


# --- require_backward_grad_sync -------------------------------------------------------------------

def _accumulation(strategy, accumulation: int = 4, steps: int = 3) -> dict:
    """nanoGPT's loop: `model.require_backward_grad_sync = (micro == last)` before each forward."""
    torch.set_num_threads(1)
    rank, world = sw.rank(), sw.world_size()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 16), nn.GELU(), nn.Linear(16, 3))
    single = copy.deepcopy(model)
    single_opt = torch.optim.AdamW(single.parameters(), lr=1e-2, weight_decay=0.1)
    ours, opt = sw.wrap(model, functools.partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1), strategy)
    batch = 8 * world * accumulation
    silent_bytes, sync_bytes = [], []
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(batch, 7, generator=g), torch.randn(batch, 3, generator=g)
        nn.functional.mse_loss(single(x), y).backward()
        single_opt.step()
        single_opt.zero_grad()
        mine = slice(rank * batch // world, (rank + 1) * batch // world)
        for micro, (mx, my) in enumerate(zip(x[mine].chunk(accumulation), y[mine].chunk(accumulation))):
            ours.require_backward_grad_sync = micro == accumulation - 1
            sw.reset_comm_stats()
            (nn.functional.mse_loss(ours(mx), my) / accumulation).backward()
            (sync_bytes if micro == accumulation - 1 else silent_bytes).append(sw.comm_stats()["total"])
        opt.step()
        opt.zero_grad()
    equal = all(torch.allclose(p, q, rtol=RTOL, atol=ATOL) for p, q in zip(ours.module.parameters(), single.parameters()))
    return {"silent": silent_bytes, "sync": sync_bytes, "equal": equal}


@pytest.mark.timeout(90)
def test_require_backward_grad_sync_accumulates_silently_and_equals_one_process():
    for result in sw.launch(_run_both_accumulations, 2):
        for label, outcome in result.items():
            assert outcome["silent"] == [0] * 9, label
            assert all(b > 0 for b in outcome["sync"]), label
            assert outcome["equal"], label


def _run_both_accumulations() -> dict:
    return {label: _accumulation(STRATEGIES[label]) for label in ("ddp", "ddp-naive")}
