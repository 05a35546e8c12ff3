"""The settings of a federated run (`shardwise federate`), validated before any process starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ConfigError
from .algorithms import ALGORITHMS, SERVER_OPTIMIZERS
from .partition import parse_split
from .tasks import DIGITS_MODELS


@dataclass
class FederatedConfig:
    data: str = "digits"
    model: str = "mlp"
    """digits: "mlp" or "cnn" (the corpus trains the built-in GPT)."""
    algorithm: str = "fedavg"
    server_opt: str = "sgd"
    server_lr: float | None = None
    """Server learning rate (default: 1 for sgd and avgm, 0.01 for adam)."""
    clients: int = 100
    fraction: float = 0.1
    """C: the fraction of clients sampled each round (at least one)."""
    local_epochs: int = 5
    batch: int = 10
    lr: float = 0.05
    """Clients' SGD learning rate."""
    mu: float = 0.01
    """FedProx's proximal weight."""
    split: str = "iid"
    rounds: int = 50
    target_accuracy: float | None = None
    stop_at_target: bool = False
    """End the run at the first round that reaches the target accuracy."""
    seed: int = 0
    nproc: int = 2
    deadline: float | None = None
    """Round deadline in units of one local step of a client of speed 1; later clients are dropped."""
    partial: bool = False
    """With --deadline: accept a late client's partial work (the steps it finished) instead."""
    speed_spread: float = 0.0
    """Clients' slowness factors are exp(N(0, spread²)) (0: all equal)."""
    failure_rate: float = 0.0
    """Probability that a sampled client fails mid-round."""
    dp_noise: float | None = None
    """DP-FedAvg's noise multiplier z (None: no differential privacy) ([Note: DP-FedAvg])."""
    dp_clip: float = 1.0
    """DP-FedAvg's clip S of each client's update norm."""
    dp_delta: float = 1e-5
    """δ at which ε is reported."""
    dp_noise_seed: int | None = None
    """Seed of the DP noise (None: fresh randomness each round, as privacy needs; tests fix it)."""
    secure_agg: bool = False
    """Pairwise-masked aggregation ([Note: secure aggregation])."""
    report: str | None = None
    run_dir: str | None = None
    resume: str | None = None
    progress: bool = True

    def validate(self) -> None:
        if self.data not in ("digits", "corpus"):
            raise ConfigError(f"--data must be digits or corpus, got '{self.data}'")
        if self.model not in DIGITS_MODELS or (self.data == "corpus" and self.model != "mlp"):
            raise ConfigError(f"--model is mlp or cnn on digits (the corpus trains the built-in GPT), got "
                              f"'{self.model}'")
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"--algorithm must be one of {', '.join(ALGORITHMS)}, got '{self.algorithm}'")
        if self.server_opt not in SERVER_OPTIMIZERS:
            raise ConfigError(f"--server-opt must be one of {', '.join(SERVER_OPTIMIZERS)}, got '{self.server_opt}'")
        for name in ("clients", "local_epochs", "batch", "rounds", "nproc"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"--fraction must be in (0, 1], got {self.fraction}")
        for name in ("lr",):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.mu < 0 or self.speed_spread < 0 or not 0 <= self.failure_rate < 1:
            raise ConfigError("--mu and --speed-spread must be >= 0 and --failure-rate in [0, 1)")
        if self.deadline is not None and not self.deadline > 0:
            raise ConfigError(f"--deadline must be positive, got {self.deadline}")
        if self.partial and self.deadline is None:
            raise ConfigError("--partial applies with --deadline")
        if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
            raise ConfigError(f"--target-accuracy must be in (0, 1], got {self.target_accuracy}")
        parse_split(self.split)
        if self.dp_noise is not None:
            if self.dp_noise < 0 or not self.dp_clip > 0 or not 0 < self.dp_delta < 1:
                raise ConfigError("--dp-noise must be >= 0, --dp-clip positive and --dp-delta in (0, 1)")
            if self.algorithm == "scaffold":
                raise ConfigError("--dp-noise bounds each client's update; SCAFFOLD's control variates are not "
                                  "covered: use fedavg, fedprox or fedsgd")

    @property
    def server_learning_rate(self) -> float:
        if self.server_lr is not None:
            return self.server_lr
        return 0.01 if self.server_opt == "adam" else 1.0

    def to_dict(self) -> dict:
        return asdict(self)
