"""PyTorch's own compression on the run `benchmarks/compression.py` measures: the built-in GPT at
2 ranks, the same data slices, AdamW, schedule and clipping, under
`torch.nn.parallel.DistributedDataParallel` with a communication hook (`fp16_compress_hook`,
`powerSGD_hook`), so a gap to uncompressed DDP can be told apart into the method's and shardwise's.

    python benchmarks/compression_peers.py --steps 600 --peers "torch powersgd r2,torch powersgd r4"

Bytes are not counted here (PyTorch's hooks send through the process group directly); they are
the method's, as shardwise's compressors count them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import torch  # noqa: E402

import shardwise as sw  # noqa: E402
from shardwise.data import BatchSampler, load_corpus  # noqa: E402
from shardwise.models import GPT, lm_loss  # noqa: E402
from shardwise.train import TrainConfig  # noqa: E402
from shardwise.train.loop import build_optimizer, evaluate, lr_factor  # noqa: E402

PEERS = {"torch ddp": None, "torch fp16": ("fp16", 0), "torch powersgd r2": ("powersgd", 2),
         "torch powersgd r4": ("powersgd", 4)}


def _hooked(model, peer, warmup: int):
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

    ddp = torch.nn.parallel.DistributedDataParallel(model)
    if peer is None:
        return ddp
    kind, rank = peer
    if kind == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    else:  # start_powerSGD_iter counts from 1 and must be at least 2 with error feedback
        state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=rank,
                                            start_powerSGD_iter=max(2, warmup), use_error_feedback=True, warm_start=True)
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    return ddp


def _train(name: str, steps: int, eval_every: int, grad_clip: float, eval_batches: int, warmup: int) -> list:
    torch.set_num_threads(1)
    config = TrainConfig.flat(nproc=2, steps=steps, eval_every=eval_every, progress=False, grad_clip=grad_clip,
                              eval_batches=eval_batches)
    corpus = load_corpus()
    torch.manual_seed(config.data.seed)
    model = GPT(config.model)
    optimizer = build_optimizer(model, config.optimization)
    model = _hooked(model, PEERS[name], warmup)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    sampler = BatchSampler(corpus.train, config.model.block_size, config.data.global_batch, sw.rank(),
                           sw.world_size(), config.data.seed)
    evals = []
    for step in range(steps):
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * lr_factor(step, config.optimization)
        x, y = sampler.batch(step)
        lm_loss(model(x).float(), y).backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            evals.append({"step": step + 1, "loss": evaluate(model.module, corpus, config)})
    return evals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated from: {', '.join(PEERS)}")
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--eval-batches", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=10, help="uncompressed steps first (start_powerSGD_iter), "
                                                               "as shardwise's PowerSGD")
    parser.add_argument("--json", default=None, help="write {peer: [{step, loss}, ...]} here")
    args = parser.parse_args()
    results = {}
    for name in (p.strip() for p in args.peers.split(",")):
        if name not in PEERS:
            raise SystemExit(f"unknown peer '{name}': choose from {', '.join(PEERS)}")
        evals = sw.launch(_train, 2, args=(name, args.steps, args.eval_every, args.grad_clip, args.eval_batches,
                                           args.warmup))[0]
        results[name] = evals
        print(f"{name}: val {evals[-1]['loss']:.4f} after {args.steps} steps", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
