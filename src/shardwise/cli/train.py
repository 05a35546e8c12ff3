"""`shardwise train`: the built-in GPT on the standard-library corpus, on local ranks."""

from __future__ import annotations

import json

from ..models import GPTConfig
from ..api import strategy_names
from ..train import TrainConfig, run_training
from ..train.config import CheckpointConfig, DataConfig, OptimizationConfig, StrategyConfig
from .parser import non_negative_int, non_negative_real, positive_int, positive_real, real_number

DEFAULTS = TrainConfig()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the built-in GPT (defaults: DDP on 2 ranks, about 2 minutes)",
                              description="Train the built-in character GPT on local ranks and write a run folder "
                                          "(report.json, loss.png, checkpoint/).")
    p.add_argument("--strategy", default=DEFAULTS.strategy.name, help=f"one of: {', '.join(strategy_names())}")
    p.add_argument("--nproc", type=positive_int, default=DEFAULTS.strategy.nproc,
                   help="local ranks (under ps: servers + workers)")
    p.add_argument("--steps", type=positive_int, default=DEFAULTS.optimization.steps,
                   help="total optimizer steps: with --resume, the step to reach, not steps to add")
    p.add_argument("--seed", type=non_negative_int, default=DEFAULTS.data.seed, help="seed of the initialisation and data order")
    p.add_argument("--global-batch", type=positive_int, default=DEFAULTS.data.global_batch,
                   help="sequences per step over all training ranks; must divide by their number")
    p.add_argument("--lr", type=positive_real, default=DEFAULTS.optimization.lr,
                   help="peak AdamW learning rate (linear warm-up, cosine decay to lr/10)")
    p.add_argument("--precision", default=DEFAULTS.strategy.precision, help="fp32, bf16 or fp16 (fp16: ZeRO strategies)")
    p.add_argument("--offload", default=None, help="none or cpu (ZeRO strategies; default none)")
    p.add_argument("--servers", type=positive_int, default=None,
                   help="parameter server: how many of the --nproc ranks are servers, the rest are workers (default 1)")
    p.add_argument("--mode", default=None, choices=["sync", "async", "ssp"], help="parameter server mode (default sync)")
    p.add_argument("--staleness", type=non_negative_int, default=None,
                   help="parameter server ssp: steps a worker may run ahead of the slowest (default 2)")
    p.add_argument("--compress", default=None, metavar="METHOD",
                   help="ddp gradient compression: fp16, bf16, int8, topk:RATIO or powersgd:RANK (default none)")
    p.add_argument("--period", type=positive_int, default=None,
                   help="local-sgd: steps between parameter averages (default 8)")
    p.add_argument("--local-warmup", type=non_negative_int, default=None,
                   help="local-sgd: synchronous steps (gradients averaged every step) before periodic averaging "
                        "starts (default 0)")
    p.add_argument("--inner-steps", type=positive_int, default=None,
                   help="diloco: inner steps between outer steps (default 50)")
    p.add_argument("--outer-lr", type=positive_real, default=None, help="diloco: outer Nesterov learning rate (default 0.7)")
    p.add_argument("--outer-momentum", type=real_number(least=0, most=0.999), default=None,
                   help="diloco: outer Nesterov momentum (default 0.9)")
    p.add_argument("--pp", type=positive_int, default=DEFAULTS.strategy.pp,
                   help="pipeline stages; with --tp, the ranks form a mesh of nproc/(pp*tp) data-parallel replicas "
                        "meeting by --strategy ddp, zero1 or zero2")
    p.add_argument("--tp", type=positive_int, default=DEFAULTS.strategy.tp, help="tensor-parallel ranks per stage")
    p.add_argument("--tp-vocab", action="store_true",
                   help="with --tp: split the token embedding and its tied output head by vocabulary rows "
                        "too, the logits left split and the cross-entropy computed over them (Megatron-LM)")
    p.add_argument("--microbatches", type=positive_int, default=None, help="pipeline micro-batches per step (default: --pp)")
    p.add_argument("--schedule", default=None, choices=["gpipe", "1f1b", "interleaved-1f1b", "zb-h1"],
                   help="pipeline schedule (default 1f1b)")
    p.add_argument("--pp-split", default=None, metavar="auto|LAYERS",
                   help="where the pipeline cuts: auto (stages balanced by measured layer times) or the "
                        "comma-separated layers that start stages 2.. (e.g. blocks.2); default: balanced "
                        "parameter counts")
    p.add_argument("--slow-worker", type=real_number(least=1, most=1000), default=DEFAULTS.slow_worker,
                   help="make worker 0 this many times slower (a straggler)")
    p.add_argument("--grad-clip", type=non_negative_real, default=DEFAULTS.optimization.grad_clip,
                   help="clip the global gradient norm to this (0: off)")
    p.add_argument("--on-nonfinite", choices=("stop", "skip"), default=DEFAULTS.optimization.on_nonfinite,
                   help="a step with an inf/NaN loss: stop the run, naming the step, or skip its update and go on")
    p.add_argument("--max-skipped-steps", type=positive_int, default=DEFAULTS.optimization.max_skipped_steps,
                   help="stop after this many skipped steps in a row (inf/NaN loss, or fp16 overflow)")
    p.add_argument("--eval-every", type=positive_int, default=DEFAULTS.data.eval_every,
                   help="steps between validation-loss estimates (and one at the end)")
    p.add_argument("--block-size", type=positive_int, default=DEFAULTS.model.block_size, help="GPT context, characters")
    p.add_argument("--layers", type=positive_int, default=DEFAULTS.model.n_layer, help="GPT transformer blocks")
    p.add_argument("--embd", type=positive_int, default=DEFAULTS.model.n_embd, help="GPT embedding width")
    p.add_argument("--heads", type=positive_int, default=DEFAULTS.model.n_head,
                   help="GPT attention heads (must divide --embd)")
    p.add_argument("--save-every", type=non_negative_int, default=DEFAULTS.checkpointing.save_every,
                   help="steps between checkpoints (0: at the end only; default 100, none in ps async/ssp mode)")
    p.add_argument("--keep-checkpoints", type=positive_int, default=DEFAULTS.checkpointing.keep,
                   help="newest checkpoints of this run to keep; older ones of this run are deleted")
    p.add_argument("--resume", default=None, metavar="RUN",
                   help="run folder (or its checkpoint/) to continue from, under any strategy and --nproc; "
                        "the resumed run writes a new run folder unless --run-dir names RUN")
    p.add_argument("--out", default=DEFAULTS.checkpointing.out_dir, help="folder for run folders")
    p.add_argument("--run-dir", default=None,
                   help="exact run folder, empty or new unless it is the --resume folder "
                        "(default: a new OUT/<time>-<strategy>-n<nproc>)")
    p.add_argument("--report", default=None, metavar="PATH", help="also write the JSON report here")
    p.add_argument("--timeout", type=positive_real, default=DEFAULTS.timeout_s,
                   help="seconds a collective may wait for the other ranks before the job fails")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=main)


