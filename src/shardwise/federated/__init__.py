"""Federated learning: clients multiplexed onto ranks, FedSGD/FedAvg/FedProx/SCAFFOLD with
server optimizers, heterogeneous and unreliable clients ([Note: federated rounds])."""

from .config import FederatedConfig
from .run import run_federated

__all__ = ["FederatedConfig", "run_federated"]
