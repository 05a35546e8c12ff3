"""Pipeline schedules as they run: step time against torch.distributed.pipelining with the same
schedule and split, the measured bubble and peak activation memory per rank against the
formulas, and a timeline of each schedule (rank x time, forward and backward coloured).

    python benchmarks/pipeline.py --stages 4 --microbatches 8 --json pipeline.json --plot docs/img/pipeline.png

The model is an MLP of `--depth` Linear+GELU layers of `--width` (an nn.Sequential), cut into
stages of equal parameter counts by shardwise's splitter; torch's stages get the very same
layers. Each configuration runs in its own processes, alternating shardwise and torch, and
times `--steps` consecutive steps after `--warmup` steps; one more step is recorded. zb-h1 is
compared with torch's Schedule1F1B (torch 2.13's zero-bubble schedules are the V-shaped and
interleaved ones, two stages per rank); its bubble formula takes the F, B and W times measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import shardwise as sw  # noqa: E402
from shardwise.pipeline.formulas import bubble_fraction, peak_stored  # noqa: E402
from shardwise.pipeline.layers import layer_weights, pipeline_layers  # noqa: E402
from shardwise.pipeline.schedules import make_schedule  # noqa: E402
from shardwise.pipeline.split import balanced_bounds  # noqa: E402

SCHEDULES = ("gpipe", "1f1b", "interleaved-1f1b", "zb-h1")
TORCH_PEER = {"zb-h1": "1f1b"}  # torch 2.13 has no one-stage-per-rank zero-bubble schedule: ZB-H1 races its 1F1B


def build(width: int, depth: int) -> nn.Sequential:
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.GELU()]
    return nn.Sequential(*layers)


def batch(args):
    g = torch.Generator().manual_seed(1)
    return torch.randn(args.batch, args.width, generator=g), torch.randn(args.batch, args.width, generator=g)


def timed(step, args) -> list[float]:
    """Seconds of each of `args.steps` consecutive steps after `args.warmup` untimed ones."""
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def shardwise_rank(args, schedule: str) -> dict:
    torch.set_num_threads(1)
    model = build(args.width, args.depth)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model, optimizer = sw.wrap(model, optimizer, strategy=sw.Pipeline(stages=args.stages, microbatches=args.microbatches,
                                                                       schedule=schedule))
    x, y = batch(args)

    def step():
        model.train_step(x, y, F.mse_loss)
        optimizer.step()
        optimizer.zero_grad()

    times = timed(step, args)
    model.record_steps(True)
    step()
    record = model.last_step_record()
    return {"times": times, "spans": record.spans, "peak": record.peak_activation_bytes, "stored": list(record.stored.items())}


def torch_rank(args, schedule: str) -> dict:
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

    torch.set_num_threads(1)
    rank, p = sw.rank(), args.stages
    virtual = 2 if schedule == "interleaved-1f1b" else 1
    model = build(args.width, args.depth)
    layers = pipeline_layers(model)
    bounds = balanced_bounds(layer_weights(layers), p * virtual)
    mine = [rank + c * p for c in range(virtual)]
    modules = [nn.Sequential(*[layers[i][1] for i in range(*bounds[s])]) for s in mine]
    stages = [PipelineStage(m, s, p * virtual, torch.device("cpu")) for m, s in zip(modules, mine)]
    optimizer = torch.optim.SGD([q for m in modules for q in m.parameters()], lr=1e-3)
    schedule = TORCH_PEER.get(schedule, schedule)
    if schedule == "interleaved-1f1b":
        sched = ScheduleInterleaved1F1B(stages, args.microbatches, loss_fn=F.mse_loss)
    else:
        sched = (ScheduleGPipe if schedule == "gpipe" else Schedule1F1B)(stages[0], args.microbatches, loss_fn=F.mse_loss)
    x, y = batch(args)
    first, last = 0 in mine, p * virtual - 1 in mine

    def step():
        losses = []
        if first and last:
            sched.step(x, target=y, losses=losses)
        elif first:
            sched.step(x)
        elif last:
            sched.step(target=y, losses=losses)
        else:
            sched.step()
        optimizer.step()
        optimizer.zero_grad()

    return {"times": timed(step, args)}


def bubble_formula(schedule: str, args, per_rank: list[dict]) -> float:
    """The formula's bubble; zb-h1's depends on the costs, so it takes the measured mean F, B, W."""
    virtual = 2 if schedule == "interleaved-1f1b" else 1
    if schedule != "zb-h1":
        return bubble_fraction(args.stages, args.microbatches, virtual)
    mean = {k: statistics.mean(s[4] - s[3] for r in per_rank for s in r["spans"] if s[0] == k) for k in "FBW"}
    return bubble_fraction(args.stages, args.microbatches, 1, "zb-h1", mean["F"], mean["B"] + mean["W"], mean["W"])


def measured_bubble(per_rank: list[dict]) -> float:
    spans = [s for r in per_rank for s in r["spans"]]
    start, end = min(s[3] for s in spans), max(s[4] for s in spans)
    busy = sum(s[4] - s[3] for s in spans)
    return 1 - busy / (len(per_rank) * (end - start))


def predicted_peak(rank_result: dict, schedule: str, args, rank: int) -> float:
    """Bytes the formula predicts rank `rank` holds at its peak: the formula's count of stored
    micro-batch activations (in virtual stages) is reached after the schedule's first that-many
    forwards on the rank, so the peak holds exactly those; each weighs what its stage kept for
    one micro-batch, as measured (stages differ: the first keeps its input, the last its loss)."""
    virtual = 2 if schedule == "interleaved-1f1b" else 1
    by_stage: dict[int, list[int]] = {}
    for (mb, stage), nbytes in rank_result["stored"]:
        by_stage.setdefault(stage, []).append(nbytes)
    count = round(peak_stored(schedule, args.stages, args.microbatches, rank, virtual) * virtual)
    forwards = [a for a in make_schedule(schedule, args.stages, args.microbatches).actions[rank] if a.kind == "F"]
    return sum(statistics.mean(by_stage[a.stage]) for a in forwards[:count])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=4)
    parser.add_argument("--microbatches", type=int, default=8)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternated launches per configuration")
    parser.add_argument("--schedules", default=",".join(SCHEDULES))
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    results = {}
    for schedule in args.schedules.split(","):
        ours, theirs, records = [], [], None
        for _ in range(args.rounds):
            per_rank = sw.launch(shardwise_rank, args.stages, args=(args, schedule))
            ours += [max(ts) for ts in zip(*(r["times"] for r in per_rank))]
            records = per_rank
            theirs += [max(ts) for ts in zip(*(r["times"] for r in sw.launch(torch_rank, args.stages, args=(args, schedule))))]
        results[schedule] = {
            "step_ms": 1000 * statistics.median(ours), "torch_step_ms": 1000 * statistics.median(theirs),
            "torch_schedule": TORCH_PEER.get(schedule, schedule),
            "bubble": measured_bubble(records), "bubble_formula": bubble_formula(schedule, args, records),
            "peak_activation_mb": [r["peak"] / 1e6 for r in records],
            "peak_activation_formula_mb": [predicted_peak(r, schedule, args, i) / 1e6 for i, r in enumerate(records)],
            "spans": [[(s[0], s[1], s[2], s[3], s[4]) for s in r["spans"]] for r in records],
        }
        r = results[schedule]
        print(f"{schedule}: {r['step_ms']:.1f} ms (torch {r['torch_step_ms']:.1f} ms), bubble {r['bubble']:.3f} "
              f"(formula {r['bubble_formula']:.3f}), peak activations MB {[round(v, 2) for v in r['peak_activation_mb']]} "
              f"(formula {[round(v, 2) for v in r['peak_activation_formula_mb']]})", flush=True)
    table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    if args.plot:
        plot(results, args)


def table(results: dict) -> None:
    print("| schedule | step ms | torch.distributed.pipelining ms | ratio | bubble measured | bubble formula | "
          "peak activations per rank, MB (measured / formula) |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        peaks = ", ".join(f"{m:.2f}/{f:.2f}" for m, f in zip(r["peak_activation_mb"], r["peak_activation_formula_mb"]))
        peer = "" if r["torch_schedule"] == name else f" ({r['torch_schedule']})"
        print(f"| {name} | {r['step_ms']:.1f} | {r['torch_step_ms']:.1f}{peer} | {r['step_ms'] / r['torch_step_ms']:.2f} | "
              f"{r['bubble']:.3f} | {r['bubble_formula']:.3f} | {peaks} |")


def plot(results: dict, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(11, 2.2 * len(results)), squeeze=False)
    for ax, (name, r) in zip(axes[:, 0], results.items()):
        spans = [s for rank_spans in r["spans"] for s in rank_spans]
        t0 = min(s[3] for s in spans)
        for rank, rank_spans in enumerate(r["spans"]):
            for kind, mb, stage, start, end in rank_spans:
                ax.barh(rank, (end - start) * 1000, left=(start - t0) * 1000, height=0.8,
                        color={"F": "tab:blue", "B": "tab:orange", "W": "tab:green"}[kind], edgecolor="white",
                        linewidth=0.3)
                if end - start > 0.004:
                    ax.text((start - t0 + (end - start) / 2) * 1000, rank, str(mb), ha="center", va="center", fontsize=6,
                            color="white")
        ax.set_yticks(range(len(r["spans"])))
        ax.set_yticklabels([f"rank {i}" for i in range(len(r["spans"]))])
        ax.invert_yaxis()
        formula = "(P-1)(F+B-W)/(M(F+B+W)+(P-1)(F+B-W))" if name == "zb-h1" else "(P-1)/(vM+P-1)"
        ax.set_title(f"{name}: bubble measured {r['bubble']:.2f}, formula {formula} = {r['bubble_formula']:.2f}",
                     fontsize=9)
    axes[-1, 0].set_xlabel("ms (forward blue, backward orange, zb-h1's weight gradients green; numbers: micro-batch)")
    fig.suptitle(f"pipeline schedules, P = {args.stages}, M = {args.microbatches}, one step as measured", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
