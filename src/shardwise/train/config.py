"""Settings of the built-in training job (`shardwise train`), in typed parts that each validate
what they hold; the command line maps onto them.

  model          the GPT's shape (GPTConfig, models/gpt.py)
  data           global batch, seed, evaluation
  optimization   steps, AdamW, schedule, clipping, what to do with an inf/NaN loss
  strategy       which strategy on how many local ranks, at which precision, and its options
  checkpointing  when to save, how many to keep, where the run folder goes, what to resume
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from ..models import GPTConfig
from ..vocab import check_precision


def _at_least(value, least: int, flag: str) -> None:
    if value < least:
        raise ConfigError(f"--{flag} must be at least {least}, got {value}")


@dataclass
class DataConfig:
    """The data each step sees."""

    global_batch: int = 32
    """Sequences per step over all training ranks; must divide by their number."""
    seed: int = 0
    """Seed of the model's initialisation and of the data order."""
    eval_every: int = 100
    """Steps between validation-loss estimates (and at the end)."""
    eval_batches: int = 8
    """Validation batches per estimate, split over ranks."""

    def validate(self) -> None:
        for name in ("global_batch", "eval_every", "eval_batches"):
            _at_least(getattr(self, name), 1, name.replace("_", "-"))


@dataclass
class OptimizationConfig:
    """AdamW, its schedule, and how a step with an inf/NaN loss is treated."""

    steps: int = 600
    """Optimizer steps."""
    lr: float = 6e-3
    """Peak learning rate of AdamW (linear warm-up, then cosine decay to lr/10)."""
    warmup_steps: int = 30
    """Steps of linear learning-rate warm-up."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices; biases, norms and embeddings' vectors get none."""
    grad_clip: float = 0.0
    """Clip the global gradient norm to this value; 0 turns clipping off."""
    on_nonfinite: str = "stop"
    """A step whose loss is inf or NaN: 'stop' the run with one line naming the step, or 'skip'
    the step (no update) and go on; fp16's loss scaler skips such steps in either case."""
    max_skipped_steps: int = 20
    """Skipped steps in a row (inf/NaN loss, or fp16 gradient overflow) after which the run stops."""

    def validate(self) -> None:
        _at_least(self.steps, 1, "steps")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"--on-nonfinite must be stop or skip, got '{self.on_nonfinite}'")
        _at_least(self.max_skipped_steps, 1, "max-skipped-steps")


