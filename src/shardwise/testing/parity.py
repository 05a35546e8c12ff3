"""The parity harness (docs/api.md, Parity): N ranks on equal slices of a global batch must train to
the parameters one process reaches on the whole batch.

`run_reference` trains a case in this process; `train_on_rank` is what each launched rank runs;
`check_parity` launches a world size once for a list of (case, strategy, accumulation) runs and
compares each against its reference. One launch serves many runs, since starting ranks is the
expensive part.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .. import comm
from ..runtime import launch
from ..data.sampler import rank_slice
from ..runtime import env, progress
from ..strategy.state import full_state_dict
from ..api import wrap
from ..vocab import as_dtype
from .cases import CASES, GLOBAL_BATCH

RTOL, ATOL = 1e-5, 1e-6


@dataclass(frozen=True)
class Run:
    case: str
    strategy: object = "ddp"
    accumulation: int = 1
    steps: int = 5
    precision: str = "fp32"
    """fp32, or bf16: forward and backward under bf16 autocast, in the reference as on the ranks."""

    def label(self) -> str:
        suffix = "" if self.precision == "fp32" else f"/{self.precision}"
        return f"{self.case}/{self.strategy}/accum{self.accumulation}{suffix}"


def computing(run: Run):
    """The context `run`'s forward and backward run in: bf16 autocast, or nothing for fp32."""
    if run.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cpu", dtype=as_dtype(run.precision))


def run_reference(run: Run, pieces: int = 1) -> dict:
    """One process, the whole global batch each step; with `pieces` > 1 its gradient summed over
    that many equal consecutive parts (gradient accumulation), each part's loss weighted 1/pieces."""
    case = CASES[run.case]
    torch.manual_seed(0)
    model = case.build()
    optimizer = case.optimizer(model)
    losses = []
    for step in range(run.steps):
        x, y = case.batch(step)
        with computing(run):
            if pieces == 1:
                loss = case.loss(model, x, y)
                loss.backward()
            else:
                loss = torch.zeros(())
                for xs, ys in zip(x.chunk(pieces), y.chunk(pieces)):
                    part = case.loss(model, xs, ys) / pieces
                    part.backward()
                    loss = loss + part.detach()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return {"losses": losses, "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def train_on_rank(run: Run) -> dict:
    """This rank's part: its slice of each global batch, split into `accumulation` micro-batches."""
    case = CASES[run.case]
    torch.manual_seed(env.rank())  # ranks start different; wrap must make them equal
    model = case.build()
    model, optimizer = wrap(model, case.optimizer(model), strategy=run.strategy)
    rank, world = env.rank(), env.world_size()  # after wrap: a parameter server's workers only
    local_losses, step_bytes = [], []
    for step in range(run.steps):
        x, y = case.batch(step)
        mine = rank_slice(GLOBAL_BATCH, rank, world)
        x, y = x[mine], y[mine]
        comm.reset_comm_stats()
        total = 0.0
        for micro, (mx, my) in enumerate(zip(x.chunk(run.accumulation), y.chunk(run.accumulation))):
            last = micro == run.accumulation - 1
            context = model.no_sync() if not last else contextlib.nullcontext()
            with context, computing(run):
                loss = case.loss(model, mx, my) / run.accumulation
                loss.backward()
            total += loss.item()
        optimizer.step()
        optimizer.zero_grad()
        step_bytes.append(comm.comm_stats()["total"])
        local_losses.append(total)
    return {"losses": local_losses, "state": full_state_dict(model), "step_bytes": step_bytes}


def _run_all_on_rank(runs: list[Run]) -> list[dict | None]:
    """Each run in turn; a parameter server's server ranks give None for the runs they serve."""
    results = []
    for run in runs:
        try:
            results.append(train_on_rank(run))
        except progress.ServerFinished:
            results.append(None)
        progress.run_finishers()
        env.set_training_view(None, None, None)
    return results


def check_parity(runs: list[Run], world_size: int, timeout_s: float = 240) -> list[str]:
    """Launch `world_size` ranks once for all runs; return a list of mismatches (empty = parity)."""
    per_rank = launch(_run_all_on_rank, world_size, args=(runs,), timeout_s=timeout_s)
    problems = []
    for index, run in enumerate(runs):
        reference = run_reference(run)
        results = [rank_results[index] for rank_results in per_rank if rank_results[index] is not None]
        problems += compare(run, reference, results)
    return problems


def compare(run: Run, reference: dict, results: list[dict]) -> list[str]:
    """Parameters on every rank equal the reference's; the mean of rank losses equals its loss."""
    problems = []
    world = len(results)
    mean_losses = [sum(r["losses"][s] for r in results) / world for s in range(run.steps)]
    if not torch.allclose(torch.tensor(mean_losses), torch.tensor(reference["losses"]), rtol=RTOL, atol=ATOL):
        problems.append(f"{run.label()} N={world}: losses {mean_losses} != reference {reference['losses']}")
    for rank, result in enumerate(results):
        if set(result["state"]) != set(reference["state"]):
            problems.append(f"{run.label()} N={world} rank {rank}: state keys differ")
            continue
        for key, expected in reference["state"].items():
            got = result["state"][key]
            if got.shape != expected.shape or not torch.allclose(got, expected, rtol=RTOL, atol=ATOL):
                diff = (got - expected).abs().max().item() if got.shape == expected.shape else "shape"
                problems.append(f"{run.label()} N={world} rank {rank}: '{key}' differs (max abs diff {diff})")
    return problems
