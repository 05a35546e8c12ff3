"""Secure aggregation's arithmetic: masks cancel in the sum, dropped clients' masks are removed
from their rebuilt keys, and a masked vector says nothing about the client's own."""

import numpy as np

from shardwise.federated import secure_agg as sa


def _round(n: int, length: int, round_index: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    keys = {k: sa.keypair() for k in range(n)}
    publics = {k: public for k, (_, public) in keys.items()}
    values = {k: rng.normal(0, 5, size=length) for k in range(n)}
    masked = {k: sa.masked(k, values[k], keys[k][0], publics, round_index) for k in range(n)}
    return keys, publics, values, masked


def test_masks_cancel_in_the_sum():
    _, _, values, masked = _round(10, 50)
    total = np.zeros(50, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for y in masked.values():
            total = total + y
    assert np.allclose(sa.decode(total), sum(values.values()), rtol=0, atol=10 * 2 ** -32)


def test_one_of_ten_dropping_after_masking_leaves_the_sum_of_nine():
    keys, publics, values, masked = _round(10, 50)
    dropped, threshold = 4, 6
    shares = sa.split_secret(keys[dropped][0], holders=10, threshold=threshold)  # handed to all ten before masking
    survivors = [k for k in range(10) if k != dropped]
    total = np.zeros(50, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in survivors:
            total = total + masked[k]
    rebuilt = sa.recover_secret([shares[k] for k in survivors[:threshold]])
    assert rebuilt == keys[dropped][0]
    unmasked = sa.decode(sa.remove_dropped(total, survivors, {dropped: rebuilt}, publics, 3))
    assert np.allclose(unmasked, sum(values[k] for k in survivors), rtol=0, atol=10 * 2 ** -32)


def test_fewer_shares_than_the_threshold_do_not_rebuild_the_key():
    secret = sa.keypair()[0]
    shares = sa.split_secret(secret, holders=7, threshold=4)
    assert sa.recover_secret(shares[2:6]) == secret and sa.recover_secret(shares[::2]) == secret
    try:
        assert sa.recover_secret(shares[:3]) != secret
    except ValueError:
        pass  # almost always: three points of a cubic give a field element far beyond 32 bytes


def test_a_masked_vector_is_independent_of_the_update():
    # Over many rounds, one coordinate of a client's update against the same coordinate of what
    # the coordinator receives from it: no correlation (400 trials: |r| < 0.15 is 3 sigma).
    rng = np.random.default_rng(1)
    updates, seen = [], []
    for trial in range(400):
        keys = [sa.keypair() for _ in range(3)]
        publics = {k: public for k, (_, public) in enumerate(keys)}
        value = rng.normal(0, 1)
        y = sa.masked(0, np.array([value]), keys[0][0], publics, trial)
        updates.append(value)
        seen.append(float(y[0]) / 2 ** 64)
    r = np.corrcoef(updates, seen)[0, 1]
    assert abs(r) < 0.15
    assert 0.4 < np.mean(seen) < 0.6  # spread over the whole ring
