"""Entry point of the `shardwise` command."""

from __future__ import annotations

import sys

from ..errors import ConfigError, TrainingDiverged, WorkerError
from ..runtime.procs import Interrupted, ending_on_signals
from . import bench, federate, plan, run, sample, solve, train
from .parser import USER_ERROR, OneLineParser


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="shardwise", description="Distributed training and optimization on PyTorch.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for command in (train, sample, run, plan, bench, solve, federate):
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return USER_ERROR
    try:
        with ending_on_signals():  # every rank is stopped on the way out: [Note: signals]
            return args.run(args)
    except Interrupted as exc:
        print(f"{exc}: every rank stopped", file=sys.stderr)
        return 128 + exc.signum
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR
    except WorkerError as exc:
        original = getattr(exc, "original", None)
        if isinstance(original, ConfigError):
            print(f"error: {original}", file=sys.stderr)
            return USER_ERROR
        if isinstance(original, TrainingDiverged):
            print(f"error: {original}", file=sys.stderr)
            return 1
        print(f"error: {exc}", file=sys.stderr)
        hint = getattr(exc, "resume_hint", None)
        if hint:
            print(f"resume from the last checkpoint with: {hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
