"""One rank's part of the built-in job: data slice, wrapped model, measured steps, evaluation."""

from __future__ import annotations

import math
import os
import resource
import statistics
import time

import torch

from .. import comm
from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import ConfigError, TrainingDiverged
from ..data import BatchSampler, load_corpus, random_eval_batches
from ..models import GPT, lm_loss
from ..runtime import env, progress
from ..strategy.state import model_state_bytes
from ..strategy.wrap import wrap
from .config import TrainConfig


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with decay on matrices only (biases, LayerNorm weights: none), nanoGPT's grouping."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))


def lr_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak (pure)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train_rank(config: TrainConfig) -> dict:
    """Train on this rank's slices; return this rank's measurements (rank 0 also evaluates)."""
    corpus = load_corpus()
    torch.manual_seed(config.seed)
    model = GPT(config.model)
    strategy = config.build_strategy()
    model, optimizer = wrap(model, build_optimizer(model, config), strategy=strategy)
    rank, world = env.rank(), env.world_size()  # after wrap: a parameter server's workers only
    asynchronous = getattr(strategy, "mode", "sync") != "sync"
    if asynchronous:  # async workers may join one by one; this job's workers start together
        comm.barrier()
    sampler = BatchSampler(corpus.train, config.model.block_size, config.global_batch, rank, world, config.seed)
    autocast = _autocast(config, strategy)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    start_step = 0
    if config.resume:
        extra = load_checkpoint(checkpoint_dir(config.resume), model, optimizer)
        start_step = int(extra.get("step", 0))
        base_lrs = extra.get("base_lrs", base_lrs)
        for key in ("seed", "global_batch"):
            if key in extra and extra[key] != getattr(config, key):
                raise ConfigError(f"checkpoint was trained with --{key.replace('_', '-')} {extra[key]}; "
                                  f"resume with the same value (got {getattr(config, key)})")
        if start_step >= config.steps:
            raise ConfigError(f"checkpoint is at step {start_step}; give --steps above it to continue")
    bar = _progress_bar(config, start_step) if rank == 0 and config.progress else None
    tokens_per_step = config.global_batch * config.model.block_size
    losses, step_times, step_bytes, evals = [], [], [], []
    loop_started = time.perf_counter()
    extra = {"model_config": config.model.__dict__, "base_lrs": base_lrs, "seed": config.seed,
             "global_batch": config.global_batch}
    skipped, skipped_in_a_row = [], 0
    step = start_step - 1  # an async worker may find the shared budget spent before its first step
    for step in _steps(config, optimizer, start_step, world, asynchronous):
        progress.report_step(step)
        # Asynchronous workers follow the schedule by the updates applied, in sync-step units.
        schedule_step = optimizer.updates_applied() // world if asynchronous else step
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * lr_factor(schedule_step, config)
        x, y = sampler.batch(step)
        comm.reset_comm_stats()
        started = time.perf_counter()
        if rank == 0 and config.slow_worker > 1:
            slow_started = time.perf_counter()
        with autocast:
            logits = model(x)
        loss = lm_loss(logits.float(), y)
        loss.backward()
        if config.grad_clip > 0:
            clip_gradients(model, optimizer, config.grad_clip)
        if rank == 0 and config.slow_worker > 1:  # a straggler: its compute takes slow_worker times longer
            time.sleep((config.slow_worker - 1) * (time.perf_counter() - slow_started))
        # Every rank decides on the same number: the global batch's mean loss (one scalar all-reduce).
        mean_loss = loss.detach().float().reshape(1)
        if not asynchronous:
            comm.all_reduce(mean_loss)
            mean_loss /= world
        mean_loss = mean_loss.item()
        if math.isfinite(mean_loss) or config.precision == "fp16":  # fp16: the loss scaler decides
            optimizer.step()
            skipped_in_a_row = optimizer.skipped_steps_in_a_row() if hasattr(optimizer, "skipped_steps_in_a_row") else 0
        else:
            skipped_in_a_row += 1
            if config.on_nonfinite == "stop":
                raise TrainingDiverged(diverged_message(mean_loss, step + 1, config))
            skipped.append(step + 1)
        if skipped_in_a_row >= config.max_skipped_steps:
            raise TrainingDiverged(diverged_message(mean_loss, step + 1, config, in_a_row=skipped_in_a_row))
        optimizer.zero_grad()
        step_times.append(time.perf_counter() - started)
        step_bytes.append(comm.comm_stats()["total"])
        losses.append(loss.item())
        if ((step + 1) % config.eval_every == 0 or step + 1 == config.steps and not asynchronous) and (
                rank == 0 or not asynchronous):
            evals.append((step + 1, evaluate(model, corpus, config, alone=asynchronous)))
        # Asynchronous workers may die, so they take part in no collective such as a save.
        if config.run_dir and not asynchronous and (
                step + 1 == config.steps or config.save_interval and (step + 1) % config.save_interval == 0):
            save_checkpoint(checkpoint_dir(config.run_dir), model, optimizer, extra={**extra, "step": step + 1},
                            keep=config.keep_checkpoints)
        if bar is not None:
            bar.update(1)
            postfix = {"loss": f"{mean_loss:.3f}", "tok/s": f"{tokens_per_step / step_times[-1]:,.0f}",
                       "MB/step": f"{step_bytes[-1] / 1e6:.2f}"}
            if evals:
                postfix["val"] = f"{evals[-1][1]:.3f}"
            bar.set_postfix(postfix)
    if bar is not None:
        bar.close()
    if asynchronous and rank == 0:  # the budget ends at no fixed step: evaluate where it ended
        evals.append((step + 1, evaluate(model, corpus, config, alone=True)))
    train_seconds = time.perf_counter() - loop_started
    state_bytes = model_state_bytes(model, optimizer)
    server_stats = optimizer.finish() if hasattr(optimizer, "finish") else None
    return {
        "server_stats": server_stats,
        "train_seconds": train_seconds,
        "samples": len(losses) * sampler.local_batch,
        "start_step": start_step,
        "rank": rank,
        "local_losses": losses,
        "step_times": step_times,
        "comm_bytes_per_step": statistics.median(step_bytes) if step_bytes else 0,
        "model_state_bytes": state_bytes,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "evals": evals,
        "skipped_steps": skipped,
    }


