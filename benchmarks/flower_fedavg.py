"""Flower's FedAvg on the same task as `shardwise federate`: digits, the same partitions, model,
client training and seeds, for a side-by-side run (accuracy per round, wall time per round).

Flower is not a dependency of shardwise (it brings Ray); run this in an environment that has it:

    python3.11 -m venv /tmp/flwr && . /tmp/flwr/bin/activate
    echo torch==2.13.0 > c.txt && pip install torch==2.13.0 && pip install -c c.txt "flwr[simulation]" scikit-learn
    PYTHONPATH=src python benchmarks/flower_fedavg.py --rounds 30 --json flower.json

Clients train exactly as shardwise's (`federated.algorithms.client_update`); Flower samples
them with its own generator and weights the aggregate by their sample counts, as FedAvg does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn.utils import parameters_to_vector, vector_to_parameters  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--split", default="iid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpus", type=int, default=2, help="clients trained at once")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import flwr
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from shardwise.federated.algorithms import ClientWork, client_update
    from shardwise.federated.tasks import Digits

    task = Digits(args.clients, args.split, args.seed)
    initial = parameters_to_vector(task.build_model().parameters()).detach()
    timeline: list[tuple[int, float, float, float]] = []

    class Client(NumPyClient):
        def __init__(self, k: int):
            self.k = k

        def fit(self, parameters, config):
            torch.set_num_threads(1)
            x = torch.from_numpy(parameters[0])
            model = task.build_model()
            data = task.client_data(self.k)
            generator = torch.Generator().manual_seed(args.seed * 1_000_003 + int(config["round"]) * 10_007 + self.k)
            work = ClientWork("fedavg", args.lr, args.local_epochs, args.batch)
            delta, _ = client_update(model, x, data, work, generator)
            return [(x + delta).numpy()], len(data[1]), {}

    def client_fn(context: Context):
        return Client(int(context.node_config["partition-id"])).to_client()

    def evaluate(server_round, parameters, config):
        model = task.build_model()
        vector_to_parameters(torch.from_numpy(parameters[0]).clone(), list(model.parameters()))
        accuracy, loss = task.evaluate(model)
        timeline.append((server_round, time.perf_counter(), accuracy, loss))
        return loss, {"accuracy": accuracy}

    def server_fn(context: Context):
        strategy = FedAvg(fraction_fit=args.fraction, fraction_evaluate=0.0, min_fit_clients=1,
                          min_available_clients=args.clients, evaluate_fn=evaluate,
                          on_fit_config_fn=lambda r: {"round": r},
                          initial_parameters=ndarrays_to_parameters([initial.numpy()]))
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=args.rounds))

    started = time.perf_counter()
    run_simulation(server_app=ServerApp(server_fn=server_fn), client_app=ClientApp(client_fn=client_fn),
                   num_supernodes=args.clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": args.cpus}})
    total = time.perf_counter() - started
    rounds = sorted(timeline)[1:]  # round 0 evaluates the initial model
    per_round = [b[1] - a[1] for a, b in zip(sorted(timeline), sorted(timeline)[1:])]
    result = {"flwr": flwr.__version__, "accuracy": [r[2] for r in rounds], "loss": [r[3] for r in rounds],
              "seconds_per_round": per_round, "median_seconds_per_round": float(np.median(per_round)),
              "wall_seconds": total}
    print(json.dumps({k: v for k, v in result.items() if k not in ("loss", "seconds_per_round")}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
