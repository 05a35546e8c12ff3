import pytest

from shardwise.flat.buckets import plan_buckets
from shardwise.flat.ranges import offsets


def test_buckets_respect_caps_and_keep_order():
    sizes = [4, 4, 4, 4, 4, 4]
    assert plan_buckets(sizes, bucket_bytes=8, first_bucket_bytes=4) == [[0], [1, 2], [3, 4], [5]]


def test_oversized_item_gets_its_own_bucket():
    assert plan_buckets([2, 100, 2, 2], bucket_bytes=10) == [[0], [1], [2, 3]]


def test_every_index_once_in_order():
    sizes = [3, 7, 1, 9, 4, 4, 2, 8]
    flat = [i for bucket in plan_buckets(sizes, 10, 3) for i in bucket]
    assert flat == list(range(len(sizes)))


def test_bad_cap_rejected():
    with pytest.raises(ValueError, match="positive"):
        plan_buckets([1], 0)


def test_offsets():
    assert offsets([3, 1, 4]) == [0, 3, 4]
