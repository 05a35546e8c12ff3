"""Settings of the built-in training job (`shardwise train`); the command line maps onto them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from ..models import GPTConfig


@dataclass
class TrainConfig:
    """The built-in job: the small GPT on the standard-library corpus."""

    strategy: str = "ddp"
    """Strategy name (ddp, ddp-naive, ...)."""
    nproc: int = 2
    """Number of local ranks."""
    steps: int = 600
    """Optimizer steps."""
    seed: int = 0
    """Seed of the model's initialisation and of the data order."""
    global_batch: int = 32
    """Sequences per step over all ranks; must divide by nproc."""
    lr: float = 6e-3
    """Peak learning rate of AdamW (linear warm-up, then cosine decay to lr/10)."""
    warmup_steps: int = 30
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices; biases, norms and embeddings' vectors get none."""
    precision: str = "fp32"
    """fp32, or bf16/fp16 compute (ZeRO: fp32 master weights; DDP: bf16 autocast)."""
    offload: str = "none"
    """ZeRO only: 'cpu' keeps master weights and optimizer state on the CPU."""
    servers: int = 1
    """Parameter server only: server ranks (of --nproc; the rest are workers)."""
    mode: str = "sync"
    """Parameter server only: sync, async or ssp."""
    staleness: int = 2
    """Parameter server ssp only: steps a worker may run ahead of the slowest."""
    slow_worker: float = 1.0
    """Make worker 0 this many times slower (a straggler, to see what async buys)."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value; 0 turns clipping off."""
    eval_every: int = 100
    """Steps between validation-loss estimates (and at the end)."""
    eval_batches: int = 8
    """Validation batches per estimate, split over ranks."""
    save_every: int | None = None
    """Steps between checkpoints (and one at the end); 0: only at the end; None: 100, or no
    checkpoint under an async/ssp parameter server (its workers share no step to save at)."""
    on_nonfinite: str = "stop"
    """A step whose loss is inf or NaN: 'stop' the run with one line naming the step, or 'skip'
    the step (no update) and go on; fp16's loss scaler skips such steps in either case."""
    max_skipped_steps: int = 20
    """Skipped steps in a row (inf/NaN loss, or fp16 gradient overflow) after which the run stops."""
    keep_checkpoints: int = 2
    """How many of this run's newest checkpoints to keep (older ones of this run are deleted)."""
    resume: str | None = None
    """Run folder or checkpoint folder to continue from (any strategy and world size)."""
    out_dir: str = "runs"
    """Folder under which the run folder is made."""
    run_dir: str | None = None
    """Exact run folder; default: out_dir/<time>-<strategy>-n<nproc>."""
    report: str | None = None
    """Also write the JSON report here."""
    progress: bool = True
    """Show a live progress bar on rank 0."""
    timeout_s: float = 600.0
    """Seconds a collective may wait for its peers before the job fails instead of hanging."""
    model: GPTConfig = field(default_factory=GPTConfig)
    """The GPT's shape."""

    def validate(self) -> None:
        if self.save_every is not None and self.save_every < 0:
            raise ConfigError(f"--save-every must be at least 0, got {self.save_every}")
        if self.save_every is not None and self.strategy == "ps" and self.mode != "sync":
            raise ConfigError(f"--save-every does not apply to --mode {self.mode}: asynchronous workers share no step "
                              "to checkpoint at; use --mode sync to save checkpoints")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"--on-nonfinite must be stop or skip, got '{self.on_nonfinite}'")
        if self.max_skipped_steps < 1:
            raise ConfigError(f"--max-skipped-steps must be at least 1, got {self.max_skipped_steps}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"--keep-checkpoints must be at least 1, got {self.keep_checkpoints}")
        for name in ("nproc", "steps", "global_batch", "eval_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.trainers >= 1 and self.global_batch % self.trainers:
            raise ConfigError(f"global batch {self.global_batch} does not split evenly over {self.trainers} training "
                              f"ranks: give --global-batch a multiple of {self.trainers} (e.g. "
                              f"{self.global_batch // self.trainers * self.trainers or self.trainers})")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"--precision must be fp32, bf16 or fp16, got '{self.precision}'")
        self.build_strategy()

    @property
    def trainers(self) -> int:
        """Ranks that train (a parameter server's servers do not)."""
        return self.nproc - self.servers if self.strategy == "ps" else self.nproc

    def build_strategy(self):
        """The strategy object for `strategy`, `precision` and `offload`."""
        from ..strategy.registry import resolve_strategy
        from ..zero import ZeRO

        from ..ps import ParameterServer

        strategy = resolve_strategy(self.strategy)
        if isinstance(strategy, ParameterServer):
            if self.precision != "fp32" or self.offload != "none":
                raise ConfigError("the parameter server trains in fp32 without offload")
            if self.nproc <= self.servers:
                raise ConfigError(f"--nproc {self.nproc} leaves no worker beside {self.servers} server(s)")
            return ParameterServer(servers=self.servers, mode=self.mode, staleness=self.staleness)
        if isinstance(strategy, ZeRO):
            dtype = None if self.precision == "fp32" else self.precision
            return ZeRO(stage=strategy.stage, param_dtype=dtype, offload=self.offload)
        if self.offload != "none":
            raise ConfigError(f"--offload needs a ZeRO strategy (zero1, zero2, zero3), not '{self.strategy}'")
        if self.precision == "fp16":
            raise ConfigError(f"--precision fp16 needs loss scaling: use a ZeRO strategy (zero1, zero2, zero3), not '{self.strategy}'")
        return strategy

    @property
    def save_interval(self) -> int:
        """Steps between checkpoints (0: at the end only)."""
        return 100 if self.save_every is None else self.save_every

    def to_dict(self) -> dict:
        return asdict(self)
