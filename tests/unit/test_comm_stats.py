import pytest

from shardwise.comm.stats import CommStats, ring_bytes


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
def test_ring_volumes(n):
    s = 1200
    assert ring_bytes("all_reduce", s, n) == pytest.approx(2 * (n - 1) / n * s)
    assert ring_bytes("reduce_scatter", s, n) == pytest.approx((n - 1) / n * s)
    assert ring_bytes("all_gather", s, n) == pytest.approx((n - 1) / n * s)
    assert ring_bytes("send", s, n) == s


def test_stats_accumulate_and_reset():
    stats = CommStats()
    stats.record("all_reduce", 1000, 4)
    stats.record("broadcast", 10, 4)
    snap = stats.snapshot()
    assert snap["all_reduce"] == 1500 and snap["broadcast"] == 10 and snap["total"] == 1510
    stats.reset()
    assert stats.snapshot()["total"] == 0


def test_unknown_kind():
    with pytest.raises(ValueError):
        ring_bytes("gossip", 1, 2)
