"""Splitting a labelled data set over K clients (pure, seeded): IID, label skew by a Dirichlet
prior, and McMahan et al.'s shards (sort by label, cut into 2K shards, two per client).

Every client gets at least one sample; sizes vary (IID: a random split point per client, so
sizes vary too, as real clients' do).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

SPLITS = ("iid", "dirichlet:ALPHA", "shards:N")


def parse_split(text: str) -> tuple[str, float]:
    kind, _, arg = str(text).partition(":")
    try:
        if kind == "iid" and not arg:
            return "iid", 0.0
        if kind == "dirichlet" and float(arg) > 0:
            return "dirichlet", float(arg)
        if kind == "shards" and int(arg) >= 1:
            return "shards", int(arg)
    except ValueError:
        pass
    raise ConfigError(f"--split must be iid, dirichlet:ALPHA (ALPHA > 0) or shards:N (N >= 1), got '{text}'")


def partition(labels: np.ndarray, clients: int, split: str, seed: int = 0) -> list[np.ndarray]:
    """Index arrays, one per client, covering every sample once."""
    labels = np.asarray(labels)
    n = len(labels)
    if clients < 1 or clients > n:
        raise ConfigError(f"--clients must be between 1 and the {n} training samples, got {clients}")
    kind, arg = parse_split(split)
    rng = np.random.default_rng(seed)
    if kind == "iid":
        order = rng.permutation(n)
        cuts = np.sort(rng.choice(np.arange(1, n), size=clients - 1, replace=False)) if clients > 1 else []
        parts = np.split(order, cuts)
    elif kind == "dirichlet":
        parts = _dirichlet(labels, clients, arg, rng)
    else:
        parts = _shards(labels, clients, int(arg), rng)
    return [np.sort(p) for p in parts]


def _dirichlet(labels, clients, alpha, rng) -> list[np.ndarray]:
    buckets: list[list[int]] = [[] for _ in range(clients)]
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet([alpha] * clients)
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for client, part in enumerate(np.split(idx, cuts)):
            buckets[client].extend(part.tolist())
    # a client left empty by the draw takes one sample from the largest
    for client in range(clients):
        if not buckets[client]:
            donor = max(range(clients), key=lambda c: len(buckets[c]))
            buckets[client].append(buckets[donor].pop())
    return [np.array(b, dtype=np.int64) for b in buckets]


def _shards(labels, clients, per_client, rng) -> list[np.ndarray]:
    count = clients * per_client
    if count > len(labels):
        raise ConfigError(f"shards:{per_client} over {clients} clients needs {count} shards of at least one sample; "
                          f"there are {len(labels)} samples")
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, count)
    picks = rng.permutation(count)
    return [np.concatenate([shards[s] for s in picks[c * per_client:(c + 1) * per_client]]) for c in range(clients)]
