"""Federated rounds across ranks: FedAvg with one full-batch step equals FedSGD equals gradient
descent on the union; dropped clients are reported and left out; a coordinator resumed from
its checkpoint continues the same curve."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector

import shardwise as sw
from shardwise.federated import FederatedConfig, run_federated
from shardwise.federated.run import build_report
from shardwise.federated.coordinator import federate_rank, load_digits
from shardwise.federated.tasks import digits_model as build_model
from shardwise.testing.parity import ATOL, RTOL


def _gradient_descent(rounds: int, lr: float) -> torch.Tensor:
    x_train, y_train, _, _ = load_digits(0)
    model = build_model(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(rounds):
        optimizer.zero_grad()
        F.cross_entropy(model(x_train), y_train).backward()
        optimizer.step()
    return parameters_to_vector(model.parameters()).detach()


@pytest.mark.timeout(240)
def test_fedavg_with_one_full_batch_step_is_fedsgd_is_gradient_descent():
    common = dict(clients=12, fraction=1.0, rounds=3, lr=0.3, local_epochs=1, batch=10_000, split="dirichlet:0.5",
                  progress=False)
    reference = _gradient_descent(3, 0.3)
    configs = [FederatedConfig(algorithm=algorithm, nproc=3, **common) for algorithm in ("fedsgd", "fedavg")]
    for config, got in zip(configs, sw.launch(_both, 3, args=(configs,))[0]):
        assert torch.allclose(got, reference, rtol=RTOL, atol=ATOL), config.algorithm


def _both(configs):
    return [(federate_rank(config) or {}).get("parameters") for config in configs]


def _histories(configs):
    return [(federate_rank(config) or {}).get("history") for config in configs]


def _reports(*configs) -> list[dict]:
    """Several runs in one launch (starting ranks is the expensive part), as run_federated reports them."""
    for config in configs:
        config.validate()
    return [build_report(c, h) for c, h in zip(configs, sw.launch(_histories, configs[0].nproc, args=(list(configs),))[0])]


@pytest.mark.timeout(240)
def test_dropped_clients_are_named_and_left_out(tmp_path):
    report, partial = _reports(
        FederatedConfig(clients=20, fraction=0.5, rounds=3, failure_rate=0.3, speed_spread=1.0, deadline=12.0, nproc=2,
                        progress=False),
        FederatedConfig(clients=20, fraction=0.5, rounds=2, speed_spread=1.0, deadline=12.0, partial=True, nproc=2,
                        progress=False))
    entries = report["rounds"]
    assert {"round", "accuracy", "loss", "bytes", "clients", "dropped"} <= set(entries[0])
    whys = {d["why"] for e in entries for d in e["dropped"]}
    assert whys == {"failed", "late"}
    for e in entries:
        assert not {d["client"] for d in e["dropped"]} & set(e["clients"])
        assert len(e["clients"]) + len(e["dropped"]) == 10 and e["bytes"] > 0
    assert all(d["why"] != "late" for e in partial["rounds"] for d in e["dropped"])


@pytest.mark.timeout(240)
def test_a_resumed_coordinator_continues_the_same_curve(tmp_path):
    base = FederatedConfig(algorithm="scaffold", server_opt="avgm", clients=16, fraction=0.25, rounds=4, nproc=2,
                           split="dirichlet:0.3", progress=False)
    run_dir = str(tmp_path / "run")
    whole, _ = _reports(base, dataclasses.replace(base, rounds=2, run_dir=run_dir))
    resumed = run_federated(dataclasses.replace(base, run_dir=run_dir, resume=run_dir))
    assert [r["accuracy"] for r in resumed["rounds"]] == pytest.approx([r["accuracy"] for r in whole["rounds"]], abs=1e-6)
    assert [r["loss"] for r in resumed["rounds"]] == pytest.approx([r["loss"] for r in whole["rounds"]], rel=1e-5)


@pytest.mark.timeout(240)
def test_secure_aggregation_changes_nothing_in_the_sum():
    # clients fail after masking in most rounds: their masks are removed from rebuilt keys
    base = FederatedConfig(clients=30, fraction=0.34, rounds=2, failure_rate=0.2, nproc=2, progress=False)
    plain, secure = _reports(base, dataclasses.replace(base, secure_agg=True))
    assert any(r["dropped"] for r in secure["rounds"])
    assert [r["dropped"] for r in secure["rounds"]] == [r["dropped"] for r in plain["rounds"]]
    assert [r["loss"] for r in secure["rounds"]] == pytest.approx([r["loss"] for r in plain["rounds"]], rel=1e-6)


@pytest.mark.timeout(240)
def test_dp_fedavg_reports_a_growing_epsilon_and_still_learns():
    config = FederatedConfig(clients=50, fraction=0.2, rounds=6, dp_noise=0.3, dp_clip=1.0, dp_noise_seed=0, nproc=2,
                             progress=False)
    report = run_federated(config)
    eps = [r["epsilon"] for r in report["rounds"]]
    assert all(a < b for a, b in zip(eps, eps[1:])) and report["rounds"][0]["delta"] == 1e-5
    accuracy = [r["accuracy"] for r in report["rounds"]]
    assert accuracy[-1] > accuracy[0] and accuracy[-1] > 0.3  # ten classes: chance is 0.1
