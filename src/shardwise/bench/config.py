"""Settings of `shardwise bench`; the command line maps onto them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ConfigError
from ..models import GPTConfig
from .cases import MODEL_KINDS, ModelCase

TORCH_CONFIGS = ("torch_ddp", "torch_zero1", "torch_fsdp2")
SHARDWISE_CONFIGS = ("ddp", "zero1", "zero2", "zero3")
CONFIG_NAMES = TORCH_CONFIGS + SHARDWISE_CONFIGS
COMPRESSED_CONFIGS = ("torch_ddp_fp16", "torch_ddp_powersgd", "torch_post_local_sgd", "ddp_fp16", "ddp_bf16",
                      "ddp_int8", "ddp_topk", "ddp_powersgd", "local_sgd", "diloco", "local")
"""Asked for by name or with --compress (not in 'all'): PyTorch DDP with its fp16 and PowerSGD
(rank 2) comm hooks and post-local SGD (PostLocalSGDOptimizer + PeriodicModelAverager, period 8
after 2 synchronous steps), shardwise DDP with compression (top-k at 1%, PowerSGD rank 2),
LocalSGD (the same period and warm-up) and DiLoCo (8 inner steps), and 'local': each rank trains
alone, no communication at all (the floor any data-parallel step time is measured against).
They do not train like the baseline, so their parity column says how far they are, without a
verdict."""
KNOWN_CONFIGS = CONFIG_NAMES + COMPRESSED_CONFIGS
COMPRESS_COMPARISON = ("torch_ddp", "local", "ddp", "torch_ddp_fp16", "ddp_fp16", "ddp_bf16", "ddp_int8", "ddp_topk",
                       "torch_ddp_powersgd", "ddp_powersgd", "torch_post_local_sgd", "local_sgd", "diloco")
"""What `--compress` runs: each PyTorch peer beside shardwise's counterpart, DDP and the floor."""


def with_compression(configs: tuple[str, ...] | None) -> tuple[str, ...]:
    """--compress: the given configurations (default: PyTorch DDP, the floor and DDP) and then
    every compressed and periodic variant not among them."""
    base = tuple(configs) if configs else COMPRESS_COMPARISON[:3]
    return base + tuple(name for name in COMPRESS_COMPARISON if name not in base)


def is_exact(name: str) -> bool:
    """Whether the configuration must train like the baseline (compressed and local ones need not)."""
    return name not in COMPRESSED_CONFIGS
BASELINE = "torch_ddp"
RSS_MODES = ("separate", "shared")
DEFAULT_BATCH = {"mlp": 64, "gpt": 16}


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark: a model, the configurations to time side by side, and how long."""

    model: str = "mlp"
    """'mlp' (8.4M parameters, or --width/--depth) or 'gpt' (the built-in GPT)."""
    width: int | None = None
    """MLP width; with `depth`, an MLP of that size instead of the default 1024."""
    depth: int | None = None
    """MLP depth (Linear + GELU blocks); default 8."""
    configs: tuple[str, ...] = CONFIG_NAMES
    """Configurations, timed interleaved in this order (see CONFIG_NAMES)."""
    nproc: int = 2
    """Local ranks."""
    steps: int = 15
    """Timed steps per configuration."""
    warmup: int = 3
    """Untimed steps per configuration before them."""
    block: int = 5
    """Consecutive steps of one configuration per round of the interleaved run (1: alternate
    every step); see [Note: interleaved timing]."""
    batch: int | None = None
    """Per rank: MLP rows or GPT sequences; default 64 (MLP) or 16 (GPT)."""
    seed: int = 0
    """Seed of the model's initialisation and of the batches."""
    rss: str = "separate"
    """Peak RSS per configuration: 'separate' (a fresh launch each) or 'shared' (see [Note: peak RSS])."""
    out_dir: str | None = None
    """Folder for bench.json and the charts; default runs/bench-<time>."""
    json_path: str | None = None
    """Where the JSON goes; default OUT/bench.json."""
    progress: bool = True
    """Progress bar on stderr (rank 0)."""
    timeout_s: float = 900.0
    """Seconds one launch may take before it fails instead of hanging."""

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ConfigError(f"--model must be one of {', '.join(MODEL_KINDS)}, got '{self.model}'")
        if (self.width is not None or self.depth is not None) and self.model != "mlp":
            raise ConfigError("--width and --depth size an MLP; they do not apply to --model gpt")
        for name in ("width", "depth", "batch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} must be at least 1, got {value}")
        for name in ("nproc", "steps", "block"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be at least 0, got {self.warmup}")
        if not self.timeout_s > 0:
            raise ConfigError(f"--timeout must be positive, got {self.timeout_s:g}")
        if self.rss not in RSS_MODES:
            raise ConfigError(f"--rss must be one of {', '.join(RSS_MODES)}, got '{self.rss}'")
        check_configs(self.configs)

    @property
    def baseline(self) -> str:
        """What ratios and parity refer to: PyTorch DDP when it runs, else the first configuration."""
        return BASELINE if BASELINE in self.configs else self.configs[0]

    def case(self) -> ModelCase:
        batch = self.batch or DEFAULT_BATCH[self.model]
        if self.model == "gpt":
            return ModelCase("gpt", gpt=GPTConfig(), batch=batch)
        return ModelCase("mlp", width=self.width or 1024, depth=self.depth or 8, batch=batch)

    def to_dict(self) -> dict:
        return {**asdict(self), "configs": list(self.configs)}


def parse_configs(text: str) -> tuple[str, ...]:
    """'torch_ddp,zero3' -> ('torch_ddp', 'zero3'); 'all' -> every configuration."""
    if text.strip() == "all":
        return CONFIG_NAMES
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    check_configs(names)
    return names


def check_configs(names: tuple[str, ...]) -> None:
    if not names:
        raise ConfigError(f"--configs needs at least one of: {', '.join(CONFIG_NAMES)}")
    unknown = [name for name in names if name not in KNOWN_CONFIGS]
    if unknown:
        raise ConfigError(f"unknown configuration '{unknown[0]}'; choose from: {', '.join(KNOWN_CONFIGS)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"configuration '{repeated[0]}' is listed twice in --configs")
