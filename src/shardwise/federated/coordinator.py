"""A federated run: K clients multiplexed onto the ranks, rounds of sampling, local training and
weighted aggregation, with heterogeneous and unreliable clients.

[Note: federated rounds]
Client k lives on rank k mod N and keeps its data (and SCAFFOLD's control variate) there. Every
rank holds the global parameters x and the server optimizer; rank 0 is the coordinator. A round:
1. the sample S (⌈C·K⌉ clients, at least one) is drawn from a generator seeded by (seed, round),
   the same on every rank, as are which sampled clients fail mid-round;
2. the coordinator broadcasts x (the model sent to the clients; counted by the comm layer);
3. each rank trains its sampled clients in turn ([Note: federated algorithms]); a client whose
   simulated time (local steps x its slowness factor) passes the deadline is dropped, or with
   `partial` keeps the steps that fit; a failed client returns nothing;
4. one all-reduce sums n_k·Δ_k, n_k (and SCAFFOLD's Δc_k) over the returned clients; every rank
   applies the same server step, so x stays identical without another broadcast.
The round's report holds the test accuracy and loss, the bytes rank 0 moved, who took part and
who was dropped (and why). The coordinator's state (x, server optimizer, SCAFFOLD's controls,
the round, the history) is saved atomically after every round in the run folder.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from .. import comm
from ..errors import ConfigError
from ..runtime import env
from ..strategy.shard_files import write_file
from . import privacy, secure_agg
from .algorithms import ClientWork, ServerOptimizer, client_update, local_steps
from .config import FederatedConfig
from .tasks import Digits, make_task

STATE_FILE = "coordinator.pt"


def load_digits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits task's train and test tensors (for tests and references)."""
    task = Digits(1, "iid", seed)
    return task.train_x, task.train_y, task.test_x, task.test_y


def sample(config: FederatedConfig, round_index: int) -> tuple[list[int], list[bool]]:
    """The clients sampled in a round, and which of them fail (the same on every rank)."""
    rng = np.random.default_rng([config.seed, round_index])
    count = max(1, math.ceil(config.fraction * config.clients - 1e-9))
    chosen = sorted(int(k) for k in rng.choice(config.clients, size=count, replace=False))
    fails = [bool(f) for f in rng.random(count) < config.failure_rate]
    return chosen, fails


def slowness(config: FederatedConfig) -> np.ndarray:
    rng = np.random.default_rng([config.seed, 7])
    return np.exp(rng.normal(0.0, config.speed_spread, size=config.clients))


