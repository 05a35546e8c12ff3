"""Interleaved step timing, shared by the benchmark scripts: now `shardwise.bench.timing`
(see [Note: interleaved timing] there); re-exported here for the scripts that import `_timing`."""

from shardwise.bench.timing import (  # noqa: F401
    PhaseClock,
    interleaved_timing,
    iqr,
    median,
    paired_ratios,
    quartiles,
    slowest_rank,
    summarize,
)
