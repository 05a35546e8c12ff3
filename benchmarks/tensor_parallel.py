"""Tensor parallelism on the built-in GPT at T = 2: step time against PyTorch's DTensor plan
(`parallelize_module` with ColwiseParallel / RowwiseParallel on the same Linear layers), and
the bytes per step against the formula.

    python benchmarks/tensor_parallel.py --steps 10 --rounds 2

Formula (Megatron-LM): each block all-reduces its [B, T, C] activations twice in forward (after
the attention's and the MLP's row-parallel layers) and twice in backward (the gradients entering
their column-parallel layers): 4 · n_layer all-reduces of B·T·C fp32 values per step, each
moving 2(T-1)/T of its bytes per rank. For DTensor the fused q/k/v rows are permuted first so
that its contiguous column split gives each rank whole heads, as shardwise's "colwise:3" does:
both then compute the same function (the losses are compared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import torch  # noqa: E402

import shardwise as sw  # noqa: E402
from shardwise.models.gpt import GPT, GPTConfig, lm_loss  # noqa: E402
from shardwise.tensor_parallel.plan import shard_indices  # noqa: E402


def build(args) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=args.layers, n_embd=args.embd, n_head=args.heads, block_size=args.block))


def batch(args, step: int):
    g = torch.Generator().manual_seed(step)
    tokens = torch.randint(0, 96, (args.batch, args.block + 1), generator=g)
    return tokens[:, :-1], tokens[:, 1:]


def timed(step, args) -> list[float]:
    for i in range(args.warmup):
        step(i)
    times = []
    for i in range(args.steps):
        started = time.perf_counter()
        step(args.warmup + i)
        times.append(time.perf_counter() - started)
    return times


def shardwise_rank(args) -> dict:
    torch.set_num_threads(1)
    model = build(args)
    model, optimizer = sw.wrap(model, torch.optim.AdamW(model.parameters(), lr=1e-3), strategy=sw.TensorParallel(size=args.tp))
    losses = []

    def step(i):
        x, y = batch(args, i)
        losses.append(float(model.train_step(x, y, lm_loss)))
        optimizer.step()
        optimizer.zero_grad()

    times = timed(step, args)
    sw.reset_comm_stats()
    step(0)
    return {"times": times, "bytes": sw.comm_stats()["total"], "losses": losses[:args.warmup + args.steps]}


def torch_rank(args) -> dict:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    torch.set_num_threads(1)
    model = build(args)
    width = args.embd
    order = [i for r in range(args.tp) for i in shard_indices(3 * width, 3, args.tp, r)]
    with torch.no_grad():
        for block in model.blocks:  # whole heads per rank under a contiguous split
            block.attn.qkv_proj.weight.copy_(block.attn.qkv_proj.weight[order])
            block.attn.qkv_proj.bias.copy_(block.attn.qkv_proj.bias[order])
    mesh = init_device_mesh("cpu", (args.tp,))
    plan = {}
    for i in range(args.layers):
        plan.update({f"blocks.{i}.attn.qkv_proj": ColwiseParallel(), f"blocks.{i}.attn.out_proj": RowwiseParallel(),
                     f"blocks.{i}.mlp.up_proj": ColwiseParallel(), f"blocks.{i}.mlp.down_proj": RowwiseParallel()})
    parallelize_module(model, mesh, plan)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)
    losses = []

    def step(i):
        x, y = batch(args, i)
        loss = lm_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())

    return {"times": timed(step, args), "losses": losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tp", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--embd", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ours, theirs = [], []
    for _ in range(args.rounds):
        mine = sw.launch(shardwise_rank, args.tp, args=(args,))
        ours += [max(ts) for ts in zip(*(r["times"] for r in mine))]
        peer = sw.launch(torch_rank, args.tp, args=(args,))
        theirs += [max(ts) for ts in zip(*(r["times"] for r in peer))]
    formula = 4 * args.layers * 2 * (args.tp - 1) / args.tp * args.batch * args.block * args.embd * 4
    loss_gap = max(abs(a - b) for a, b in zip(mine[0]["losses"], peer[0]["losses"]))
    print("| config | step ms | / DTensor | bytes per step per rank | formula |")
    print("|---|---|---|---|---|")
    print(f"| DTensor (torch {torch.__version__}) | {1000 * statistics.median(theirs):.1f} | 1.00 | - | {formula / 1e6:.2f} MB |")
    print(f"| shardwise TensorParallel | {1000 * statistics.median(ours):.1f} | "
          f"{statistics.median(ours) / statistics.median(theirs):.2f} | {mine[0]['bytes'] / 1e6:.2f} MB | {formula / 1e6:.2f} MB |")
    print(f"largest loss difference between the two over {len(peer[0]['losses'])} steps: {loss_gap:.2e}")


if __name__ == "__main__":
    main()
