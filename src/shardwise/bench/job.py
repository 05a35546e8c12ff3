"""The whole benchmark from the launching process: the interleaved launch, one short launch per
configuration for its peak RSS (see [Note: peak RSS]), then the JSON file and the charts."""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time

import torch

from ..runtime.launch import launch
from .cases import parameter_count
from .charts import plot_memory, plot_step_times
from .config import BenchConfig
from .report import write_json
from .rss import separate_on_rank
from .runner import bench_rank
from .summary import add_separate_timing, summarize_configs


def resolve_paths(config: BenchConfig) -> BenchConfig:
    """The output folder (default runs/bench-<time>) and the JSON path (default OUT/bench.json)."""
    out_dir = config.out_dir or os.path.join("runs", "bench-" + time.strftime("%Y%m%d-%H%M%S"))
    json_path = config.json_path or os.path.join(out_dir, "bench.json")
    return dataclasses.replace(config, out_dir=out_dir, json_path=json_path)


def run_bench(config: BenchConfig) -> dict:
    """Measure, write OUT/bench.json (or --json), OUT/step_time.png and OUT/memory.png; return the report."""
    started = time.perf_counter()
    config = resolve_paths(config)
    os.makedirs(config.out_dir, exist_ok=True)
    case = config.case()
    torch.manual_seed(config.seed)
    psi = parameter_count(case.build())  # here too, so a model that cannot be built fails before any launch

    measured = launch(bench_rank, config.nproc, args=(config,), timeout_s=config.timeout_s)[0]
    per_rank = measured["per_rank"]
    entries = summarize_configs(per_rank, config.configs, config.baseline)
    shared_peaks = [r["peak_rss_bytes"] for r in per_rank]
    for name, entry in entries.items():
        entry["peak_rss_bytes"] = shared_peaks
    if config.rss == "separate":
        separate = separate_runs(config)
        add_separate_timing(entries, separate, config.baseline)
        for name, passes in separate.items():
            entries[name]["peak_rss_bytes"] = [max(p[r]["peak_rss_bytes"] for p in passes) for r in range(config.nproc)]
            entries[name]["rss_before_model_bytes"] = [min(p[r]["rss_before_model_bytes"] for p in passes)
                                                       for r in range(config.nproc)]

    files = {"json": config.json_path, "step_time_png": os.path.join(config.out_dir, "step_time.png"),
             "memory_png": os.path.join(config.out_dir, "memory.png")}
    report = {
        "benchmark": "shardwise bench",
        "model": {"kind": case.name, "description": case.description, "params": psi},
        "config": config.to_dict(),
        "world_size": config.nproc,
        "threads_per_rank": measured["threads_per_rank"],
        "baseline": config.baseline,
        "rss_mode": config.rss,
        "shared_process_peak_rss_bytes": shared_peaks,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "machine": platform.machine(),
        "configs": entries,
        "files": files,
    }
    plot_step_times(report, files["step_time_png"])
    plot_memory(report, files["memory_png"])
    report["wall_time_s"] = time.perf_counter() - started
    write_json(report, config.json_path)
    return report


SEPARATE_PASSES = 2  # in order, then in reverse order


def separate_runs(config: BenchConfig) -> dict[str, list[list[dict]]]:
    """name -> one per-rank result list per pass of that configuration's own launches
    ([Note: peak RSS]); the configurations take turns, in order and then reversed."""
    case = config.case()
    order = [name for p in range(SEPARATE_PASSES) for name in (config.configs if p % 2 == 0 else config.configs[::-1])]
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(order), desc="a launch per config, alternated", unit="launch", file=sys.stderr,
                   dynamic_ncols=True)
    out: dict[str, list[list[dict]]] = {name: [] for name in config.configs}
    for name in order:
        if bar is not None:
            bar.set_postfix_str(name)
        out[name].append(launch(separate_on_rank, config.nproc, args=(case, name, config.seed, config.steps, config.warmup),
                                timeout_s=config.timeout_s))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out
