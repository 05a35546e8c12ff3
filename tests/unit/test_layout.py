import pytest

from shardwise.flat.layout import FlatLayout


@pytest.mark.parametrize("numels", [(7,), (3, 5, 2), (1, 1, 1, 1, 1), (13, 64, 5)])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_pieces_cover_every_element_exactly_once(numels, n):
    layout = FlatLayout(numels, n)
    assert layout.padded_total % n == 0 and 0 <= layout.padding < n or layout.total < n
    covered = {i: [0] * k for i, k in enumerate(numels)}
    for rank in range(n):
        lo, hi = layout.shard_range(rank)
        for piece in layout.pieces(rank):
            assert 0 <= piece.shard_start and piece.shard_start + piece.numel <= hi - lo
            # The piece sits at the same flat position from both points of view.
            assert layout.offsets[piece.index] + piece.param_start == lo + piece.shard_start
            for e in range(piece.param_start, piece.param_end):
                covered[piece.index][e] += 1
    assert all(c == 1 for counts in covered.values() for c in counts)


def test_padding_and_shards():
    layout = FlatLayout((5, 6), 4)
    assert layout.total == 11 and layout.padded_total == 12 and layout.shard_numel == 3
    assert layout.shard_range(3) == (9, 12)
    assert [(p.index, p.param_start, p.param_end, p.shard_start) for p in layout.pieces(1)] == [(0, 3, 5, 0), (1, 0, 1, 2)]
    assert [(p.index, p.param_start, p.param_end) for p in layout.pieces(3)] == [(1, 4, 6)]


def test_tiny_buffer_still_gives_every_rank_a_slice():
    layout = FlatLayout((2,), 4)
    assert layout.padded_total == 4 and layout.pieces(3) == []
