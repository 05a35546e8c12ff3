"""`shardwise bench`: PyTorch's DDP, ZeroRedundancyOptimizer and FSDP2 against shardwise's DDP
and ZeRO stages 1-3, interleaved in one launch, with the planner's predictions beside what was
measured.

    config.py    BenchConfig and the configuration names (what the command line maps onto)
    cases.py     what is trained: model, optimizer, batches, loss
    variants.py  building each configuration from one initial model; full state for parity
    timing.py    interleaved timing and its statistics ([Note: interleaved timing])
    memory.py    model states by kind ([Note: splitting model states]), RSS
    runner.py    one rank of the interleaved launch
    rss.py       one rank of a configuration's own launch, for its peak RSS ([Note: peak RSS])
    summary.py   per-rank measurements -> one entry per configuration, with predictions (pure)
    report.py    markdown table and JSON; charts.py: the PNGs
    job.py       the whole run from the launching process
"""

from .config import BASELINE, CONFIG_NAMES, SHARDWISE_CONFIGS, TORCH_CONFIGS, BenchConfig, parse_configs
from .job import run_bench

__all__ = ["BASELINE", "CONFIG_NAMES", "SHARDWISE_CONFIGS", "TORCH_CONFIGS", "BenchConfig", "parse_configs", "run_bench"]
