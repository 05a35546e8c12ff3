"""Memory per rank of shardwise DDP and ZeRO stages 1-3 on a 100M-parameter model, against ZeRO's formulas.

    python benchmarks/zero_memory.py [--nproc 4] [--width 2048 --depth 24 | --params-million 100]
                                     [--steps 3] [--mmap-threshold BYTES] [--json PATH] [--tiny]

Each strategy runs in its own `sw.launch` (fresh processes), so a process's peak RSS belongs to
one strategy. Every rank first takes one step of the strategy on a throwaway tiny model (see
`warm_up`), then notes its RSS, builds the model from the same seed (the whole model, in
fp32, on every rank: what `sw.wrap` expects), wraps it with Adam, trains a few steps on a small
random batch, and notes its RSS along the way, its peak RSS and `sw.model_state_bytes` (taken
after the last `optimizer.step()`, before `zero_grad()`).

[Note: what RSS shows]
"model-state part" = peak RSS - RSS before the model was built: everything the model, its
wrapping and training added at their high point, activations included (small here: the batch is
a few rows). Two things make it differ from the model-state bytes the strategy holds:
- The model is first built whole on every rank and only then sharded by `wrap`, so the peak
  includes the full fp32 model (4Ψ bytes) plus what `wrap` allocates while it still exists.
  Under stage 3, where the steady state is only 16Ψ/N, that moment can dominate the peak.
  Hence two more columns: "peak by end of wrap" (the high-water mark when `wrap` returns, minus
  RSS before the model: if it is below the final peak, the high point came in training, not
  from the whole model built first) and "after wrap" (current RSS after training minus RSS
  before the model: what stays).
- Memory freed by PyTorch goes back to glibc's malloc, which returns large blocks (mmap) to the
  OS at once but keeps smaller ones (heap) for reuse, and raises its mmap threshold (up to 32 MiB)
  after each large free. "after trim" is the current RSS after `malloc_trim(0)`, which hands
  unused heap back: the closest RSS gets to what is live. `--mmap-threshold BYTES` sets glibc's
  MALLOC_MMAP_THRESHOLD_ in the ranks (a fixed threshold: every block above it is mmapped and
  returned on free), so that the peak too shows live memory rather than what malloc retained.

ZeRO's formulas for Adam all in fp32 (no mixed precision), Ψ parameters, N ranks (Rajbhandari
et al., SC20, §5): DDP 16Ψ; stage 1 8Ψ + 8Ψ/N; stage 2 4Ψ + 12Ψ/N; stage 3 16Ψ/N plus what it
holds to gather and reduce units: shardwise keeps fixed gather slots and reused gradient and
receive buffers, a few units' worth (see [Note: buffer reuse] in zero/buffers.py), reported by
the engine as `buffer_bytes`.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from _args import write_report

import shardwise as sw
from shardwise.models import MLP
from shardwise.runtime import heap

STRATEGIES = ("ddp", "zero1", "zero2", "zero3")
STAGE3_MAX_FRACTION_OF_DDP = 0.35  # the issue: stage 3's model-state part at most 0.35x DDP's
MB = 1e6
WIDTH = 2048  # --params-million picks the depth at this width


@dataclass(frozen=True)
class MemoryConfig:
    strategy: str
    width: int
    depth: int
    steps: int
    batch: int
    seed: int = 0


def current_rss_bytes() -> int:
    """Resident set size now (VmRSS of /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_bytes() -> int:
    """High-water mark of the resident set since the process started (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def trimmed_rss_bytes() -> int:
    """Current RSS after asking glibc to return its unused heap (see [Note: what RSS shows])."""
    heap.trim()
    return current_rss_bytes()


def parameter_count(width: int, depth: int) -> int:
    return depth * (width * width + width)


def formula_bytes(strategy: str, params: int, world_size: int, buffer_bytes: int) -> float:
    """ZeRO's model-state bytes per rank for fp32 Adam (§5; stage 3 plus its gather/reduce buffers)."""
    n = world_size
    if strategy == "ddp":
        return 16 * params
    if strategy == "zero1":
        return 8 * params + 8 * params / n
    if strategy == "zero2":
        return 4 * params + 12 * params / n
    return 16 * params / n + buffer_bytes


def warm_up(strategy: str) -> None:
    """One step of the strategy on a throwaway tiny model, so that the RSS taken before the real
    model already includes what first use costs whatever the model: code pages of the libraries,
    and the modules imported lazily (the first optimizer built imports torch._dynamo, ~80 MB)."""
    model = MLP(width=16, depth=2)
    model, optimizer = sw.wrap(model, torch.optim.Adam(model.parameters(), lr=1e-3), strategy=strategy)
    F.mse_loss(model(torch.randn(2, 16)), torch.randn(2, 16)).backward()
    optimizer.step()
    optimizer.zero_grad()
    del model, optimizer
    gc.collect()


def run_rank(config: MemoryConfig) -> dict:
    """One rank of one strategy: RSS at each point, peak, and the bytes the strategy holds."""
    warm_up(config.strategy)
    rss = {"before_model": current_rss_bytes()}
    peak = {"before_model": peak_rss_bytes()}
    torch.manual_seed(config.seed)
    model = MLP(width=config.width, depth=config.depth)
    rss["after_build"], peak["after_build"] = current_rss_bytes(), peak_rss_bytes()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model, optimizer = sw.wrap(model, optimizer, strategy=config.strategy)
    rss["after_wrap"], peak["after_wrap"] = current_rss_bytes(), peak_rss_bytes()

    generator = torch.Generator().manual_seed(1000 * config.seed + dist.get_rank())
    held = 0
    for step in range(config.steps):
        x = torch.randn(config.batch, config.width, generator=generator)
        y = torch.randn(config.batch, config.width, generator=generator)
        F.mse_loss(model(x), y).backward()
        optimizer.step()
        if step == config.steps - 1:
            held = sw.model_state_bytes(model, optimizer)
            buffers = model.engine.buffer_bytes() if hasattr(model, "engine") else 0
        optimizer.zero_grad()
    rss["after_training"], peak["after_training"] = current_rss_bytes(), peak_rss_bytes()
    rss["after_trim"] = trimmed_rss_bytes()
    return {"rank": dist.get_rank(), "rss_bytes": rss, "peak_rss_bytes": peak, "model_state_bytes": held,
            "buffer_bytes": buffers}


def summarize_rank(strategy: str, measured: dict, params: int, world_size: int) -> dict:
    before = measured["rss_bytes"]["before_model"]
    peak = measured["peak_rss_bytes"]["after_training"]
    return {
        **measured,
        "peak_rss": peak,
        "model_state_part_peak": peak - before,
        "model_state_part_peak_by_end_of_wrap": measured["peak_rss_bytes"]["after_wrap"] - before,
        "model_state_part_after_wrap": measured["rss_bytes"]["after_training"] - before,
        "model_state_part_after_trim": measured["rss_bytes"]["after_trim"] - before,
        "formula_bytes": formula_bytes(strategy, params, world_size, measured["buffer_bytes"]),
    }


def markdown_table(results: dict) -> str:
    header = (
        "| strategy | rank | peak RSS MB | model-state part: peak MB | peak by end of wrap MB | after wrap (current) MB "
        "| after trim MB | model_state_bytes MB | formula MB |"
    )
    lines = [header, "|" + "---|" * 9]
    for strategy, per_rank in results.items():
        for r in per_rank:
            cells = [
                strategy,
                str(r["rank"]),
                f"{r['peak_rss'] / MB:.0f}",
                f"{r['model_state_part_peak'] / MB:.0f}",
                f"{r['model_state_part_peak_by_end_of_wrap'] / MB:.0f}",
                f"{r['model_state_part_after_wrap'] / MB:.0f}",
                f"{r['model_state_part_after_trim'] / MB:.0f}",
                f"{r['model_state_bytes'] / MB:.0f}",
                f"{r['formula_bytes'] / MB:.0f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stage3_check(results: dict) -> dict:
    """Stage 3's model-state part against DDP's (worst rank of each), peak and after wrap."""
    def worst(strategy: str, key: str) -> int:
        return max(r[key] for r in results[strategy])

    peak_ratio = worst("zero3", "model_state_part_peak") / worst("ddp", "model_state_part_peak")
    after_ratio = worst("zero3", "model_state_part_after_wrap") / worst("ddp", "model_state_part_after_wrap")
    return {
        "limit": STAGE3_MAX_FRACTION_OF_DDP,
        "peak_ratio": peak_ratio,
        "peak_met": peak_ratio <= STAGE3_MAX_FRACTION_OF_DDP,
        "after_wrap_ratio": after_ratio,
        "after_wrap_met": after_ratio <= STAGE3_MAX_FRACTION_OF_DDP,
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=None, help="ranks (default 4, tiny 2)")
    parser.add_argument("--width", type=int, default=None, help=f"MLP width (default {WIDTH}, tiny 256)")
    parser.add_argument("--depth", type=int, default=None, help="MLP depth (default 24, tiny 4)")
    parser.add_argument("--params-million", type=float, default=None,
                        help=f"pick the depth for about this many million parameters at width {WIDTH}")
    parser.add_argument("--steps", type=int, default=3, help="training steps per strategy (default 3)")
    parser.add_argument("--batch", type=int, default=8, help="rows per rank per step (default 8)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default all four)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mmap-threshold", type=int, default=None, metavar="BYTES",
                        help="set glibc's MALLOC_MMAP_THRESHOLD_ in the ranks (e.g. 1048576); default: glibc's own")
    parser.add_argument("--tiny", action="store_true", help="a small model on 2 ranks: a smoke test")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the numbers here")
    args = parser.parse_args(argv)
    if args.params_million is not None:
        if args.depth is not None:
            parser.error("give --params-million or --depth, not both")
        args.width = args.width or WIDTH
        args.depth = max(1, round(args.params_million * 1e6 / parameter_count(args.width, 1)))
    args.nproc = args.nproc or (2 if args.tiny else 4)
    args.width = args.width or (256 if args.tiny else WIDTH)
    args.depth = args.depth or (4 if args.tiny else 24)
    args.strategies = tuple(s for s in args.strategies.split(",") if s)
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategy {unknown[0]!r}; choose from {', '.join(STRATEGIES)}")
    if min(args.nproc, args.width, args.depth, args.steps, args.batch) < 1:
        parser.error("--nproc, --width, --depth, --steps and --batch must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    params = parameter_count(args.width, args.depth)
    if args.mmap_threshold is not None:  # read by glibc at start-up of each spawned rank
        os.environ["MALLOC_MMAP_THRESHOLD_"] = str(args.mmap_threshold)
    results = {}
    for strategy in args.strategies:  # one launch each: a fresh peak RSS per strategy
        config = MemoryConfig(strategy, args.width, args.depth, args.steps, args.batch, args.seed)
        per_rank = sw.launch(run_rank, args.nproc, args=(config,), timeout_s=900)
        results[strategy] = [summarize_rank(strategy, r, params, args.nproc) for r in per_rank]
    check = stage3_check(results) if {"ddp", "zero3"} <= set(results) else None
    report = {
        "benchmark": "zero_memory",
        "nproc": args.nproc,
        "width": args.width,
        "depth": args.depth,
        "params": params,
        "steps": args.steps,
        "batch": args.batch,
        "tiny": args.tiny,
        "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"),
        "torch_version": torch.__version__,
        "shardwise_version": sw.__version__,
        "machine": platform.machine(),
        "strategies": results,
        "stage3_check": check,
    }
    print(
        f"MLP {args.depth}x{args.width}, {params / 1e6:.1f}M parameters (Ψ), fp32 Adam, {args.nproc} ranks, "
        f"{args.steps} steps of {args.batch} rows/rank; MALLOC_MMAP_THRESHOLD_="
        f"{os.environ.get('MALLOC_MMAP_THRESHOLD_', 'unset (glibc default)')}; "
        "model-state part = RSS minus RSS before the model (see [Note: what RSS shows])"
    )
    print(markdown_table(results))
    if check is not None:
        for when in ("peak", "after_wrap"):
            verdict = "met" if check[f"{when}_met"] else "MISSED"
            print(f"- zero3 / ddp model-state part ({when.replace('_', ' ')}): {check[f'{when}_ratio']:.3f} "
                  f"(limit {check['limit']}) -> {verdict}")
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