@dataclass
class StrategyConfig:
    """Which strategy, on how many local ranks, at which precision. Options left None take the
    strategy's own default; one the strategy does not have is an error naming those that do."""

    name: str = "ddp"
    """Strategy name (see `sw.strategy_names()`)."""
    nproc: int = 2
    """Number of local ranks (under a parameter server: servers and workers)."""
    precision: str = "fp32"
    """fp32, or bf16/fp16 compute (ZeRO: fp32 master weights; DDP: bf16 autocast)."""
    offload: str | None = None
    """ZeRO: 'cpu' keeps master weights and optimizer state on the CPU."""
    servers: int | None = None
    """Parameter server: server ranks (of nproc; the rest are workers)."""
    mode: str | None = None
    """Parameter server: sync, async or ssp."""
    staleness: int | None = None
    """Parameter server ssp: steps a worker may run ahead of the slowest."""
    compress: str | None = None
    """DDP: gradient compression ("fp16", "bf16", "int8", "topk:RATIO", "powersgd:RANK")."""
    period: int | None = None
    """local-sgd: steps between parameter averages."""
    local_warmup: int | None = None
    """local-sgd: synchronous (gradient-averaging) steps before the periodic averaging starts."""
    inner_steps: int | None = None
    """diloco: inner steps between outer steps."""
    outer_lr: float | None = None
    """diloco: the outer Nesterov SGD's learning rate."""
    outer_momentum: float | None = None
    """diloco: the outer Nesterov SGD's momentum."""
    pp: int = 1
    """Pipeline stages (a mesh of nproc / (pp·tp) data-parallel replicas when pp·tp > 1)."""
    tp: int = 1
    """Tensor-parallel ranks per stage."""
    tp_vocab: bool = False
    """With --tp: the GPT's embedding and tied head split by vocabulary rows too, the logits left
    split and the loss computed over them (`vocab_parallel_cross_entropy`)."""
    microbatches: int | None = None
    """Pipeline micro-batches per step (default: pp)."""
    schedule: str | None = None
    """Pipeline schedule: gpipe, 1f1b (default), interleaved-1f1b or zb-h1."""
    pp_split: str | None = None
    """Where the pipeline cuts: None (balanced parameter counts), "auto" (balanced measured
    layer times) or comma-separated names of the layers that start stages 2.. ("blocks.2")."""

    MESH_FIELDS = ("pp", "tp", "tp_vocab", "microbatches", "schedule", "pp_split")

    def options(self) -> dict:
        """The strategy's own options by its field names (--local-warmup is local-sgd's warmup_steps)."""
        options = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name not in ("name", "nproc", "precision", *self.MESH_FIELDS)}
        warmup = options.pop("local_warmup")
        if warmup is not None:
            if self.name != "local-sgd":
                raise ConfigError(f"--local-warmup applies to local-sgd, not '{self.name}'")
            options["warmup_steps"] = warmup
        return options

    def build(self):
        """The strategy object (validated by its own constructor)."""
        from ..api import build_strategy

        _at_least(self.nproc, 1, "nproc")
        check_precision(self.precision)
        if self.tp_vocab and self.tp == 1:
            raise ConfigError("--tp-vocab splits the vocabulary over tensor-parallel ranks: add --tp 2 (or more)")
        if self.pp > 1 or self.tp > 1:
            return self._mesh()
        if self.microbatches is not None or self.schedule is not None or self.pp_split is not None:
            raise ConfigError("--microbatches, --schedule and --pp-split apply to pipelines: add --pp STAGES")
        strategy = build_strategy(self.name, self.precision, **self.options())
        if not strategy.training_ranks(self.nproc):
            raise ConfigError(f"--nproc {self.nproc} leaves no rank to train under {self.name}: "
                              f"{self.nproc} rank(s) are {strategy.role(0, self.nproc)}s")
        return strategy


    def pipeline_split(self):
        """--pp-split as `Pipeline(split=...)` takes it: None, "auto" or a tuple of layer names."""
        if self.pp_split is None or self.pp_split == "auto":
            return self.pp_split
        return tuple(name.strip() for name in self.pp_split.split(",") if name.strip())

    def _mesh(self):
        from ..mesh import Mesh
        from ..pipeline import Pipeline
        from ..tensor_parallel import TensorParallel

        _at_least(self.pp, 1, "pp")
        _at_least(self.tp, 1, "tp")
        if self.nproc % (self.pp * self.tp):
            raise ConfigError(f"--nproc {self.nproc} is not a multiple of --pp {self.pp} x --tp {self.tp}: "
                              f"use --nproc {self.pp * self.tp * max(1, self.nproc // (self.pp * self.tp))}")
        if self.name not in ("ddp", "zero1", "zero2"):
            raise ConfigError(f"with --pp/--tp the data-parallel replicas meet by ddp, zero1 or zero2, not '{self.name}'")
        given = {k: v for k, v in self.options().items() if v is not None and not (k == "offload" and v == "none")}
        if given:
            raise ConfigError(f"--{next(iter(given)).replace('_', '-')} does not apply with --pp/--tp")
        if self.precision == "fp16":
            raise ConfigError("--pp/--tp train in fp32 or bf16 (fp16 needs a loss scaler, which the mesh does not "
                              "have): use --precision bf16")
        pipeline = Pipeline(stages=self.pp, microbatches=self.microbatches or self.pp,
                            schedule=self.schedule or "1f1b", split=self.pipeline_split()) if self.pp > 1 else None
        if pipeline is None and (self.microbatches is not None or self.schedule is not None or
                                 self.pp_split is not None):
            raise ConfigError("--microbatches, --schedule and --pp-split apply to pipelines: add --pp STAGES")
        return Mesh(dp=self.nproc // (self.pp * self.tp), pp=self.pp, tp=self.tp, dp_strategy=self.name,
                    pipeline=pipeline, tensor=TensorParallel(size=self.tp, vocab=self.tp_vocab, split_logits=self.tp_vocab)
                    if self.tp > 1 else None)