def main(args) -> int:
    config = TrainConfig(
        model=GPTConfig(block_size=args.block_size, n_layer=args.layers, n_embd=args.embd, n_head=args.heads),
        data=DataConfig(global_batch=args.global_batch, seed=args.seed, eval_every=args.eval_every),
        optimization=OptimizationConfig(steps=args.steps, lr=args.lr, grad_clip=args.grad_clip,
                                        on_nonfinite=args.on_nonfinite, max_skipped_steps=args.max_skipped_steps),
        strategy=StrategyConfig(name=args.strategy, nproc=args.nproc, precision=args.precision, offload=args.offload,
                                servers=args.servers, mode=args.mode, staleness=args.staleness,
                                compress=args.compress, period=args.period, local_warmup=args.local_warmup,
                                inner_steps=args.inner_steps,
                                outer_lr=args.outer_lr, outer_momentum=args.outer_momentum, pp=args.pp, tp=args.tp, tp_vocab=args.tp_vocab,
                                microbatches=args.microbatches, schedule=args.schedule,
                                pp_split=args.pp_split),
        checkpointing=CheckpointConfig(save_every=args.save_every, keep=args.keep_checkpoints, resume=args.resume,
                                       out_dir=args.out, run_dir=args.run_dir),
        slow_worker=args.slow_worker, report=args.report, progress=not args.no_progress, timeout_s=args.timeout,
    )
    report, run_dir = run_training(config)
    final_val = report["val_losses"][-1]["loss"] if report["val_losses"] else float("nan")
    print(json.dumps({
        "run_dir": run_dir, "strategy": report["strategy"], **({"mesh": report["mesh"]} if "mesh" in report else {}),
        "world_size": report["world_size"],
        **({"workers": report["workers"], "servers": report["servers"]} if "servers" in report else {}),
        "steps": report["steps"], "first_loss": _rounded(report["losses"][0]), "final_loss": _rounded(report["losses"][-1]),
        "val_loss": _rounded(final_val), "step_time_s": round(report["step_time_s"], 4),
        "tokens_per_s": round(report["tokens_per_s"]), "comm_bytes_per_step": report["comm_bytes_per_step"],
    }))
    print(f"sample from it: shardwise sample {run_dir}")
    return 0


def _rounded(value):
    """Four decimals; a skipped step's loss (None) stays None."""
    return None if value is None or value != value else round(value, 4)
