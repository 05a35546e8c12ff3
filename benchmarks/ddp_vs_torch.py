"""shardwise DDP against PyTorch's DistributedDataParallel, side by side in one launch.

    python benchmarks/ddp_vs_torch.py [--model mlp|gpt|both] [--steps 30] [--warmup 3] [--json PATH] [--tiny]

For each model, every rank builds three copies of one initial model: wrapped by `sw.wrap(...,
strategy="ddp")`, wrapped by `torch.nn.parallel.DistributedDataParallel`, and a plain local copy
that trains on the same per-rank batch with no communication at all (the floor: what a step
costs when gradients need not be averaged). Each copy has its own optimizer. Full training steps
(forward, backward, optimizer.step, zero_grad) of the three are interleaved, with a barrier
before each, and the per-step time is the slowest rank's (see [Note: interleaved timing] in
shardwise/bench/timing.py; the models are `shardwise.bench.cases`). The shardwise and PyTorch
copies start equal and see the same batches, so their parameters must still agree at the end;
the max abs difference is reported as a sanity check.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import shardwise as sw
from _args import parse_bench_args, write_report
from shardwise.bench.cases import DISTINCT_BATCHES, MODEL_KINDS, ModelCase, model_case
from shardwise.bench.timing import interleaved_timing, median, paired_ratios, slowest_rank, summarize

VARIANTS = ("shardwise", "torch_ddp", "local")  # "local": plain model, same per-rank work, no communication
MODELS = MODEL_KINDS
PARAM_AGREEMENT_ATOL = 1e-5  # shardwise vs PyTorch after the run: same start, same data, same averaging


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...]
    steps: int
    warmup: int
    tiny: bool
    seed: int = 0


def _training_step(case: ModelCase, model, optimizer, batches):
    """A closure doing one full step on the next batch of the cycle."""
    position = [0]

    def step() -> None:
        x, y = batches[position[0] % len(batches)]
        position[0] += 1
        loss = case.loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def _max_abs_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    with torch.no_grad():
        return max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters()))


def bench_model_on_rank(case: ModelCase, config: BenchConfig) -> dict:
    """This rank's part for one model: build the three copies, time them interleaved."""
    rank = dist.get_rank()
    torch.manual_seed(config.seed)
    initial = case.build()
    sw_module, torch_module, local_model = (copy.deepcopy(initial) for _ in VARIANTS)

    sw_model, sw_optimizer = sw.wrap(sw_module, case.optimizer(sw_module), strategy=sw.DDP())
    torch_model = DistributedDataParallel(torch_module)
    torch_optimizer = case.optimizer(torch_module)
    local_optimizer = case.optimizer(local_model)

    batches = case.batches(rank, DISTINCT_BATCHES, config.seed)
    steps = {
        "shardwise": _training_step(case, sw_model, sw_optimizer, batches),
        "torch_ddp": _training_step(case, torch_model, torch_optimizer, batches),
        "local": _training_step(case, local_model, local_optimizer, batches),
    }
    sw.reset_comm_stats()
    # Blocks of consecutive steps per variant, as a job trains ([Note: interleaved timing]).
    seconds = interleaved_timing(steps, repeats=config.steps, warmup=config.warmup, barrier=dist.barrier, block=5)
    sw_bytes_per_step = sw.comm_stats()["total"] / (config.warmup + config.steps)

    # A step of a synchronous job lasts as long as its slowest rank.
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, seconds)
    step_seconds = {name: slowest_rank([per_rank[name] for per_rank in everyone]) for name in VARIANTS}
    difference = torch.tensor(_max_abs_difference(sw_module, torch_module))
    dist.all_reduce(difference, op=dist.ReduceOp.MAX)

    summary = {name: summarize(step_seconds[name]) for name in VARIANTS}
    sw_ms, torch_ms = summary["shardwise"]["median_ms"], summary["torch_ddp"]["median_ms"]
    return {
        "description": case.description,
        "params": sum(p.numel() for p in initial.parameters()),
        **summary,
        "ratio_shardwise_over_torch": sw_ms / torch_ms,
        "paired_ratio_median": median(paired_ratios(step_seconds["shardwise"], step_seconds["torch_ddp"])),
        "ratio_torch_over_local": torch_ms / summary["local"]["median_ms"],
        "max_abs_param_diff": difference.item(),
        "params_agree": difference.item() <= PARAM_AGREEMENT_ATOL,
        "shardwise_comm_bytes_per_step": sw_bytes_per_step,
    }


def run_rank(config: BenchConfig) -> dict | None:
    """What each launched rank runs; rank 0 returns the results."""
    results = {}
    for name in config.models:
        results[name] = bench_model_on_rank(model_case(name, config.tiny), config)
    environment = {"threads_per_rank": torch.get_num_threads(), "world_size": dist.get_world_size()}
    return {"environment": environment, "configs": results} if dist.get_rank() == 0 else None


def markdown_table(configs: dict) -> str:
    header = (
        "| model | shardwise ms (IQR) | PyTorch DDP ms (IQR) | local, no comm ms (IQR) "
        "| shardwise/PyTorch | paired ratio | max abs param diff |"
    )
    lines = [header, "|" + "---|" * 7]
    for result in configs.values():
        cells = [result["description"]]
        for name in VARIANTS:
            cells.append(f"{result[name]['median_ms']:.1f} ({result[name]['iqr_ms']:.1f})")
        cells += [
            f"{result['ratio_shardwise_over_torch']:.3f}",
            f"{result['paired_ratio_median']:.3f}",
            f"{result['max_abs_param_diff']:.2e}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    return parse_bench_args(__doc__.split("\n\n")[0], steps=30, tiny_steps=5, argv=argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    models = MODELS if args.model == "both" else (args.model,)
    config = BenchConfig(models=models, steps=args.steps, warmup=args.warmup, tiny=args.tiny, seed=args.seed)
    results = sw.launch(run_rank, args.nproc, args=(config,), timeout_s=900)[0]
    report = {
        "benchmark": "ddp_vs_torch",
        **asdict(config),
        "nproc": args.nproc,
        **results["environment"],
        "torch_version": torch.__version__,
        "shardwise_version": sw.__version__,
        "machine": platform.machine(),
        "configs": results["configs"],
    }
    print(
        f"{args.nproc} ranks x {report['threads_per_rank']} thread(s); median over {args.steps} interleaved steps "
        f"after {args.warmup} warm-up; step time = slowest rank; IQR = Q3 - Q1"
    )
    print(markdown_table(results["configs"]))
    for name, result in results["configs"].items():
        if not result["params_agree"]:
            print(
                f"WARNING: {name}: shardwise and PyTorch parameters differ by {result['max_abs_param_diff']:.2e} "
                f"(> {PARAM_AGREEMENT_ATOL:g}) after identical training",
                file=sys.stderr,
            )
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