@dataclass
class CheckpointConfig:
    """When checkpoints are written and kept, the run folder, and what to resume."""

    save_every: int | None = None
    """Steps between checkpoints (and one at the end); 0: only at the end; None: 100, or no
    checkpoint where training ranks do not step together (asynchronous workers)."""
    keep: int = 2
    """How many of this run's newest checkpoints to keep (older ones of this run are deleted)."""
    resume: str | None = None
    """Run folder or checkpoint folder to continue from (any strategy and world size)."""
    out_dir: str = "runs"
    """Folder under which the run folder is made."""
    run_dir: str | None = None
    """Exact run folder; default: out_dir/<time>-<strategy>-n<nproc>."""

    def validate(self) -> None:
        if self.save_every is not None:
            _at_least(self.save_every, 0, "save-every")
        _at_least(self.keep, 1, "keep-checkpoints")

    @property
    def save_interval(self) -> int:
        """Steps between checkpoints (0: at the end only)."""
        return 100 if self.save_every is None else self.save_every


@dataclass
class TrainConfig:
    """The built-in job: the small GPT on the standard-library corpus."""

    model: GPTConfig = field(default_factory=GPTConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimization: OptimizationConfig = field(default_factory=OptimizationConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    checkpointing: CheckpointConfig = field(default_factory=CheckpointConfig)
    slow_worker: float = 1.0
    """Make worker 0 this many times slower (a straggler, to see what async buys)."""
    report: str | None = None
    """Also write the JSON report here."""
    progress: bool = True
    """Show a live progress bar on rank 0."""
    timeout_s: float = 600.0
    """Seconds a collective may wait for its peers before the job fails instead of hanging."""

    @classmethod
    def flat(cls, **settings) -> TrainConfig:
        """A config from the flat names of the command line (`strategy`, `nproc`, `steps`,
        `global_batch`, `keep_checkpoints`, ...), each put in its part."""
        parts = {"data": {}, "optimization": {}, "strategy": {}, "checkpointing": {}}
        top = {}
        for key, value in settings.items():
            part, name = _FLAT.get(key, (None, key))
            if part is None:
                if key not in {f.name for f in dataclasses.fields(cls)}:
                    raise ConfigError(f"unknown training setting '{key}'")
                top[key] = value
            else:
                parts[part][name] = value
        return cls(data=DataConfig(**parts["data"]), optimization=OptimizationConfig(**parts["optimization"]),
                   strategy=StrategyConfig(**parts["strategy"]), checkpointing=CheckpointConfig(**parts["checkpointing"]),
                   **top)

    def validate(self):
        """Check every part, then what parts decide together; return the strategy object."""
        self.data.validate()
        self.optimization.validate()
        self.checkpointing.validate()
        strategy = self.strategy.build()
        trainers = strategy.batch_slices(self.strategy.nproc)
        if self.data.global_batch % trainers:
            raise ConfigError(f"global batch {self.data.global_batch} does not split evenly over {trainers} training "
                              f"ranks: give --global-batch a multiple of {trainers} (e.g. "
                              f"{self.data.global_batch // trainers * trainers or trainers})")
        microbatches = self.strategy.microbatches or self.strategy.pp
        if strategy.trains_by_step and (self.data.global_batch // trainers) % microbatches:
            raise ConfigError(f"each replica's {self.data.global_batch // trainers} sequences do not split into "
                              f"{microbatches} equal micro-batches: give --global-batch a multiple of "
                              f"{trainers * microbatches}")
        split = self.strategy.pipeline_split() if self.strategy.pp > 1 else None
        if isinstance(split, tuple):  # named cut points: layers of the built-in GPT, checked before any rank starts
            from ..models.gpt import pipeline_layer_names
            from ..pipeline.schedules import make_schedule
            from ..pipeline.split import bounds_at

            stages = make_schedule(self.strategy.schedule or "1f1b", self.strategy.pp, microbatches).stages
            bounds_at(pipeline_layer_names(self.model.n_layer), list(split), stages)
        if self.checkpointing.save_every is not None and not strategy.steps_together:
            raise ConfigError(f"--save-every does not apply to {strategy}: its workers share no step to checkpoint "
                              "at; use --mode sync to save checkpoints")
        return strategy

    def to_dict(self) -> dict:
        return asdict(self)


def _flat_names() -> dict[str, tuple[str, str]]:
    names = {}
    for part, cls in (("data", DataConfig), ("optimization", OptimizationConfig), ("strategy", StrategyConfig),
                      ("checkpointing", CheckpointConfig)):
        for f in dataclasses.fields(cls):
            names[f.name] = (part, f.name)
    names["strategy"] = ("strategy", "name")
    names["keep_checkpoints"] = ("checkpointing", "keep")
    names.pop("name")
    names.pop("keep")
    return names


_FLAT = _flat_names()