def _steps(config: TrainConfig, optimizer, start_step: int, world: int, asynchronous: bool):
    """Step numbers to run. Asynchronous workers share a budget of samples instead: each keeps
    pushing until the servers have applied `steps` x workers updates, so fast workers take on
    the work a straggler does not."""
    step = start_step
    while (optimizer.updates_applied() < config.steps * world) if asynchronous else step < config.steps:
        yield step
        step += 1


def diverged_message(loss: float, step: int, config: TrainConfig, in_a_row: int = 0) -> str:
    """One line: what happened at which step, the likely cause, what to try."""
    if in_a_row and config.precision == "fp16":
        what = f"fp16 gradients overflowed in {in_a_row} steps in a row (to step {step}) although the loss scale kept halving"
        cause = "the model's values exceed fp16's range: use --precision bf16 or fp32, or lower --lr"
    else:
        what = (f"the loss was inf or NaN in {in_a_row} steps in a row (to step {step})" if in_a_row
                else f"the loss is {loss} at step {step}")
        cause = (f"the usual causes are a learning rate too high (--lr {config.lr:g}) or bad data; lower --lr or set "
                 "--grad-clip" + ("" if config.on_nonfinite == "skip" else ", or pass --on-nonfinite skip to skip such steps"))
    return f"training stopped: {what}; {cause}"


def clip_gradients(model, optimizer, max_norm: float) -> None:
    """PyTorch's own call, as a user's script makes it: every strategy gives it the global norm of
    the averaged gradient (ZeRO through its gradient views, the parameter server on its servers)."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def _autocast(config: TrainConfig, strategy):
    """bf16 autocast for strategies without their own mixed precision (ZeRO casts by itself)."""
    import contextlib

    if config.precision == "fp32" or hasattr(strategy, "stage"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=env.device().type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(model: torch.nn.Module, corpus, config: TrainConfig, alone: bool = False) -> float:
    """Mean validation loss over `eval_batches` fixed batches, each rank taking every N-th one
    (`alone`: this rank takes them all, with no collective, for workers that may die).

    Every rank runs the same number of forwards, since under ZeRO-3 a forward is a collective: a
    rank whose share is one batch short repeats its last batch without counting it.
    """
    rank, world = (0, 1) if alone else (env.rank(), env.world_size())
    batches = random_eval_batches(corpus.val, config.model.block_size, 8, config.eval_batches, seed=1234)
    mine = batches[rank::world]
    rounds = -(-len(batches) // world)  # forwards per rank: ceil(batches / ranks)
    total = torch.zeros(2, dtype=torch.float64)  # [sum of losses, count]
    for index in range(rounds):
        x, y = mine[min(index, len(mine) - 1)] if mine else batches[0]
        loss = lm_loss(model(x), y).item()
        if index < len(mine):
            total[0] += loss
            total[1] += 1
    if not alone:
        comm.all_reduce(total)
    return (total[0] / total[1]).item()


def checkpoint_dir(path: str) -> str:
    """A run folder's checkpoint, or the path itself if it is a checkpoint folder."""
    inside = os.path.join(path, "checkpoint")
    return inside if os.path.isdir(inside) or not os.path.exists(os.path.join(path, "LATEST")) else path


def ranks_label(config: TrainConfig) -> str:
    """'x2' (ranks), or under a parameter server '2 workers + 1 server'."""
    if config.strategy == "ps":
        return f"{config.trainers} workers + {config.servers} server{'s' if config.servers != 1 else ''}"
    return f"x{config.nproc}"


def _progress_bar(config: TrainConfig, start_step: int):
    import threading

    from tqdm.auto import tqdm

    tqdm.set_lock(threading.RLock())  # tqdm's default multiprocessing lock leaks a semaphore in a spawned rank
    return tqdm(total=config.steps, initial=start_step, desc=f"train {config.strategy} {ranks_label(config)}",
                unit="step", dynamic_ncols=True)
