"""One rank's part of the interleaved run: every configuration built from one initial model,
their training steps interleaved, then what each holds and whether it trained like the baseline.

Full training steps (forward, backward, optimizer.step, zero_grad) of all configurations are
interleaved with a barrier before each (see [Note: interleaved timing] in timing.py). Inside each
step the forward, backward and step+zero_grad phases are timed too. After the timed steps every
configuration takes one more, identical step, and its model states are measured right after
`optimizer.step()`, before `zero_grad()` (see [Note: splitting model states] in memory.py). Then
the full parameters of each are compared with the baseline's: all started equal and saw the same
batches, so they must agree up to floating-point reordering.
"""

from __future__ import annotations

import resource
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from ..comm import comm_stats
from .cases import DISTINCT_BATCHES, ModelCase, parameter_count
from .config import BenchConfig
from .memory import peak_rss_bytes, split_model_states
from .timing import PhaseClock, interleaved_timing
from .variants import buffer_bytes, build_variant, full_state, is_shardwise, kept_for_backward, max_abs_difference

PHASES = ("forward", "backward", "step")  # "step": optimizer.step() + zero_grad()


class StepRecorder:
    """One configuration's training step as a closure for `interleaved_timing`: it cycles through
    the batches, times the phases, keeps the local loss and (shardwise) the bytes each step moved."""

    def __init__(self, case: ModelCase, model, optimizer, batches, count_comm: bool):
        self.case, self.model, self.optimizer, self.batches = case, model, optimizer, batches
        self.clock = PhaseClock(PHASES)
        self.losses: list[torch.Tensor] = []  # detached, 0-D; converted after the run (no sync per step)
        self.comm_log: list[dict] | None = [] if count_comm else None
        self.faults: list[int] = []  # minor page faults per step: fresh pages the step touched
        self.position = 0

    def _next_batch(self):
        batch = self.batches[self.position % len(self.batches)]
        self.position += 1
        return batch

    def step(self) -> None:
        x, y = self._next_batch()
        before = comm_stats() if self.comm_log is not None else None
        faults = minor_faults()
        self.clock.start()
        loss = self.case.loss(self.model(x), y)
        self.clock.lap("forward")
        loss.backward()
        self.clock.lap("backward")
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.clock.lap("step")
        self.faults.append(minor_faults() - faults)
        if self.comm_log is not None:
            after = comm_stats()
            self.comm_log.append({kind: after[kind] - before[kind] for kind in after})
        self.losses.append(loss.detach())

    def measured_step(self) -> dict[str, int]:
        """One more step on the next batch; model states right after optimizer.step(), gradients held."""
        x, y = self._next_batch()
        loss = self.case.loss(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        held = split_model_states(self.model, self.optimizer)
        self.optimizer.zero_grad()
        self.losses.append(loss.detach())
        return held


def minor_faults() -> int:
    """Minor page faults of this process so far (pages touched for the first time, on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure_on_rank(case: ModelCase, names: tuple[str, ...], steps: int, warmup: int, seed: int,
                    baseline: str, mesh=None, progress: bool = False, block: int = 1) -> dict:
    """This rank's measurements of every configuration in `names`; the caller gathers them."""
    rank = dist.get_rank()
    torch.manual_seed(seed)
    initial = case.build()
    built = {name: build_variant(name, initial, case, mesh) for name in names}
    batches = case.batches(rank, DISTINCT_BATCHES, seed)
    recorders = {name: StepRecorder(case, *built[name], batches, is_shardwise(name)) for name in names}

    bar = _progress_bar(case, len(names) * (warmup + steps + 1)) if progress and rank == 0 else None
    on_step = None
    if bar is not None:
        def on_step(name: str) -> None:
            bar.set_postfix_str(name, refresh=False)
            bar.update(1)
    seconds = interleaved_timing({name: r.step for name, r in recorders.items()}, repeats=steps, warmup=warmup,
                                 barrier=dist.barrier, on_step=on_step, block=block)
    held = {}
    for name, recorder in recorders.items():
        held[name] = recorder.measured_step()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.set_postfix_str("parity check")
    reference = full_state(baseline, built[baseline][0])
    differences = {name: max_abs_difference(full_state(name, built[name][0]), reference) for name in names}
    if bar is not None:
        bar.close()
    return {
        "psi": parameter_count(initial),
        "kept": {name: kept_for_backward(name, initial) for name in names},
        "seconds": seconds,
        "phases": {name: r.clock.last(steps) for name, r in recorders.items()},
        "losses": {name: [loss.item() for loss in r.losses] for name, r in recorders.items()},
        "comm": {name: r.comm_log[warmup:] for name, r in recorders.items() if r.comm_log is not None},
        "faults": {name: r.faults[warmup:] for name, r in recorders.items()},
        "model_states": held,
        "buffer_bytes": {name: buffer_bytes(built[name][0]) for name in names},
        "param_diff": differences,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def bench_rank(config: BenchConfig) -> dict | None:
    """What each rank of `shardwise bench`'s interleaved launch runs; rank 0 returns every rank's
    measurements (summarised in the launching process, see summary.py)."""
    mesh = init_device_mesh("cpu", (dist.get_world_size(),)) if "torch_fsdp2" in config.configs else None
    mine = measure_on_rank(config.case(), config.configs, config.steps, config.warmup, config.seed,
                           config.baseline, mesh, progress=config.progress, block=config.block)
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    if dist.get_rank() != 0:
        return None
    return {"per_rank": everyone, "threads_per_rank": torch.get_num_threads()}


def _progress_bar(case: ModelCase, total: int):
    """tqdm on stderr. With a thread lock: tqdm's default also makes a multiprocessing lock, a
    named semaphore that a rank ended by its launcher leaves behind (resource_tracker warns)."""
    import threading

    from tqdm.auto import tqdm

    tqdm.set_lock(threading.RLock())
    return tqdm(total=total, desc=f"bench {case.name} x{dist.get_world_size()}", unit="step",
                file=sys.stderr, dynamic_ncols=True)
