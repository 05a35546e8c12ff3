"""A case trained the way the multi-process tests train it: each rank on its slice of every
global batch, optionally resumed from and saved to a checkpoint."""

from __future__ import annotations

import torch

from ..api import wrap
from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.sampler import rank_slice
from ..runtime import env
from .cases import CASES, GLOBAL_BATCH


def train_slices(case_name: str, strategy, steps: int, save: str | None = None, load: str | None = None,
                 optimizer=None) -> tuple:
    """(wrapped model, optimizer, initial state_dict) after `steps` steps from seed 0, resumed
    from `load` and saved to `save` (extra {"step": ...}) if given; `optimizer`: a factory
    params -> Optimizer instead of the case's."""
    case = CASES[case_name]
    torch.manual_seed(0)
    model = case.build()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    model, opt = wrap(model, optimizer or case.optimizer(model), strategy=strategy)
    start = load_checkpoint(load, model, opt)["step"] if load else 0
    for step in range(start, start + steps):
        x, y = case.batch(step)
        mine = rank_slice(GLOBAL_BATCH, env.rank(), env.world_size())
        case.loss(model, x[mine], y[mine]).backward()
        opt.step()
        opt.zero_grad()
    if save:
        save_checkpoint(save, model, opt, extra={"step": start + steps})
    return model, opt, initial
