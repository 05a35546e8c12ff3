"""What a client does with the global model, and how the server applies the clients' updates
(pure torch, no processes).

[Note: federated algorithms]
Parameters travel as one flat fp32 vector x. A client k with n_k samples returns Δ_k = y_k - x,
its locally trained parameters minus the global ones:
- fedsgd: one full-batch gradient step, y = x - lr·∇f_k(x) (McMahan et al.'s FedSGD);
- fedavg: E epochs of mini-batch SGD (batch B) from x;
- fedprox: the same on f_k(y) + μ/2·||y - x||² (Li et al. 2020);
- scaffold: each step uses ∇f_k(y) - c_k + c (server and client control variates); then
  c_k⁺ = c_k - c + (x - y)/(K·lr) after K steps, and the client also returns Δc_k = c_k⁺ - c_k
  (Karimireddy et al. 2020, option II).
The server averages Δ weighted by n_k, takes g = -mean Δ as a pseudo-gradient and steps:
sgd x ← x - η·g (η = 1: plain averaging); avgm with momentum β (FedAvgM); adam (FedAdam,
Reddi et al. 2021: x ← x - η·m/(√v + τ)). SCAFFOLD's server control moves by
c ← c + (|S|/K)·mean Δc.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ..errors import ConfigError

ALGORITHMS = ("fedsgd", "fedavg", "fedprox", "scaffold")
SERVER_OPTIMIZERS = ("sgd", "avgm", "adam")


@dataclass(frozen=True)
class ClientWork:
    algorithm: str
    lr: float
    epochs: int
    batch: int
    mu: float = 0.0
    max_steps: int | None = None
    """A partial update: stop after this many steps (a late client's inexact solution)."""


def local_steps(n: int, work: ClientWork) -> int:
    """Steps a client with n samples takes (fedsgd: one)."""
    if work.algorithm == "fedsgd":
        return 1
    steps = work.epochs * -(-n // work.batch)
    return steps if work.max_steps is None else min(steps, work.max_steps)


def client_update(model: nn.Module, x: torch.Tensor, data: tuple[torch.Tensor, torch.Tensor], work: ClientWork,
                  generator: torch.Generator, control: torch.Tensor | None = None,
                  client_control: torch.Tensor | None = None, loss_fn=F.cross_entropy) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(Δ, Δc or None) of one client from global parameters `x` ([Note: federated algorithms])."""
    inputs, labels = data
    n = len(labels)
    params = [p for p in model.parameters()]
    vector_to_parameters(x.clone(), params)  # the parameters become views of what it is given: not of x
    optimizer = torch.optim.SGD(params, lr=work.lr)
    steps = local_steps(n, work)
    batch = n if work.algorithm == "fedsgd" else work.batch
    taken = 0
    while taken < steps:
        order = torch.randperm(n, generator=generator) if work.algorithm != "fedsgd" else torch.arange(n)
        for start in range(0, n, batch):
            if taken == steps:
                break
            idx = order[start:start + batch]
            loss = loss_fn(model(inputs[idx]), labels[idx])
            if work.algorithm == "fedprox" and work.mu > 0:
                loss = loss + work.mu / 2 * (parameters_to_vector(params) - x).pow(2).sum()
            optimizer.zero_grad()
            loss.backward()
            if work.algorithm == "scaffold":
                correction = control - client_control
                at = 0
                for p in params:
                    p.grad.add_(correction[at:at + p.numel()].view_as(p))
                    at += p.numel()
            optimizer.step()
            taken += 1
    y = parameters_to_vector(params).detach()
    delta = y - x
    if work.algorithm != "scaffold":
        return delta, None
    new_control = client_control - control + (x - y) / (steps * work.lr)
    return delta, new_control - client_control


@dataclass
class ServerOptimizer:
    kind: str = "sgd"
    lr: float = 1.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.99)
    tau: float = 1e-3
    state: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in SERVER_OPTIMIZERS:
            raise ConfigError(f"--server-opt must be one of {', '.join(SERVER_OPTIMIZERS)}, got '{self.kind}'")
        if not self.lr > 0:
            raise ConfigError(f"--server-lr must be positive, got {self.lr}")

    def step(self, x: torch.Tensor, mean_delta: torch.Tensor) -> torch.Tensor:
        """The new global parameters from the weighted mean of the clients' Δ."""
        g = -mean_delta
        if self.kind == "sgd":
            return x - self.lr * g
        if self.kind == "avgm":
            m = self.state.setdefault("m", torch.zeros_like(x))
            m.mul_(self.momentum).add_(g)
            return x - self.lr * m
        m = self.state.setdefault("m", torch.zeros_like(x))
        v = self.state.setdefault("v", torch.zeros_like(x))
        m.mul_(self.betas[0]).add_(g, alpha=1 - self.betas[0])
        v.mul_(self.betas[1]).addcmul_(g, g, value=1 - self.betas[1])
        return x - self.lr * m / (v.sqrt() + self.tau)
