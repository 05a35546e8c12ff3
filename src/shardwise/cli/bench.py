"""`shardwise bench`: PyTorch DDP, ZeroRedundancyOptimizer, FSDP2 and shardwise's strategies, side by side."""

from __future__ import annotations

import argparse
import sys
import time

from ..bench.config import COMPRESSED_CONFIGS, CONFIG_NAMES, RSS_MODES, BenchConfig, parse_configs, with_compression
from ..errors import ConfigError
from ..paths import check_folder_writable, check_writable
from .parser import non_negative_int, positive_int, positive_real

DEFAULTS = BenchConfig()


def config_list(text: str) -> tuple[str, ...]:
    """parse_configs, its message kept (argparse would replace a ValueError's with a generic one)."""
    try:
        return CONFIG_NAMES if text == "all" else parse_configs(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time PyTorch's and shardwise's data-parallel strategies side by side (default: ~1 minute)",
        description="Interleaved step times, memory per rank (measured and predicted), bytes per step and a parity "
                    "check against PyTorch DDP; writes bench.json, step_time.png and memory.png to --out.")
    p.add_argument("--model", default=DEFAULTS.model, choices=("mlp", "gpt"),
                   help="mlp: 8.4M-parameter MLP (or --width/--depth); gpt: the built-in GPT")
    p.add_argument("--width", type=positive_int, default=None, help="MLP width (with --depth: an MLP of that size)")
    p.add_argument("--depth", type=positive_int, default=None, help="MLP depth, Linear + GELU blocks")
    p.add_argument("--configs", type=config_list, default=None,
                   help=f"comma-separated, in timing order, from: {', '.join(CONFIG_NAMES)} (all of these: 'all'), "
                        f"and {', '.join(COMPRESSED_CONFIGS)} (default: all)")
    p.add_argument("--compress", action="store_true",
                   help="add the compressed and periodic variants beside PyTorch's comm hooks and post-local SGD "
                        "(default configurations then: torch_ddp, local, ddp), with bytes per step, step time and "
                        "the loss after the same steps")
    p.add_argument("--nproc", type=positive_int, default=DEFAULTS.nproc, help="local ranks")
    p.add_argument("--steps", type=positive_int, default=DEFAULTS.steps, help="timed steps per configuration")
    p.add_argument("--warmup", type=non_negative_int, default=DEFAULTS.warmup, help="untimed steps per configuration first")
    p.add_argument("--block", type=positive_int, default=DEFAULTS.block,
                   help="consecutive steps of one configuration per round of the interleaved run (1: alternate every step)")
    p.add_argument("--batch", type=positive_int, default=None, help="per rank: MLP rows (64) or GPT sequences (16)")
    p.add_argument("--seed", type=non_negative_int, default=DEFAULTS.seed, help="seed of the model and the data")
    p.add_argument("--rss", default=DEFAULTS.rss, choices=RSS_MODES,
                   help="separate: also launch each configuration alone, alternated, for its peak RSS and "
                        "step time in consecutive steps; shared: the interleaved run only")
    p.add_argument("--out", default=None, help="output folder (default runs/bench-<time>)")
    p.add_argument("--json", default=None, metavar="PATH", help="JSON report path (default OUT/bench.json)")
    p.add_argument("--timeout", type=positive_real, default=DEFAULTS.timeout_s, help="seconds one launch may take")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=main)


def main(args) -> int:
    started = time.perf_counter()
    check_writable(args.json, "--json")
    check_folder_writable(args.out, "--out")
    configs = with_compression(args.configs) if args.compress else (args.configs or CONFIG_NAMES)
    config = BenchConfig(
        model=args.model, width=args.width, depth=args.depth, configs=configs, nproc=args.nproc,
        steps=args.steps, warmup=args.warmup, block=args.block, batch=args.batch, seed=args.seed, rss=args.rss, out_dir=args.out,
        json_path=args.json, progress=not args.no_progress, timeout_s=args.timeout,
    )
    from ..bench.job import run_bench  # imports FSDP2 and friends: only when benchmarking
    from ..bench.report import compression_table, continuous_table, markdown_table, preamble, warnings

    report = run_bench(config)
    print(preamble(report))
    print()
    print(markdown_table(report))
    print()
    print(continuous_table(report))
    print()
    if any(name in COMPRESSED_CONFIGS for name in report["configs"]):
        print(compression_table(report))
        print()
    for line in warnings(report):
        print(line, file=sys.stderr)
    files = report["files"]
    print(f"wrote {files['json']}, {files['step_time_png']}, {files['memory_png']}")
    print(f"wall time: {time.perf_counter() - started:.1f} s")
    return 0
