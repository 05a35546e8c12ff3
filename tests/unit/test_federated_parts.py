"""Federated learning's pure parts: partitions, client updates, server optimizers."""

import numpy as np
import pytest
import torch

from shardwise.errors import ConfigError
from shardwise.federated.algorithms import ClientWork, ServerOptimizer, client_update, local_steps
from shardwise.federated.config import FederatedConfig
from shardwise.federated.coordinator import load_digits, sample
from shardwise.federated.tasks import digits_model as build_model
from shardwise.federated.partition import partition


LABELS = np.repeat(np.arange(10), 30)


@pytest.mark.parametrize("split", ["iid", "dirichlet:0.5", "dirichlet:0.1", "shards:2"])
def test_partitions_cover_every_sample_once_and_leave_no_client_empty(split):
    parts = partition(LABELS, 20, split, seed=3)
    assert len(parts) == 20 and all(len(p) >= 1 for p in parts)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(LABELS)))
    assert partition(LABELS, 20, split, seed=3)[5].tolist() == parts[5].tolist()  # seeded


def test_skew_grows_as_alpha_shrinks_and_shards_give_two_classes():
    def classes(parts):
        return np.mean([len(set(LABELS[p].tolist())) for p in parts])
    assert classes(partition(LABELS, 20, "dirichlet:0.1")) < classes(partition(LABELS, 20, "dirichlet:0.5")) \
        < classes(partition(LABELS, 20, "iid"))
    # two label-sorted shards per client; a shard may straddle two labels (as in McMahan et al.)
    assert classes(partition(LABELS, 20, "shards:2")) <= 2.5
    sizes = [len(p) for p in partition(LABELS, 20, "iid")]
    assert len(set(sizes)) > 1  # sample counts vary


def test_fedprox_without_mu_and_scaffold_without_controls_are_fedavg():
    x_train, y_train, _, _ = load_digits(0)
    model = build_model(0)
    x = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    data = (x_train[:37], y_train[:37])
    deltas = []
    for algorithm in ("fedavg", "fedprox", "scaffold"):
        work = ClientWork(algorithm, 0.05, 2, 10, mu=0.0)
        zeros = torch.zeros_like(x)
        delta, _ = client_update(model, x, data, work, torch.Generator().manual_seed(1), zeros, zeros)
        deltas.append(delta)
    assert torch.allclose(deltas[0], deltas[1]) and torch.allclose(deltas[0], deltas[2])
    assert local_steps(37, ClientWork("fedavg", 0.05, 2, 10)) == 8 and local_steps(37, ClientWork("fedsgd", 0.05, 2, 10)) == 1


def test_server_optimizers():
    x, delta = torch.ones(3), torch.tensor([0.5, -0.5, 0.0])
    assert torch.equal(ServerOptimizer("sgd", 1.0).step(x, delta), x + delta)
    avgm = ServerOptimizer("avgm", 1.0, momentum=0.5)
    first = avgm.step(x, delta)
    assert torch.allclose(avgm.step(first, delta), first + 1.5 * delta)
    adam = ServerOptimizer("adam", 0.01)
    assert torch.allclose(adam.step(x, delta) - x, 0.01 * torch.sign(delta) * (delta.abs() > 0), atol=1e-3)


def test_sampling_is_seeded_and_at_least_one():
    config = FederatedConfig(clients=100, fraction=0.1, failure_rate=0.3)
    assert sample(config, 4) == sample(config, 4) and len(sample(config, 4)[0]) == 10
    assert len(sample(FederatedConfig(clients=5, fraction=0.01), 0)[0]) == 1


@pytest.mark.parametrize("bad", [dict(algorithm="fedfoo"), dict(fraction=0), dict(split="dirichlet:0"),
                                 dict(partial=True), dict(data="imagenet"), dict(server_opt="lamb"),
                                 dict(model="resnet"), dict(data="corpus", model="cnn")])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ConfigError):
        FederatedConfig(**bad).validate()


def test_dp_clipping_and_the_accountant():
    from shardwise.federated.privacy import clip_update, epsilon

    big = torch.full((4,), 3.0)
    assert torch.allclose(clip_update(big, 1.0).norm(), torch.tensor(1.0)) and torch.equal(clip_update(big / 100, 1.0), big / 100)
    eps = [epsilon(r, 100, 10, 1.0, 1e-5) for r in (1, 10, 50)]
    assert eps[0] < eps[1] < eps[2] < 20
    assert epsilon(10, 100, 10, 2.0, 1e-5) < eps[1]  # more noise, less privacy spent


def test_the_corpus_is_split_by_source_file():
    from shardwise.data.corpus import CORPUS_FILES
    from shardwise.federated.tasks import SourceFiles

    task = SourceFiles(len(CORPUS_FILES), seed=0)
    sizes = [len(task.client_data(k)[0]) for k in range(task.clients)]
    assert task.clients == 23 and min(sizes) >= 1 and max(sizes) > 5 * min(sizes)  # natural, unequal clients
    x, y = task.client_data(0)
    assert torch.equal(x[0, 1:], y[0, :-1])  # next-character targets
    # each file its own distribution: character frequencies differ between clients
    def freq(k):
        return torch.bincount(task.client_data(k)[0].reshape(-1), minlength=96).float() / task.client_data(k)[0].numel()
    assert (freq(0) - freq(5)).abs().sum() > 0.1
    with pytest.raises(ConfigError, match="--clients 23"):
        SourceFiles(10, seed=0)


def test_the_digits_cnn_classifies_8x8_images():
    FederatedConfig(model="cnn").validate()
    model = build_model(0, "cnn")
    assert model(torch.rand(5, 64)).shape == (5, 10)
    assert sum(p.numel() for p in model.parameters()) < 10_000
