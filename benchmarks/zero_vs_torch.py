"""shardwise ZeRO stages 1-3 against PyTorch's DDP, ZeroRedundancyOptimizer and FSDP2, in one launch.

    python benchmarks/zero_vs_torch.py [--model mlp|gpt|both] [--steps 20] [--warmup 3] [--json PATH] [--tiny]

The measurement is `shardwise bench`'s (`shardwise.bench`: see runner.py for what one rank does,
variants.py for the seven configurations, [Note: interleaved timing] in timing.py). This script
keeps its own interface on top of it: both models in one launch, the shardwise configurations
named sw_ddp, sw_zero1, sw_zero2, sw_zero3 in its JSON, and the issue's speed targets checked.
"""

from __future__ import annotations

import argparse
import platform
import sys
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

import shardwise as sw
from _args import parse_bench_args, write_report
from shardwise.bench.cases import MODEL_KINDS, model_case
from shardwise.bench.config import BASELINE, CONFIG_NAMES, SHARDWISE_CONFIGS
from shardwise.bench.report import markdown_table
from shardwise.bench.runner import measure_on_rank
from shardwise.bench.summary import PARAM_ATOL, summarize_configs

MODELS = MODEL_KINDS
SCRIPT_NAMES = {name: (f"sw_{name}" if name in SHARDWISE_CONFIGS else name) for name in CONFIG_NAMES}
VARIANTS = tuple(SCRIPT_NAMES.values())
TARGET_RATIOS = {"sw_zero1": 1.05, "sw_zero2": 1.10, "sw_zero3": 1.30}  # max step time / PyTorch DDP's (the issue)
PARAM_AGREEMENT_ATOL = PARAM_ATOL


@dataclass(frozen=True)
class BenchConfig:
    models: tuple[str, ...]
    steps: int
    warmup: int
    tiny: bool
    seed: int = 0


BLOCK = 5  # consecutive steps per configuration per round ([Note: interleaved timing])


def run_rank(config: BenchConfig) -> dict | None:
    """What each launched rank runs: every model's measurements; rank 0 returns every rank's."""
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    gathered = {}
    for name in config.models:
        mine = measure_on_rank(model_case(name, config.tiny), CONFIG_NAMES, config.steps, config.warmup,
                               config.seed, BASELINE, mesh, block=BLOCK)
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, mine)
        gathered[name] = everyone
    environment = {"threads_per_rank": torch.get_num_threads(), "world_size": dist.get_world_size()}
    return {"environment": environment, "per_rank": gathered} if dist.get_rank() == 0 else None


def model_result(name: str, per_rank: list[dict], tiny: bool) -> tuple[dict, dict]:
    """(this script's JSON for one model, `shardwise bench`'s report shape for its table)."""
    entries = summarize_configs(per_rank, CONFIG_NAMES, BASELINE)
    for entry in entries.values():
        entry["peak_rss_bytes"] = [r["peak_rss_bytes"] for r in per_rank]  # one process for all: see [Note: peak RSS]
    table_report = {"baseline": BASELINE, "configs": entries}
    variants = {}
    for config_name, entry in entries.items():
        variant = {**entry, "ratio_to_torch_ddp": entry["ratio_to_baseline"],
                   "params_agree": entry["max_abs_param_diff"] <= PARAM_AGREEMENT_ATOL}
        if entry["predicted"] is not None:
            variant["ideal_comm_bytes_per_step"] = entry["predicted"]["comm_bytes_per_step"]
        variants[SCRIPT_NAMES[config_name]] = variant
    case = model_case(name, tiny)
    result = {"description": case.description, "params": per_rank[0]["psi"], "variants": variants,
              "targets": check_targets(variants)}
    return result, table_report


def check_targets(results: dict) -> list[dict]:
    """The issue's targets: ratios to PyTorch DDP, and stage 3 faster than FSDP2."""
    checks = [
        {"target": f"{name} <= {limit:.2f}x torch_ddp", "value": results[name]["ratio_to_torch_ddp"],
         "met": results[name]["ratio_to_torch_ddp"] <= limit}
        for name, limit in TARGET_RATIOS.items()
    ]
    zero3_over_fsdp2 = results["sw_zero3"]["median_ms"] / results["torch_fsdp2"]["median_ms"]
    checks.append({"target": "sw_zero3 faster than torch_fsdp2", "value": zero3_over_fsdp2, "met": zero3_over_fsdp2 < 1.0})
    return checks


def parse_args(argv=None) -> argparse.Namespace:
    return parse_bench_args(__doc__.split("\n\n")[0], steps=20, tiny_steps=3, argv=argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    models = MODELS if args.model == "both" else (args.model,)
    config = BenchConfig(models=models, steps=args.steps, warmup=args.warmup, tiny=args.tiny, seed=args.seed)
    measured = sw.launch(run_rank, args.nproc, args=(config,), timeout_s=900)[0]
    results, tables = {}, {}
    for name, per_rank in measured["per_rank"].items():
        results[name], tables[name] = model_result(name, per_rank, args.tiny)
    report = {
        "benchmark": "zero_vs_torch",
        **asdict(config),
        "nproc": args.nproc,
        **measured["environment"],
        "torch_version": torch.__version__,
        "shardwise_version": sw.__version__,
        "machine": platform.machine(),
        "configs": results,
    }
    print(
        f"{args.nproc} ranks x {report['threads_per_rank']} thread(s); median over {args.steps} interleaved steps "
        f"after {args.warmup} warm-up; step time = slowest rank; IQR = Q3 - Q1; model states after "
        "optimizer.step(), before zero_grad(); peak RSS: the one shared process (max over configurations)"
    )
    for name, result in results.items():
        print(f"\n### {name}: {result['description']}, {result['params']:,} parameters\n")
        print(markdown_table(tables[name]))
        print()
        for check in result["targets"]:
            print(f"- {check['target']}: {check['value']:.3f} -> {'met' if check['met'] else 'MISSED'}")
        for variant, entry in result["variants"].items():
            if not entry["params_agree"]:
                print(
                    f"WARNING: {name}: {variant} parameters differ from torch_ddp's by {entry['max_abs_param_diff']:.2e} "
                    f"(> {PARAM_AGREEMENT_ATOL:g}) after identical training",
                    file=sys.stderr,
                )
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
