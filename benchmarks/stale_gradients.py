"""Stale gradients in one process: what asynchrony alone costs the built-in GPT.

With K asynchronous workers a parameter server applies gradients that are about K-1 updates
old. This script trains the built-in GPT in a single process, batch 8, AdamW at the job's
settings, computing every gradient at the parameters of `delay` updates before, and prints the
validation loss for each delay. Delay 0 is plain sequential training; delay 2 is what three
async workers see (compare `benchmarks/ps_bench.py`).

    python benchmarks/stale_gradients.py --updates 600 --delays 0,2
"""

from __future__ import annotations

import argparse
import collections
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from shardwise.data import BatchSampler, load_corpus  # noqa: E402
from shardwise.models import GPT, GPTConfig, lm_loss  # noqa: E402
from shardwise.train.config import TrainConfig  # noqa: E402
from shardwise.train.loop import build_optimizer, evaluate, lr_factor  # noqa: E402


def train_with_delay(delay: int, updates: int, layers: int, batch: int) -> float:
    config = TrainConfig.flat(steps=updates, warmup_steps=max(1, updates * 3 // 20), global_batch=batch,
                              model=GPTConfig(n_layer=layers))
    corpus = load_corpus()
    torch.manual_seed(config.data.seed)
    model = GPT(config.model)
    optimizer = build_optimizer(model, config.optimization)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    sampler = BatchSampler(corpus.train, config.model.block_size, batch, 0, 1, config.data.seed)
    params = list(model.parameters())
    past = collections.deque([[p.detach().clone() for p in params]], maxlen=delay + 1)
    for step in range(updates):
        current = [p.detach().clone() for p in params]
        with torch.no_grad():  # the gradient is taken at the parameters of `delay` updates ago
            for p, old in zip(params, past[0]):
                p.copy_(old)
        x, y = sampler.batch(step)
        lm_loss(model(x), y).backward()
        with torch.no_grad():
            for p, now in zip(params, current):
                p.copy_(now)
        for group, base in zip(optimizer.param_groups, base_lrs):
            group["lr"] = base * lr_factor(step, config.optimization)
        optimizer.step()
        optimizer.zero_grad()
        past.append([p.detach().clone() for p in params])
    return evaluate(model, corpus, config, alone=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--delays", default="0,2")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    try:
        delays = [int(d) for d in args.delays.split(",")]
    except ValueError:
        parser.error(f"--delays must be comma-separated whole numbers, got '{args.delays}'")
    if args.updates < 1 or args.batch < 1 or min(delays) < 0:
        parser.error("--updates and --batch must be at least 1, every delay at least 0")
    torch.set_num_threads(1)
    print("| delay (updates) | validation loss |")
    print("|---|---|")
    for delay in delays:
        print(f"| {delay} | {train_with_delay(delay, args.updates, args.layers, args.batch):.3f} |", flush=True)


if __name__ == "__main__":
    main()
