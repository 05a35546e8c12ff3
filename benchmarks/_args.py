"""The command line the side-by-side benchmark scripts share."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shardwise.bench.cases import MODEL_KINDS


def parse_bench_args(description: str, steps: int, tiny_steps: int, argv=None) -> argparse.Namespace:
    """--model, --steps (default `steps`, `tiny_steps` with --tiny), --warmup, --nproc, --seed, --tiny, --json."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", choices=(*MODEL_KINDS, "both"), default="both")
    parser.add_argument("--steps", type=int, default=None, help=f"timed steps per configuration (default {steps}, tiny {tiny_steps})")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per configuration first (default 3, tiny 1)")
    parser.add_argument("--nproc", type=int, default=2, help="ranks (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="very small models and few steps: a smoke test")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the numbers here")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = tiny_steps if args.tiny else steps
    if args.warmup is None:
        args.warmup = 1 if args.tiny else 3
    if args.steps < 1 or args.warmup < 0 or args.nproc < 1:
        parser.error("--steps and --nproc must be at least 1, --warmup at least 0")
    return args


def write_report(path: Path | None, report: dict) -> None:
    """Write `report` as indented JSON to `path` (creating its folder); nothing when path is None."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