@torch.no_grad()
def evaluate(task, model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    vector_to_parameters(x.clone(), list(model.parameters()))
    return task.evaluate(model)


def federate_rank(config: FederatedConfig) -> dict | None:
    """Rank 0: {"history": one entry per round, "parameters": the final global vector}."""
    torch.set_num_threads(1)
    rank, world = env.rank(), env.world_size()
    task = make_task(config.data, config.clients, config.split, config.seed, config.model)
    model = task.build_model()
    x = parameters_to_vector(model.parameters()).detach().clone()
    d = x.numel()
    server = ServerOptimizer(config.server_opt, config.server_learning_rate)
    scaffold = config.algorithm == "scaffold"
    control = torch.zeros(d) if scaffold else None
    mine = [k for k in range(config.clients) if k % world == rank]
    client_controls = {k: torch.zeros(d) for k in mine} if scaffold else {}
    speeds = slowness(config)
    history: list[dict] = []
    start = 0
    if config.resume:
        start, x, history = _load(config, server, control, client_controls)
    bar = _bar(config, start) if rank == 0 and config.progress else None
    for round_index in range(start, config.rounds):
        started = time.perf_counter()
        comm.reset_comm_stats()
        chosen, fails = sample(config, round_index)
        comm.broadcast(x, src=0)
        length = d + 1 + (d if scaffold else 0)
        vectors: dict[int, torch.Tensor] = {}  # this rank's returned clients: [n_k·Δ_k, n_k, Δc_k]
        dropped: list[tuple[int, str]] = []
        keys = _key_exchange(chosen, rank, world, round_index) if config.secure_agg else None
        for k, failed in zip(chosen, fails):
            if k % world != rank:
                continue
            if failed:
                dropped.append((k, "failed"))
                continue
            data = task.client_data(k)
            n_k = len(data[1])
            work = ClientWork(config.algorithm, config.lr, config.local_epochs, config.batch, config.mu)
            steps = local_steps(n_k, work)
            if config.deadline is not None and steps * speeds[k] > config.deadline:
                fit = int(config.deadline / speeds[k])
                if not config.partial or fit < 1:
                    dropped.append((k, "late"))
                    continue
                work = ClientWork(config.algorithm, config.lr, config.local_epochs, config.batch, config.mu, fit)
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + round_index * 10_007 + k)
            delta, delta_control = client_update(model, x, data, work, generator, control, client_controls.get(k),
                                                 loss_fn=task.loss)
            vector = torch.zeros(length, dtype=torch.float64)
            if config.dp_noise is not None:  # [Note: DP-FedAvg]: clipped, every client weighs 1
                vector[:d] = privacy.clip_update(delta, config.dp_clip).double()
                vector[d] = 1.0
            else:
                vector[:d] = n_k * delta.double()
                vector[d] = n_k
            if scaffold:
                vector[d + 1:] = delta_control.double()
                client_controls[k] += delta_control
            vectors[k] = vector
        if config.secure_agg:
            total, unmaskable = _secure_total(vectors, keys, length, round_index)
            if unmaskable:  # the round is lost: its survivors' work cannot be unmasked
                dropped += [(k, "unmaskable: fewer survivors than the secret-sharing threshold") for k in vectors]
        else:
            total = torch.zeros(length, dtype=torch.float64)
            for vector in vectors.values():
                total += vector
            comm.all_reduce(total)
        dropped = sorted(item for part in comm.all_gather_object(dropped) for item in part)
        epsilon = None
        if config.dp_noise is not None:
            mean = _noisy_mean(total[:d], len(chosen), config, round_index)
            x = server.step(x, mean.float())
            epsilon = privacy.epsilon(round_index + 1, config.clients, len(chosen), config.dp_noise, config.dp_delta)
        elif total[d] > 0:
            x = server.step(x, (total[:d] / total[d]).float())
            if scaffold:
                control += (total[d + 1:] / config.clients).float()
        seconds = time.perf_counter() - started  # the round itself, before the test-set evaluation
        accuracy, loss = evaluate(task, model, x)
        gone = {k for k, _ in dropped}
        history.append({"round": round_index + 1, "accuracy": accuracy, "loss": loss, "seconds": seconds,
                        "bytes": comm.comm_stats()["total"], "clients": [k for k in chosen if k not in gone],
                        "dropped": [{"client": k, "why": why} for k, why in dropped],
                        **({"epsilon": epsilon if math.isfinite(epsilon) else None, "delta": config.dp_delta}
                           if epsilon is not None else {})})
        if config.run_dir:
            _save(config, round_index + 1, x, server, control, client_controls, history)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({"acc": f"{accuracy:.3f}", "loss": f"{loss:.3f}", "dropped": len(dropped)})
        if config.stop_at_target and config.target_accuracy is not None and accuracy >= config.target_accuracy:
            break  # every rank evaluates the same x, so every rank stops here
    if bar is not None:
        bar.close()
    return {"history": history, "parameters": x} if rank == 0 else None


