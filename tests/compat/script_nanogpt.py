"""nanoGPT's train.py loop, scaled down, with `model = DDP(model, ...)` replaced by `sw.wrap`.

What it exercises, line for line as nanoGPT writes it: `configure_optimizers` (decayed >=2-D
tensors, AdamW), the learning rate set on every param group each iteration, gradient
accumulation through `model.require_backward_grad_sync = (micro_step == last)`,
`torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)` with a grad_clip that clips,
evaluation and `torch.save` checkpoints by the master process alone (inside `sw.gathered`, the
one line a ZeRO-3 script adds), and `destroy_process_group()` imported from torch at the end.
"""

from __future__ import annotations

import contextlib
import math
import os

import torch
from torch.distributed import destroy_process_group  # as nanoGPT imports it

import shardwise as sw

from compat_job import Job, cpu_state, final_state
from compat_models import NanoGPT, NanoGPTConfig

# train.py's knobs, scaled down
GRADIENT_ACCUMULATION_STEPS = 4  # over all ranks; each rank does 4 // world_size
BATCH_SIZE = 2
BLOCK_SIZE = 16
MAX_ITERS = 6
EVAL_INTERVAL = 3
EVAL_ITERS = 2
LEARNING_RATE, MIN_LR, WARMUP_ITERS, LR_DECAY_ITERS = 1e-3, 1e-4, 2, 6
WEIGHT_DECAY, BETA1, BETA2 = 0.1, 0.9, 0.95
GRAD_CLIP = 0.05  # small: the tiny model's norms are ~0.3, so every step clips


def get_lr(it: int) -> float:
    """nanoGPT's schedule: linear warmup, cosine decay to MIN_LR."""
    if it < WARMUP_ITERS:
        return LEARNING_RATE * (it + 1) / (WARMUP_ITERS + 1)
    if it > LR_DECAY_ITERS:
        return MIN_LR
    decay_ratio = (it - WARMUP_ITERS) / (LR_DECAY_ITERS - WARMUP_ITERS)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * decay_ratio)) * (LEARNING_RATE - MIN_LR)


def get_batch(split: str, it: int, index: int, vocab: int):
    """A fixed crop per (split, iteration, global micro-batch index); stands for nanoGPT's random crops."""
    g = torch.Generator().manual_seed((10_000 if split == "val" else 0) + 100 * it + index)
    data = torch.randint(vocab, (BATCH_SIZE, BLOCK_SIZE + 1), generator=g)
    return data[:, :-1].contiguous(), data[:, 1:].contiguous()


def nanogpt(job: Job) -> dict:
    """train.py with compile=False, ending with destroy_process_group() (so last in its launch)."""
    return _train(job, compile_backend=None, destroy_at_end=True)


def nanogpt_compiled(job: Job) -> dict:
    """train.py's default compile=True (`model = torch.compile(model)` before DDP), backend aot_eager."""
    return _train(job, compile_backend="aot_eager", destroy_at_end=False)


def _train(job: Job, compile_backend: str | None, destroy_at_end: bool) -> dict:
    ddp = job.distributed
    device = job.torch_device()
    torch.manual_seed(1337 + job.seed_offset())
    config = NanoGPTConfig(block_size=BLOCK_SIZE)
    model = NanoGPT(config).to(device)
    optimizer = model.configure_optimizers(WEIGHT_DECAY, LEARNING_RATE, (BETA1, BETA2), device.type)
    if compile_backend is not None:
        torch._dynamo.reset()
        model = torch.compile(model, backend=compile_backend)  # nanoGPT: unoptimized_model = model; compile
    gradient_accumulation_steps = GRADIENT_ACCUMULATION_STEPS
    if ddp:
        model, optimizer = sw.wrap(model, optimizer, job.strategy)  # nanoGPT: model = DDP(model, device_ids=[...])
        ddp_rank, ddp_world_size = sw.rank(), sw.world_size()
        assert gradient_accumulation_steps % ddp_world_size == 0
        gradient_accumulation_steps //= ddp_world_size
    else:
        ddp_rank, ddp_world_size = 0, 1
    master_process = ddp_rank == 0
    raw_model = model.module if ddp else model

    @torch.no_grad()
    def estimate_loss(net) -> float:
        net.eval()
        losses = torch.zeros(EVAL_ITERS)
        for k in range(EVAL_ITERS):
            X, Y = get_batch("val", 0, k, config.vocab_size)
            _, loss = net(X.to(device), Y.to(device))
            losses[k] = loss.item()
        net.train()
        return losses.mean().item()

    result = {"losses": [], "grad_norms": [], "lrs": [], "evals": {}, "checkpoints": {}}
    for iter_num in range(MAX_ITERS + 1):
        lr = get_lr(iter_num)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        if iter_num % EVAL_INTERVAL == 0:
            with sw.gathered(model) if ddp else contextlib.nullcontext():
                if master_process:
                    result["evals"][iter_num] = estimate_loss(raw_model)
                    if iter_num > 0:
                        checkpoint = {"model": raw_model.state_dict(), "iter_num": iter_num}
                        if ddp:
                            checkpoint["wrapped"] = model.state_dict()  # DDP's keys: "module." + name
                        path = os.path.join(job.workdir, f"ckpt-{iter_num}.pt")
                        torch.save(checkpoint, path)
                        result["checkpoints"][iter_num] = path
        if iter_num == MAX_ITERS:
            break
        step_loss = 0.0
        for micro_step in range(gradient_accumulation_steps):
            if ddp:
                model.require_backward_grad_sync = (micro_step == gradient_accumulation_steps - 1)
            X, Y = get_batch("train", iter_num, ddp_rank * gradient_accumulation_steps + micro_step, config.vocab_size)
            logits, loss = model(X.to(device), Y.to(device))
            loss = loss / gradient_accumulation_steps
            loss.backward()
            step_loss += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        result["losses"].append(step_loss)
        result["grad_norms"].append(float(norm))
        result["lrs"].append([g["lr"] for g in optimizer.param_groups])
    result["state"] = final_state(job, model)
    if ddp:
        result["wrapped_state"] = cpu_state(model.state_dict())  # every rank, outside gathered
        if destroy_at_end:
            destroy_process_group()
    return result
