"""`shardwise federate`: federated learning on the bundled digits, K clients on N local ranks."""

from __future__ import annotations

import json

from ..federated import FederatedConfig, run_federated
from ..federated.tasks import DIGITS_MODELS
from .parser import non_negative_real, positive_int, positive_real, real_number

DEFAULTS = FederatedConfig()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("federate", help="federated learning: FedSGD/FedAvg/FedProx/SCAFFOLD over many clients",
                              description="Rounds of client sampling, local training and weighted aggregation, "
                                          "K clients multiplexed onto --nproc local ranks.")
    p.add_argument("--data", default=DEFAULTS.data, help="digits (scikit-learn's bundled 8x8 digits)")
    p.add_argument("--algorithm", default=DEFAULTS.algorithm, choices=["fedsgd", "fedavg", "fedprox", "scaffold"],
                   help="what clients do each round: one full-batch step, E epochs, E epochs with a proximal term, "
                        "E epochs with control variates")
    p.add_argument("--server-opt", default=DEFAULTS.server_opt, choices=["sgd", "avgm", "adam"],
                   help="how the coordinator applies the mean update: plain (FedAvg), with momentum (FedAvgM), Adam (FedAdam)")
    p.add_argument("--server-lr", type=positive_real, default=None, help="default 1 (sgd, avgm) or 0.01 (adam)")
    p.add_argument("--clients", type=positive_int, default=DEFAULTS.clients, help="K, clients in all (corpus: 23, one per file)")
    p.add_argument("--model", default=DEFAULTS.model, choices=list(DIGITS_MODELS),
                   help="digits: an MLP (64-64-10) or a small CNN (the corpus trains the built-in GPT)")
    p.add_argument("--fraction", type=real_number(above=0, most=1), default=DEFAULTS.fraction,
                   help="clients sampled per round (C)")
    p.add_argument("--local-epochs", type=positive_int, default=DEFAULTS.local_epochs, help="E")
    p.add_argument("--batch", type=positive_int, default=DEFAULTS.batch, help="B")
    p.add_argument("--lr", type=positive_real, default=DEFAULTS.lr, help="clients' SGD learning rate")
    p.add_argument("--mu", type=non_negative_real, default=DEFAULTS.mu, help="FedProx's proximal weight")
    p.add_argument("--split", default=DEFAULTS.split, help="iid, dirichlet:ALPHA or shards:N (N label-sorted shards per client)")
    p.add_argument("--rounds", type=positive_int, default=DEFAULTS.rounds, help="communication rounds")
    p.add_argument("--target-accuracy", type=real_number(above=0, most=1), default=None,
                   help="test accuracy whose first round the report gives as rounds_to_target")
    p.add_argument("--stop-at-target", action="store_true", help="end at the first round reaching --target-accuracy")
    p.add_argument("--deadline", type=positive_real, default=None,
                   help="round deadline in local steps of a speed-1 client; later clients are dropped")
    p.add_argument("--partial", action="store_true", help="with --deadline: keep a late client's finished steps")
    p.add_argument("--speed-spread", type=non_negative_real, default=0.0, help="clients' slowness exp(N(0, s^2))")
    p.add_argument("--failure-rate", type=real_number(least=0, most=0.99), default=0.0,
                   help="probability that a sampled client fails mid-round")
    p.add_argument("--secure-agg", action="store_true",
                   help="pairwise-masked aggregation: the coordinator sees only masked vectors and their sum")
    p.add_argument("--dp-noise", type=non_negative_real, default=None,
                   help="DP-FedAvg: noise multiplier z (Gaussian noise z*clip/m on the mean of m clipped updates)")
    p.add_argument("--dp-clip", type=positive_real, default=DEFAULTS.dp_clip, help="DP-FedAvg: clip of each update's norm")
    p.add_argument("--dp-delta", type=real_number(above=0, most=0.5), default=DEFAULTS.dp_delta,
                   help="delta at which epsilon is reported each round")
    p.add_argument("--seed", type=int, default=0, help="seed of the model, the partition, the sampling and the clients' batches")
    p.add_argument("--nproc", type=positive_int, default=DEFAULTS.nproc, help="local ranks the clients are spread over")
    p.add_argument("--run-dir", default=None, help="folder for report.json, rounds.png and the coordinator's checkpoint")
    p.add_argument("--resume", default=None, metavar="RUN", help="run folder whose coordinator checkpoint to continue")
    p.add_argument("--report", default=None, metavar="PATH", help="also write the JSON report here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=main)


def main(args) -> int:
    config = FederatedConfig(
        data=args.data, model=args.model, algorithm=args.algorithm, server_opt=args.server_opt, server_lr=args.server_lr,
        clients=args.clients, fraction=args.fraction, local_epochs=args.local_epochs, batch=args.batch, lr=args.lr,
        mu=args.mu, split=args.split, rounds=args.rounds, target_accuracy=args.target_accuracy,
        stop_at_target=args.stop_at_target, seed=args.seed,
        nproc=args.nproc, deadline=args.deadline, partial=args.partial, speed_spread=args.speed_spread,
        failure_rate=args.failure_rate, dp_noise=args.dp_noise, dp_clip=args.dp_clip, dp_delta=args.dp_delta,
        secure_agg=args.secure_agg, report=args.report, run_dir=args.run_dir, resume=args.resume,
        progress=not args.no_progress)
    report = run_federated(config)
    last = report["rounds"][-1]
    print(json.dumps({"rounds": len(report["rounds"]), "final_accuracy": round(last["accuracy"], 4),
                      "final_loss": round(last["loss"], 4), "rounds_to_target": report["rounds_to_target"],
                      "bytes_to_target": report["bytes_to_target"],
                      **({"epsilon": last["epsilon"], "delta": last["delta"]} if "epsilon" in last else {})}))
    return 0