def _noisy_mean(total: torch.Tensor, sampled: int, config: FederatedConfig, round_index: int) -> torch.Tensor:
    """The clipped updates' sum over the expected count, plus the coordinator's Gaussian noise
    (drawn on rank 0 from fresh randomness unless `dp_noise_seed` is set, then sent to every rank)."""
    mean = total / sampled
    if env.rank() == 0:
        seed = (int.from_bytes(os.urandom(8), "little") if config.dp_noise_seed is None
                else config.dp_noise_seed * 1_000_003 + round_index)
        noise = torch.randn(mean.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        mean = mean + noise * (config.dp_noise * config.dp_clip / sampled)
    comm.broadcast(mean, src=0)
    return mean


def _key_exchange(chosen: list[int], rank: int, world: int, round_index: int) -> dict:
    """[Note: secure aggregation] steps 1-2 for the sampled clients this rank hosts: key pairs,
    public keys to everyone, Shamir shares of each private key to the other sampled clients.
    Returns {"private": {k: key}, "publics": {k: key}, "shares": {owner: {holder: share}} (the
    shares this rank's clients hold), "threshold": t}."""
    mine = [k for k in chosen if k % world == rank]
    private, public = {}, {}
    for k in mine:
        private[k], public[k] = secure_agg.keypair()
    publics = {}
    for part in comm.all_gather_object(public):
        publics.update(part)
    threshold = len(chosen) // 2 + 1
    outgoing = {k: dict(zip(chosen, secure_agg.split_secret(private[k], len(chosen), threshold))) for k in mine}
    held: dict[int, dict[int, tuple[int, int]]] = {}
    for part in comm.all_gather_object(outgoing):  # relayed by the coordinator
        for owner, by_holder in part.items():
            held[owner] = {holder: share for holder, share in by_holder.items() if holder % world == rank}
    return {"private": private, "publics": publics, "shares": held, "threshold": threshold, "chosen": chosen}


def _secure_total(vectors: dict[int, torch.Tensor], keys: dict, length: int, round_index: int):
    """The sum of the returned clients' vectors, seen by the coordinator only as masked vectors
    ([Note: secure aggregation] steps 3-5); (total on every rank, whether unmasking failed)."""
    masked = {k: secure_agg.masked(k, v.numpy(), keys["private"][k], keys["publics"], round_index)
              for k, v in vectors.items()}
    received: dict[int, np.ndarray] = {}
    for part in comm.all_gather_object(masked):  # the clients' uploads to the coordinator
        received.update(part)
    survivors = sorted(received)
    dropped = [k for k in keys["chosen"] if k not in received]
    # survivors hand the coordinator their shares of the dropped clients' keys
    offered = {j: [keys["shares"][j][h] for h in keys["shares"].get(j, {}) if h in received] for j in dropped}
    shares: dict[int, list] = {j: [] for j in dropped}
    for part in comm.all_gather_object(offered):
        for j, got in part.items():
            shares[j] += got
    total = torch.zeros(length, dtype=torch.float64)
    unmaskable = any(len(shares[j]) < keys["threshold"] for j in dropped)
    if env.rank() == 0 and survivors and not unmaskable:
        summed = np.zeros(length, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in survivors:
                summed = summed + received[k]
        rebuilt = {j: secure_agg.recover_secret(shares[j][:keys["threshold"]]) for j in dropped}
        summed = secure_agg.remove_dropped(summed, survivors, rebuilt, keys["publics"], round_index)
        total = torch.from_numpy(secure_agg.decode(summed))
    comm.broadcast(total, src=0)
    return total, unmaskable


def _bar(config: FederatedConfig, start: int):
    from tqdm import tqdm

    return tqdm(total=config.rounds, initial=start, desc=f"{config.algorithm} rounds", unit="round", dynamic_ncols=True)


def _save(config, rounds_done, x, server, control, client_controls, history) -> None:
    """The coordinator's state after a round; SCAFFOLD's client controls gathered from their ranks."""
    controls = {}
    if client_controls:
        for part in comm.all_gather_object({k: v for k, v in client_controls.items()}):
            controls.update(part)
    if env.rank() != 0:
        return
    state = {"round": rounds_done, "x": x, "server": {"kind": server.kind, "state": server.state},
             "control": control, "client_controls": controls, "history": history,
             "config": {k: v for k, v in config.to_dict().items() if k in ("data", "model", "algorithm", "clients", "split", "seed")}}
    os.makedirs(config.run_dir, exist_ok=True)
    path = os.path.join(config.run_dir, STATE_FILE)
    write_file(path + ".tmp", lambda f: torch.save(state, f))
    os.replace(path + ".tmp", path)


def _load(config, server, control, client_controls) -> tuple[int, torch.Tensor, list[dict]]:
    path = os.path.join(config.resume, STATE_FILE) if os.path.isdir(config.resume) else config.resume
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot resume from {config.resume}: {str(exc).splitlines()[0]}") from None
    for key, value in state["config"].items():
        if getattr(config, key) != value:
            raise ConfigError(f"the run to resume used --{key.replace('_', '-')} {value}; resume with the same")
    server.state = state["server"]["state"]
    if control is not None and state["control"] is not None:
        control.copy_(state["control"])
    for k in client_controls:
        if k in state["client_controls"]:
            client_controls[k].copy_(state["client_controls"][k])
    return int(state["round"]), state["x"], list(state["history"])
