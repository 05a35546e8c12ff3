"""Parameter server against shardwise DDP on the built-in GPT, at 4 processes.

- throughput (samples/s) of sync and async PS (1 server, 3 workers) against DDP (4 workers);
- async's validation loss after the same number of samples as sync (target: within 10%);
- with worker 0 made 3x slower: time for sync and async to finish the same number of samples.

    python benchmarks/ps_bench.py --steps 60 --json ps.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from shardwise.models import GPTConfig  # noqa: E402
from shardwise.train import TrainConfig, run_training  # noqa: E402

RUNS = [
    ("ddp x4", dict(strategy="ddp")),
    ("ps sync 1+3", dict(strategy="ps", mode="sync")),
    ("ps async 1+3", dict(strategy="ps", mode="async")),
    ("ps sync 1+3, worker 0 3x slower", dict(strategy="ps", mode="sync", slow_worker=3.0)),
    ("ps async 1+3, worker 0 3x slower", dict(strategy="ps", mode="async", slow_worker=3.0)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="steps of the sync runs (async: the same samples)")
    parser.add_argument("--global-batch", type=int, default=24)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {}
    print("| run | wall s (training loop) | samples | samples/s | final val loss |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in RUNS:
            config = TrainConfig.flat(nproc=4, steps=args.steps, global_batch=args.global_batch, eval_every=10 ** 9,
                                      progress=False, run_dir=os.path.join(tmp, name.replace(" ", "_")),
                                      model=GPTConfig(n_layer=args.layers), **options,
                                      # async workers share no step to save at: no checkpoint there
                                      **({} if options.get("mode") == "async" else {"save_every": 0}))
            report, _ = run_training(config)
            samples = report["samples_per_s"] * report["train_seconds"]
            results[name] = {"seconds": report["train_seconds"], "samples": samples,
                             "samples_per_s": report["samples_per_s"], "val_loss": report["val_losses"][-1]["loss"],
                             "parameter_server": report.get("parameter_server")}
            r = results[name]
            print(f"| {name} | {r['seconds']:.1f} | {r['samples']:.0f} | {r['samples_per_s']:.1f} | {r['val_loss']:.3f} |", flush=True)
    sync, async_ = results["ps sync 1+3"], results["ps async 1+3"]
    slow_sync, slow_async = results["ps sync 1+3, worker 0 3x slower"], results["ps async 1+3, worker 0 3x slower"]
    gap = abs(async_["val_loss"] - sync["val_loss"]) / sync["val_loss"]
    print(f"- async val loss vs sync: {gap:+.1%} apart (target within 10%) -> {'met' if gap <= 0.10 else 'MISSED'}")
    speedup = slow_sync["seconds"] / slow_async["seconds"]
    print(f"- with a 3x slower worker: sync {slow_sync['seconds']:.1f} s, async {slow_async['seconds']:.1f} s "
          f"({speedup:.2f}x) -> {'met' if speedup > 1 else 'MISSED'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
