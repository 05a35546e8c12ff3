"""Pipeline schedules as data: order, matching sends and receives, no deadlock, and the bubble and
stored activations of the formulas, all without processes."""

import pytest

from shardwise.errors import ConfigError
from shardwise.pipeline.formulas import bubble_fraction, peak_stored
from shardwise.pipeline.schedules import Action, make_schedule
from shardwise.pipeline.simulate import Deadlock, simulate

CASES = [(name, p, m, v) for name in ("gpipe", "1f1b") for p, m in [(1, 1), (1, 3), (2, 1), (2, 4), (3, 5), (4, 2), (4, 8), (5, 16)]
         for v in (1,)]
CASES += [("interleaved-1f1b", p, m, v) for p, m, v in [(1, 2, 2), (2, 2, 2), (2, 4, 2), (2, 6, 3), (3, 6, 2), (4, 4, 2),
                                                          (4, 8, 2), (4, 8, 4), (4, 16, 3), (4, 8, 1)]]
CASES += [("zb-h1", p, m, 1) for p, m in [(1, 1), (1, 3), (2, 2), (2, 4), (3, 5), (4, 4), (4, 8), (5, 16)]]


@pytest.mark.parametrize("name,p,m,v", CASES)
def test_every_microbatch_forward_before_backward_once(name, p, m, v):
    schedule = make_schedule(name, p, m, v)
    seen = {}
    for rank, actions in enumerate(schedule.actions):
        for index, action in enumerate(actions):
            if action.kind in ("F", "B", "W"):
                assert schedule.rank_of(action.stage) == rank
                key = (action.kind, action.microbatch, action.stage)
                assert key not in seen
                seen[key] = index
        for (kind, mb, stage), index in seen.items():
            if kind == "B" and schedule.rank_of(stage) == rank:
                assert seen[("F", mb, stage)] < index
            if kind == "W" and schedule.rank_of(stage) == rank:
                assert seen[("B", mb, stage)] < index  # the weights' gradient after the input's
    assert len(seen) == (3 if schedule.splits_backward else 2) * m * p * v
    assert schedule.splits_backward == (name == "zb-h1")


@pytest.mark.parametrize("name,p,m,v", CASES)
def test_sends_match_receives(name, p, m, v):
    schedule = make_schedule(name, p, m, v)
    sends, receives = [], []
    for rank, actions in enumerate(schedule.actions):
        for a in actions:
            if a.kind == "send_act":
                sends.append(("act", a.microbatch, a.stage, rank, schedule.rank_of(a.stage + 1)))
            elif a.kind == "recv_act":
                receives.append(("act", a.microbatch, a.stage - 1, schedule.rank_of(a.stage - 1), rank))
            elif a.kind == "send_grad":
                sends.append(("grad", a.microbatch, a.stage - 1, rank, schedule.rank_of(a.stage - 1)))
            elif a.kind == "recv_grad":
                receives.append(("grad", a.microbatch, a.stage, schedule.rank_of(a.stage + 1), rank))
    assert sorted(sends) == sorted(receives)
    assert len(sends) == 2 * m * (p * v - 1)


@pytest.mark.parametrize("name,p,m,v", CASES)
@pytest.mark.parametrize("forward,backward,weight", [(1.0, 1.0, None), (1.0, 2.0, None), (1.0, 2.0, 0.8)])
def test_simulated_bubble_and_activations_equal_the_formulas(name, p, m, v, forward, backward, weight):
    sim = simulate(make_schedule(name, p, m, v), forward, backward, weight)
    assert sim.bubble == pytest.approx(bubble_fraction(p, m, v, name, forward, backward, weight), abs=1e-12)
    assert sim.peak_stored == pytest.approx([peak_stored(name, p, m, r, v) for r in range(p)])


def test_1f1b_stores_fewer_activations_than_gpipe():
    assert max(simulate(make_schedule("1f1b", 4, 8)).peak_stored) == 4
    assert max(simulate(make_schedule("gpipe", 4, 8)).peak_stored) == 8


def test_interleaving_divides_the_bubble():
    assert simulate(make_schedule("interleaved-1f1b", 4, 8, 2)).bubble < simulate(make_schedule("1f1b", 4, 8)).bubble


def test_zero_bubble_cuts_1f1b_bubble_to_a_third_at_rank_0s_memory():
    # equal F, B and W: 1F1B idles (P-1)·3 units per rank, ZB-H1 (P-1)·1
    zb, one_f = simulate(make_schedule("zb-h1", 4, 8), 1.0, 2.0), simulate(make_schedule("1f1b", 4, 8), 1.0, 2.0)
    assert zb.bubble == pytest.approx(3 / 27) and one_f.bubble == pytest.approx(3 / 11)
    assert max(zb.peak_stored) == max(one_f.peak_stored) == 4


def test_a_weight_gradient_before_its_input_gradient_is_caught():
    schedule = make_schedule("zb-h1", 2, 2)
    rank1 = list(schedule.actions[1])
    rank1.remove(Action("W", 0, 1))
    rank1.insert(rank1.index(Action("B", 0, 1)), Action("W", 0, 1))
    bad = type(schedule)(schedule.name, 2, 2, 1, (schedule.actions[0], tuple(rank1)), splits_backward=True)
    with pytest.raises(Deadlock, match="before its B"):
        simulate(bad)


def test_a_wrong_order_deadlocks():
    schedule = make_schedule("1f1b", 2, 2)
    rank0 = list(schedule.actions[0])
    # rank 0 waits for micro-batch 0's gradient before sending its activation
    rank0.remove(Action("recv_grad", 0, 0))
    rank0.insert(1, Action("recv_grad", 0, 0))
    bad = type(schedule)(schedule.name, 2, 2, 1, (tuple(rank0), schedule.actions[1]))
    with pytest.raises(Deadlock):
        simulate(bad)


@pytest.mark.parametrize("call", [lambda: make_schedule("zigzag", 2, 4), lambda: make_schedule("1f1b", 0, 4),
                                  lambda: make_schedule("gpipe", 2, 0), lambda: make_schedule("interleaved-1f1b", 4, 6),
                                  lambda: make_schedule("1f1b", 2, 4, 2), lambda: make_schedule("zb-h1", 4, 3)])
def test_bad_schedules_are_refused(call):
    with pytest.raises(ConfigError):
        call()
