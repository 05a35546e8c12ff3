"""Scripts whose answer is whatever PyTorch's DDP gives, not what one process gives.

BatchNorm keeps per-rank running statistics (DDP broadcasts rank 0's before each forward, or not
at all with broadcast_buffers=False), and a parameter that no rank used in a step keeps grad None
under DDP with find_unused_parameters=True, so AdamW leaves it alone (no decay, no moment
update). One process has neither, so each script trains the same model twice in one launch:
`sw.wrap` on the original, torch's DistributedDataParallel on a deepcopy, same data, same steps,
and returns both, per rank.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import shardwise as sw
from shardwise.errors import ConfigError

from compat_job import GLOBAL_BATCH, Job, cpu_state, my_rows, torch_ddp_group
from compat_models import SmallCNN, TwoHeads

STEPS = 5


def _image_batch(step: int, device):
    g = torch.Generator().manual_seed(900 + step)
    images = torch.randn(GLOBAL_BATCH, 3, 8, 8, generator=g) * 2 + 0.5  # running stats move away from 0/1
    return images.to(device), torch.randint(4, (GLOBAL_BATCH,), generator=g).to(device)


def _train_cnn(job: Job, model, optimizer, rows) -> dict:
    device = job.torch_device()
    losses = []
    for step in range(STEPS):
        images, labels = _image_batch(step, device)
        loss = F.cross_entropy(model(images[rows]), labels[rows])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return {"losses": losses}


def _sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def _bn_cnn(job: Job, broadcast_buffers: bool) -> dict:
    device = job.torch_device()
    torch.manual_seed(0)  # torch DDP broadcasts from its group's first rank, not the job's rank 0
    model = SmallCNN().to(device)
    twin = copy.deepcopy(model)
    group = torch_ddp_group(job)
    wrapped, optimizer = sw.wrap(model, _sgd(model), job.strategy, broadcast_buffers=broadcast_buffers)
    rows = my_rows(job)
    ours = _train_cnn(job, wrapped, optimizer, rows)
    ours["state"] = cpu_state(sw.full_state_dict(wrapped))
    ddp = DistributedDataParallel(twin, process_group=group, broadcast_buffers=broadcast_buffers)
    theirs = _train_cnn(job, ddp, _sgd(ddp), rows)
    theirs["state"] = cpu_state(ddp.module.state_dict())
    return {"sw": ours, "torch": theirs}


def bn_cnn(job: Job) -> dict:
    """torchvision-style CNN with BatchNorm; DDP's default broadcast_buffers=True."""
    return _bn_cnn(job, broadcast_buffers=True)


def bn_cnn_local_buffers(job: Job) -> dict:
    """The same with broadcast_buffers=False: each rank keeps its own running statistics."""
    return _bn_cnn(job, broadcast_buffers=False)


# Which rank runs the auxiliary head at which step: (rank 0, rank 1).
AUX_PATTERN = [(True, True), (True, False), (False, False), (False, True), (True, True), (False, False)]
NEVER_AFTER_FIRST = [(True, True)] + [(False, False)] * 3


def _regression(step: int, device):
    g = torch.Generator().manual_seed(950 + step)
    return torch.randn(GLOBAL_BATCH, 6, generator=g).to(device), torch.randn(GLOBAL_BATCH, 3, generator=g).to(device)


def _adamw(model):
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2, weight_decay=0.1)


def _train_heads(job: Job, model, optimizer, rows, rank, pattern) -> dict:
    device = job.torch_device()
    losses = []
    for step, uses in enumerate(pattern):
        x, y = _regression(step, device)
        loss = F.mse_loss(model(x[rows], use_aux=uses[rank % 2]), y[rows])  # 4 GPUs: pairs repeat
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return {"losses": losses}


def _two_heads(job: Job, pattern, find_unused: bool, record_config_error: bool = True) -> dict:
    """sw first (a ConfigError there recorded, or raised), then torch DDP with find_unused_parameters=True."""
    device = job.torch_device()
    torch.manual_seed(0)
    model = TwoHeads().to(device)
    twin = copy.deepcopy(model)
    group = torch_ddp_group(job)
    wrapped, optimizer = sw.wrap(model, _adamw(model), job.strategy, find_unused_parameters=find_unused)
    rows, rank = my_rows(job), sw.rank()
    try:
        ours = _train_heads(job, wrapped, optimizer, rows, rank, pattern)
        ours["state"] = cpu_state(sw.full_state_dict(wrapped))
    except ConfigError as error:  # symmetric: every rank sees the same unused parameters
        if not record_config_error:
            raise
        ours = {"config_error": str(error)}
    ddp = DistributedDataParallel(twin, process_group=group, find_unused_parameters=True)
    theirs = _train_heads(job, ddp, _adamw(ddp), rows, rank, pattern)
    theirs["state"] = cpu_state(ddp.module.state_dict())
    return {"sw": ours, "torch": theirs}


def two_heads_unused(job: Job) -> dict:
    """find_unused_parameters=True; the aux head is unused on one rank, on both, or on none."""
    return _two_heads(job, AUX_PATTERN, find_unused=True)


def unused_without_flag(job: Job) -> dict:
    """find_unused_parameters left False while the aux head goes unused on every rank after step 0.

    PyTorch DDP raises here; shardwise must either match DDP with the flag, or raise ConfigError
    naming find_unused_parameters. Wrong numbers in silence are the one wrong answer.
    """
    return _two_heads(job, NEVER_AFTER_FIRST, find_unused=False)


ONE_RANK_SKIPS = [(True, True), (True, False), (True, True)]


def unused_on_one_rank_without_flag(job: Job) -> dict:
    """find_unused_parameters left False while rank 1 alone skips the aux head at step 1.

    Only rank 1 can see it, so a ConfigError there ends the job (as a raised error ends a torchrun
    job): run alone in a launch, which must then fail naming the flag, or match torch DDP with
    the flag. Hanging, or wrong numbers, are the wrong answers.
    """
    return _two_heads(job, ONE_RANK_SKIPS, find_unused=False, record_config_error=False)
