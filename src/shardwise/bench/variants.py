"""The configurations bench compares, each built from a deep copy of one initial model.

    torch_ddp    torch.nn.parallel.DistributedDataParallel + the plain optimizer (the baseline)
    torch_zero1  DistributedDataParallel + torch.distributed.optim.ZeroRedundancyOptimizer
    torch_fsdp2  torch.distributed.fsdp.fully_shard on each unit (each Linear of the MLP, each
                 transformer block of the GPT), then on the root, over a 1-D CPU DeviceMesh
    ddp, zero1, zero2, zero3   sw.wrap(..., strategy=name) with default knobs
    compressed and periodic ones: see config.COMPRESSED_CONFIGS
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.distributed.tensor import DTensor
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, post_localSGD_hook, powerSGD_hook
from torch.distributed.algorithms.model_averaging.averagers import PeriodicModelAverager
from torch.distributed.optim import PostLocalSGDOptimizer
from torch.nn.parallel import DistributedDataParallel

from ..api import resolve_strategy, wrap
from ..compress.powersgd import PowerSGD
from ..ddp import DDP
from ..localsgd import DiLoCo, LocalSGD
from ..strategy.module import strategy_module
from ..strategy.state import full_state_dict
from .cases import ModelCase
from .config import SHARDWISE_CONFIGS

SHARDWISE_COMPRESSED = {
    "ddp_fp16": lambda: DDP(compress="fp16"),
    "ddp_bf16": lambda: DDP(compress="bf16"),
    "ddp_int8": lambda: DDP(compress="int8"),
    "ddp_topk": lambda: DDP(compress="topk:0.01"),
    "ddp_powersgd": lambda: DDP(compress=PowerSGD(rank=2, warmup_steps=2)),
    "local_sgd": lambda: LocalSGD(period=LOCAL_PERIOD, warmup_steps=LOCAL_WARMUP),
    "diloco": lambda: DiLoCo(inner_steps=LOCAL_PERIOD),
}
LOCAL_PERIOD, LOCAL_WARMUP = 8, 2
"""Post-local SGD's period and synchronous warm-up steps, PyTorch's and shardwise's alike."""


def is_shardwise(name: str) -> bool:
    return name in SHARDWISE_CONFIGS or name in SHARDWISE_COMPRESSED


def zero_redundancy_optimizer(plain: torch.optim.Optimizer) -> ZeroRedundancyOptimizer:
    """PyTorch's ZeRO-1 over the same parameter groups, class and hyperparameters as `plain`."""
    cls = type(plain)
    accepted = inspect.signature(cls.__init__).parameters
    defaults = {key: value for key, value in plain.defaults.items() if key in accepted}
    groups = [
        {"params": group["params"], **{k: v for k, v in group.items() if k != "params" and v != plain.defaults.get(k)}}
        for group in plain.param_groups
    ]
    return ZeroRedundancyOptimizer(groups, optimizer_class=cls, **defaults)


def post_local_sgd(module: nn.Module, plain: torch.optim.Optimizer):
    """PyTorch's post-local SGD as its documentation builds it: DDP whose gradient all-reduce
    stops after the warm-up (its subgroups hold one rank each, so there is nothing to reduce
    within them), and PostLocalSGDOptimizer averaging the parameters every period."""
    import torch.distributed as dist

    subgroup, _ = dist.new_subgroups(group_size=1)
    ddp = DistributedDataParallel(module)
    state = post_localSGD_hook.PostLocalSGDState(process_group=None, subgroup=subgroup,
                                                 start_localSGD_iter=LOCAL_WARMUP)
    ddp.register_comm_hook(state, post_localSGD_hook.post_localSGD_hook)
    averager = PeriodicModelAverager(period=LOCAL_PERIOD, warmup_steps=LOCAL_WARMUP)
    return ddp, PostLocalSGDOptimizer(optim=plain, averager=averager)


def build_variant(name: str, initial: nn.Module, case: ModelCase, mesh) -> tuple[nn.Module, torch.optim.Optimizer]:
    """(model, optimizer) of one configuration, from a deep copy of `initial`."""
    module = copy.deepcopy(initial)
    if name == "torch_ddp":
        return DistributedDataParallel(module), case.optimizer(module)
    if name == "torch_zero1":
        return DistributedDataParallel(module), zero_redundancy_optimizer(case.optimizer(module))
    if name in ("torch_ddp_fp16", "torch_ddp_powersgd"):
        # PowerSGD's hook issues its second all-reduce from a future's callback thread; with two
        # buckets that can interleave with the next bucket's first on gloo and ranks disagree on
        # the order (an abort). One bucket for both hooks keeps it in order.
        ddp = DistributedDataParallel(module, bucket_cap_mb=1024)
        if name == "torch_ddp_fp16":
            ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
        else:
            state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=2, start_powerSGD_iter=2)
            ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
        return ddp, case.optimizer(module)
    if name == "torch_post_local_sgd":
        return post_local_sgd(module, case.optimizer(module))
    if name == "local":
        return module, case.optimizer(module)
    if name in SHARDWISE_COMPRESSED:
        return wrap(module, case.optimizer(module), strategy=SHARDWISE_COMPRESSED[name]())
    if name == "torch_fsdp2":
        for unit in case.fsdp_units(module):
            fully_shard(unit, mesh=mesh)
        fully_shard(module, mesh=mesh)
        return module, case.optimizer(module)  # built after sharding: over the DTensor shards
    if is_shardwise(name):
        return wrap(module, case.optimizer(module), strategy=name)
    raise ValueError(f"unknown configuration {name!r}")


def kept_for_backward(name: str, initial: nn.Module) -> int:
    """Parameter elements the configuration gathers once for forward and backward (stage 3)."""
    if not is_shardwise(name) or name in SHARDWISE_COMPRESSED:
        return 0
    return resolve_strategy(name).kept_for_backward(initial)


def full_state(name: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """Full parameters and buffers by state_dict key (a collective for the sharded configurations)."""
    if is_shardwise(name):
        return full_state_dict(model)
    if name == "torch_fsdp2":
        return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach() for k, v in model.state_dict().items()}
    if name == "local":
        return {k: v.detach() for k, v in model.state_dict().items()}
    return {k: v.detach() for k, v in model.module.state_dict().items()}


def max_abs_difference(state: dict, reference: dict) -> float:
    if set(state) != set(reference):
        raise RuntimeError(f"state_dict keys differ: {sorted(set(state) ^ set(reference))[:5]}")
    with torch.no_grad():
        return max((state[k].float() - reference[k].float()).abs().max().item() for k in reference)


def buffer_bytes(model: nn.Module) -> int:
    """shardwise ZeRO's reused gather and gradient buffers (stage 3's slots); 0 for the others."""
    wrapped = strategy_module(model)
    return wrapped.buffer_bytes() if wrapped is not None else 0
