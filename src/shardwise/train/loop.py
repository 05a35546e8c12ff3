"""One rank's part of the built-in job: data slice, wrapped model, measured steps, evaluation."""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from dataclasses import dataclass, field

import torch

from .. import comm
from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import ConfigError, TrainingDiverged
from ..data import BatchSampler, load_corpus, random_eval_batches
from ..models import GPT, lm_loss
from ..runtime import env, progress
from ..strategy.state import model_state_bytes
from ..api import wrap
from ..vocab import MB
from .config import OptimizationConfig, TrainConfig


def build_optimizer(model: torch.nn.Module, config: OptimizationConfig) -> torch.optim.Optimizer:
    """AdamW with decay on matrices only (biases, LayerNorm weights: none), nanoGPT's grouping."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.95))


def lr_factor(step: int, config: OptimizationConfig) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak (pure)."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class Measured:
    """What this rank records step by step."""

    losses: list = field(default_factory=list)
    step_times: list = field(default_factory=list)
    step_bytes: list = field(default_factory=list)
    evals: list = field(default_factory=list)
    skipped: list = field(default_factory=list)
    skipped_in_a_row: int = 0


def train_rank(config: TrainConfig, strategy=None) -> dict:
    """Train on this rank's slices; return this rank's measurements (rank 0 also evaluates).
    `strategy`: the object `config.validate()` built (built here if not given)."""
    strategy = strategy if strategy is not None else config.strategy.build()
    corpus = load_corpus()
    torch.manual_seed(config.data.seed)
    model = GPT(config.model)
    model, optimizer = wrap(model, build_optimizer(model, config.optimization), strategy=strategy)
    rank, world = env.rank(), env.world_size()  # after wrap: the training ranks only
    together = strategy.steps_together
    if not together:  # asynchronous workers may join one by one; this job's workers start together
        comm.barrier()
    sampler = BatchSampler(corpus.train, config.model.block_size, config.data.global_batch, env.data_parallel_rank(),
                           env.data_parallel_size(), config.data.seed)
    start_step, base_lrs = _resume(config, model, optimizer)
    bar = _progress_bar(config, strategy, start_step) if rank == 0 and config.progress else None
    extra = {"model_config": config.model.__dict__, "base_lrs": base_lrs, "seed": config.data.seed,
             "global_batch": config.data.global_batch}
    measured = Measured()
    loop_started = time.perf_counter()
    step = start_step - 1  # an async worker may find the shared budget spent before its first step
    for step in _steps(config, model, start_step, world, together):
        progress.report_step(step)
        # Asynchronous workers follow the schedule by the updates applied, in sync-step units.
        schedule_step = step if together else model.updates_applied() // world
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * lr_factor(schedule_step, config.optimization)
        mean_loss = _train_step(config, strategy, model, optimizer, sampler.batch(step), step, world, measured)
        if (step + 1) % config.data.eval_every == 0 or step + 1 == config.optimization.steps and together:
            if rank == 0 or together:
                measured.evals.append((step + 1, evaluate(model, corpus, config, alone=not together,
                                                          by_step=strategy.trains_by_step)))
        # Asynchronous workers may die, so they take part in no collective such as a save.
        interval = config.checkpointing.save_interval
        if config.checkpointing.run_dir and together and (
                step + 1 == config.optimization.steps or interval and (step + 1) % interval == 0):
            save_checkpoint(checkpoint_dir(config.checkpointing.run_dir), model, optimizer,
                            extra={**extra, "step": step + 1}, keep=config.checkpointing.keep)
        if bar is not None:
            _show_progress(bar, config, mean_loss, measured)
    if bar is not None:
        bar.close()
    if not together and rank == 0:  # the budget ends at no fixed step: evaluate where it ended
        measured.evals.append((step + 1, evaluate(model, corpus, config, alone=True)))
    train_seconds = time.perf_counter() - loop_started
    state_bytes = model_state_bytes(model, optimizer)
    return {
        "server_stats": model.finish(),
        "train_seconds": train_seconds,
        "samples": len(measured.losses) * sampler.local_batch,
        "start_step": start_step,
        "rank": rank,
        "local_losses": measured.losses,
        "step_times": measured.step_times,
        "comm_bytes_per_step": statistics.median(measured.step_bytes) if measured.step_bytes else 0,
        "comm_bytes_total": sum(measured.step_bytes),
        "model_state_bytes": state_bytes,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "evals": measured.evals,
        "skipped_steps": measured.skipped,
    }


def _resume(config: TrainConfig, model, optimizer) -> tuple[int, list[float]]:
    """(first step, base learning rates): from the checkpoint to resume, else (0, the optimizer's)."""
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    resume = config.checkpointing.resume
    if not resume:
        return 0, base_lrs
    extra = load_checkpoint(checkpoint_dir(resume), model, optimizer)
    start_step = int(extra.get("step", 0))
    for key in ("seed", "global_batch"):
        if key in extra and extra[key] != getattr(config.data, key):
            raise ConfigError(f"checkpoint was trained with --{key.replace('_', '-')} {extra[key]}; "
                              f"resume with the same value (got {getattr(config.data, key)})")
    if start_step >= config.optimization.steps:
        raise ConfigError(f"checkpoint is at step {start_step}; give --steps above it to continue")
    return start_step, extra.get("base_lrs", base_lrs)


def _train_step(config: TrainConfig, strategy, model, optimizer, batch, step: int, world: int,
                measured: Measured) -> float:
    """Forward, backward, clip, step (or skip a step whose loss is not finite); the global
    batch's mean loss, which every rank decides on (one scalar all-reduce, none when async)."""
    x, y = batch
    slow = env.rank() == 0 and config.slow_worker > 1
    comm.reset_comm_stats()
    started = time.perf_counter()
    if strategy.trains_by_step:  # pipeline / tensor parallel: the model runs forward and backward
        with _autocast(config, strategy):
            loss = model.train_step(x, y, job_loss(model, config))  # already the mean over the replicas
    else:
        with _autocast(config, strategy):
            logits = model(x)
        loss = lm_loss(logits.float(), y)
        loss.backward()
    if config.optimization.grad_clip > 0 and strategy.trains_by_step:
        model.clip_grad_norm_(config.optimization.grad_clip)  # over every stage, slice and replica
    elif config.optimization.grad_clip > 0:
        clip_gradients(model, optimizer, config.optimization.grad_clip)
    if slow:  # a straggler: its compute takes slow_worker times longer
        time.sleep((config.slow_worker - 1) * (time.perf_counter() - started))
    mean_loss = loss.detach().float().reshape(1)
    if strategy.steps_together and not strategy.trains_by_step:
        comm.all_reduce(mean_loss)
        mean_loss /= world
    mean_loss = mean_loss.item()
    options = config.optimization
    if math.isfinite(mean_loss) or config.strategy.precision == "fp16":  # fp16: the loss scaler decides
        optimizer.step()
        measured.skipped_in_a_row = model.skipped_steps_in_a_row()
    else:
        measured.skipped_in_a_row += 1
        if options.on_nonfinite == "stop":
            raise TrainingDiverged(diverged_message(mean_loss, step + 1, config))
        measured.skipped.append(step + 1)
    if measured.skipped_in_a_row >= options.max_skipped_steps:
        raise TrainingDiverged(diverged_message(mean_loss, step + 1, config, in_a_row=measured.skipped_in_a_row))
    optimizer.zero_grad()
    measured.step_times.append(time.perf_counter() - started)
    measured.step_bytes.append(comm.comm_stats()["total"])
    measured.losses.append(loss.item())
    return mean_loss


def _lm_loss_fp32(logits, targets):
    return lm_loss(logits.float(), targets)


def job_loss(model, config: TrainConfig):
    """The job's loss on what `train_step` hands it: whole logits, or under --tp-vocab this rank's
    vocabulary columns, whose cross-entropy is computed split ([Note: vocabulary parallel])."""
    if not config.strategy.tp_vocab:
        return _lm_loss_fp32
    from ..tensor_parallel import vocab_parallel_cross_entropy

    group = model.tp_group
    return lambda logits, targets: vocab_parallel_cross_entropy(logits.float(), targets, group).mean()


def _show_progress(bar, config: TrainConfig, mean_loss: float, measured: Measured) -> None:
    bar.update(1)
    tokens_per_step = config.data.global_batch * config.model.block_size
    postfix = {"loss": f"{mean_loss:.3f}", "tok/s": f"{tokens_per_step / measured.step_times[-1]:,.0f}",
               "MB/step": f"{measured.step_bytes[-1] / MB:.2f}"}
    if measured.evals:
        postfix["val"] = f"{measured.evals[-1][1]:.3f}"
    bar.set_postfix(postfix)


def _steps(config: TrainConfig, model, start_step: int, world: int, together: bool):
    """Step numbers to run. Asynchronous workers share a budget of samples instead: each keeps
    pushing until the servers have applied `steps` x workers updates, so fast workers take on
    the work a straggler does not."""
    step, steps = start_step, config.optimization.steps
    while step < steps if together else model.updates_applied() < steps * world:
        yield step
        step += 1


def diverged_message(loss: float, step: int, config: TrainConfig, in_a_row: int = 0) -> str:
    """One line: what happened at which step, the likely cause, what to try."""
    if in_a_row and config.strategy.precision == "fp16":
        what = f"fp16 gradients overflowed in {in_a_row} steps in a row (to step {step}) although the loss scale kept halving"
        cause = "the model's values exceed fp16's range: use --precision bf16 or fp32, or lower --lr"
    else:
        what = (f"the loss was inf or NaN in {in_a_row} steps in a row (to step {step})" if in_a_row
                else f"the loss is {loss} at step {step}")
        cause = (f"the usual causes are a learning rate too high (--lr {config.optimization.lr:g}) or bad data; lower --lr or set "
                 "--grad-clip" + ("" if config.optimization.on_nonfinite == "skip" else ", or pass --on-nonfinite skip to skip such steps"))
    return f"training stopped: {what}; {cause}"


def clip_gradients(model, optimizer, max_norm: float) -> None:
    """PyTorch's own call, as a user's script makes it: every strategy gives it the global norm of
    the averaged gradient (ZeRO through its gradient views, the parameter server on its servers)."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)


def _autocast(config: TrainConfig, strategy):
    """bf16 autocast for strategies that do not cast by themselves (ZeRO does)."""
    import contextlib

    if config.strategy.precision == "fp32" or strategy.casts_itself:
        return contextlib.nullcontext()
    return torch.autocast(device_type=env.device().type, dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(model: torch.nn.Module, corpus, config: TrainConfig, alone: bool = False, by_step: bool = False) -> float:
    """Mean validation loss over `eval_batches` fixed batches, each rank taking every N-th one
    (`alone`: this rank takes them all, with no collective, for workers that may die; `by_step`:
    the model evaluates with `eval_step`, as pipeline and tensor parallelism do).

    Every rank runs the same number of forwards, since under ZeRO-3 a forward is a collective: a
    rank whose share is one batch short repeats its last batch without counting it.
    """
    if by_step:
        return _evaluate_by_steps(model, corpus, config)
    rank, world = (0, 1) if alone else (env.rank(), env.world_size())
    batches = random_eval_batches(corpus.val, config.model.block_size, 8, config.data.eval_batches, seed=1234)
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


def _evaluate_by_steps(model, corpus, config: TrainConfig) -> float:
    """Under pipeline or tensor parallelism every rank runs every validation batch through
    `model.eval_step` (whose loss every rank of a replica receives); batches of 8 sequences, or
    a multiple of the micro-batches."""
    microbatches = config.strategy.microbatches or config.strategy.pp
    size = microbatches * -(-8 // microbatches)
    batches = random_eval_batches(corpus.val, config.model.block_size, size, config.data.eval_batches, seed=1234)
    loss_fn = job_loss(model, config)
    return sum(float(model.eval_step(x, y, loss_fn)) for x, y in batches) / len(batches)


def checkpoint_dir(path: str) -> str:
    """A run folder's checkpoint, or the path itself if it is a checkpoint folder."""
    inside = os.path.join(path, "checkpoint")
    return inside if os.path.isdir(inside) or not os.path.exists(os.path.join(path, "LATEST")) else path


def ranks_label(strategy, nproc: int) -> str:
    """'x2' (ranks), or where some ranks do not train, e.g. '2 workers + 1 server'."""
    trainers = len(strategy.training_ranks(nproc))
    if trainers == nproc:
        return f"x{nproc}"
    others = nproc - trainers
    return f"{trainers} workers + {others} server{'s' if others != 1 else ''}"


def _progress_bar(config: TrainConfig, strategy, start_step: int):
    import threading

    from tqdm.auto import tqdm

    tqdm.set_lock(threading.RLock())  # tqdm's default multiprocessing lock leaks a semaphore in a spawned rank
    label = ranks_label(strategy, config.strategy.nproc)
    return tqdm(total=config.optimization.steps, initial=start_step, desc=f"train {config.strategy.name} {label}",
                unit="step", dynamic_ncols=True)
