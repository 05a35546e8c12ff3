"""`shardwise train`: the built-in GPT on the standard-library corpus, on local ranks."""

from __future__ import annotations

import json

from ..models import GPTConfig
from ..strategy.registry import strategy_names
from ..train import TrainConfig, run_training
from .parser import positive_int

DEFAULTS = TrainConfig()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the built-in GPT (defaults: DDP on 2 ranks, about 2 minutes)",
                              description="Train the built-in character GPT on local ranks and write a run folder "
                                          "(report.json, loss.png, checkpoint/).")
    p.add_argument("--strategy", default=DEFAULTS.strategy, help=f"one of: {', '.join(strategy_names())}")
    p.add_argument("--nproc", type=positive_int, default=DEFAULTS.nproc, help="local ranks")
    p.add_argument("--steps", type=positive_int, default=DEFAULTS.steps, help="optimizer steps")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--global-batch", type=positive_int, default=DEFAULTS.global_batch, help="sequences per step, all ranks")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr)
    p.add_argument("--precision", default=DEFAULTS.precision, help="fp32, bf16 or fp16 (fp16: ZeRO strategies)")
    p.add_argument("--offload", default=DEFAULTS.offload, help="none or cpu (ZeRO strategies)")
    p.add_argument("--servers", type=positive_int, default=DEFAULTS.servers, help="parameter server: server ranks")
    p.add_argument("--mode", default=DEFAULTS.mode, choices=["sync", "async", "ssp"], help="parameter server mode")
    p.add_argument("--staleness", type=int, default=DEFAULTS.staleness, help="parameter server ssp: steps ahead allowed")
    p.add_argument("--slow-worker", type=float, default=DEFAULTS.slow_worker, help="make worker 0 this many times slower")
    p.add_argument("--grad-clip", type=float, default=DEFAULTS.grad_clip, help="global gradient-norm clip (0: off)")
    p.add_argument("--eval-every", type=positive_int, default=DEFAULTS.eval_every)
    p.add_argument("--block-size", type=positive_int, default=DEFAULTS.model.block_size)
    p.add_argument("--layers", type=positive_int, default=DEFAULTS.model.n_layer)
    p.add_argument("--embd", type=positive_int, default=DEFAULTS.model.n_embd)
    p.add_argument("--heads", type=positive_int, default=DEFAULTS.model.n_head)
    p.add_argument("--save-every", type=int, default=DEFAULTS.save_every, help="steps between checkpoints (0: end only)")
    p.add_argument("--resume", default=None, help="run folder (or checkpoint folder) to continue from")
    p.add_argument("--out", default=DEFAULTS.out_dir, help="folder for run folders")
    p.add_argument("--run-dir", default=None, help="exact run folder (default: OUT/<time>-<strategy>-n<nproc>)")
    p.add_argument("--report", default=None, help="also write the JSON report here")
    p.add_argument("--timeout", type=float, default=DEFAULTS.timeout_s, help="seconds a collective may wait")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=main)


def main(args) -> int:
    config = TrainConfig(
        strategy=args.strategy, nproc=args.nproc, steps=args.steps, seed=args.seed, global_batch=args.global_batch,
        lr=args.lr, precision=args.precision, offload=args.offload, grad_clip=args.grad_clip, eval_every=args.eval_every,
        save_every=args.save_every, servers=args.servers, mode=args.mode, staleness=args.staleness,
        slow_worker=args.slow_worker, resume=args.resume, out_dir=args.out, run_dir=args.run_dir,
        report=args.report, progress=not args.no_progress, timeout_s=args.timeout,
        model=GPTConfig(block_size=args.block_size, n_layer=args.layers, n_embd=args.embd, n_head=args.heads),
    )
    report, run_dir = run_training(config)
    final_val = report["val_losses"][-1]["loss"] if report["val_losses"] else float("nan")
    print(json.dumps({
        "run_dir": run_dir, "strategy": report["strategy"], "world_size": report["world_size"],
        "steps": report["steps"], "first_loss": round(report["losses"][0], 4), "final_loss": round(report["losses"][-1], 4),
        "val_loss": round(final_val, 4), "step_time_s": round(report["step_time_s"], 4),
        "tokens_per_s": round(report["tokens_per_s"]), "comm_bytes_per_step": report["comm_bytes_per_step"],
    }))
    print(f"sample from it: shardwise sample {run_dir}")
    return 0
