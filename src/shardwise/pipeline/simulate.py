"""Run a schedule on a clock, without processes: deadlock check, timeline, bubble, stored activations.

Each rank executes its actions in order. A forward of one stage takes `forward` time units and a
backward `backward` (a rank holding v virtual stages spends 1/v of that per stage); sends take no
time and never block; a receive waits until its send has happened. If no rank can move and some
have actions left, the schedule deadlocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from .schedules import Action, Schedule


class Deadlock(RuntimeError):
    pass


@dataclass(frozen=True)
class Span:
    rank: int
    action: Action
    start: float
    end: float


@dataclass(frozen=True)
class Simulation:
    spans: tuple[Span, ...]
    """Every compute action with its start and end time."""
    makespan: float
    busy: tuple[float, ...]
    """Per rank, time spent computing."""
    peak_stored: tuple[float, ...]
    """Per rank, the most micro-batch activations held at once (forward done, backward not yet),
    counted in whole stages: a virtual stage counts 1/v."""

    @property
    def bubble(self) -> float:
        """Idle fraction of the ranks' time between the first start and the last end."""
        return 1.0 - sum(self.busy) / (len(self.busy) * self.makespan)


def _message(action: Action) -> tuple[str, int, int]:
    """The key a send and its receive share: direction, micro-batch, the edge's upper stage."""
    if action.kind == "send_act":
        return ("act", action.microbatch, action.stage)
    if action.kind == "recv_act":
        return ("act", action.microbatch, action.stage - 1)
    if action.kind == "send_grad":
        return ("grad", action.microbatch, action.stage - 1)
    return ("grad", action.microbatch, action.stage)  # recv_grad


def simulate(schedule: Schedule, forward: float = 1.0, backward: float = 2.0, weight: float | None = None) -> Simulation:
    """`backward` is a whole backward; a schedule that splits it (zero bubble) spends `weight`
    (default half of it) in W and the rest in B. A micro-batch's activations are stored from
    its forward to the end of its backward (to its W when split)."""
    ranks, v = schedule.ranks, schedule.virtual
    w = (backward / 2 if weight is None else weight) if schedule.splits_backward else 0.0
    cost = {"F": forward / v, "B": (backward - w) / v, "W": w / v}
    frees = "W" if schedule.splits_backward else "B"
    clock = [0.0] * ranks
    position = [0] * ranks
    busy = [0.0] * ranks
    stored = [0] * ranks
    peak = [0] * ranks
    sent: dict[tuple[str, int, int], float] = {}
    received: set[tuple[str, int, int]] = set()
    forwarded: set[tuple[int, int]] = set()
    input_grads: set[tuple[int, int]] = set()
    spans: list[Span] = []
    remaining = sum(len(a) for a in schedule.actions)
    while remaining:
        moved = False
        for r in range(ranks):
            actions = schedule.actions[r]
            while position[r] < len(actions):
                action = actions[position[r]]
                if action.kind in ("recv_act", "recv_grad"):
                    key = _message(action)
                    if key not in sent:
                        break
                    if key in received:
                        raise Deadlock(f"rank {r}: {action} received twice")
                    received.add(key)
                    clock[r] = max(clock[r], sent[key])
                elif action.kind in ("send_act", "send_grad"):
                    key = _message(action)
                    if key in sent:
                        raise Deadlock(f"rank {r}: {action} sent twice")
                    sent[key] = clock[r]
                else:
                    if schedule.rank_of(action.stage) != r:
                        raise Deadlock(f"rank {r} computes {action}, a stage of rank {schedule.rank_of(action.stage)}")
                    if action.kind == "B" and (action.microbatch, action.stage) not in forwarded:
                        raise Deadlock(f"rank {r}: {action} before its forward")
                    if action.kind == "W" and (action.microbatch, action.stage) not in input_grads:
                        raise Deadlock(f"rank {r}: {action} before its B")
                    start = clock[r]
                    clock[r] += cost[action.kind]
                    busy[r] += cost[action.kind]
                    spans.append(Span(r, action, start, clock[r]))
                    if action.kind == "F":
                        forwarded.add((action.microbatch, action.stage))
                        stored[r] += 1
                        peak[r] = max(peak[r], stored[r])
                    if action.kind == "B":
                        input_grads.add((action.microbatch, action.stage))
                    if action.kind == frees:
                        stored[r] -= 1
                position[r] += 1
                remaining -= 1
                moved = True
        if not moved:
            stuck = {r: str(schedule.actions[r][position[r]]) for r in range(ranks)
                     if position[r] < len(schedule.actions[r])}
            raise Deadlock(f"schedule {schedule.name} deadlocks: ranks wait at {stuck}")
    expected = {(i, s) for i in range(schedule.microbatches) for s in range(schedule.stages)}
    done_b = {(sp.action.microbatch, sp.action.stage) for sp in spans if sp.action.kind == "B"}
    done_w = {(sp.action.microbatch, sp.action.stage) for sp in spans if sp.action.kind == "W"}
    if forwarded != expected or done_b != expected or done_w != (expected if schedule.splits_backward else set()):
        raise Deadlock(f"schedule {schedule.name} does not run every micro-batch through every stage once")
    if len(received) != len(sent):
        raise Deadlock(f"schedule {schedule.name}: {len(sent) - len(received)} sends are never received")
    return Simulation(tuple(spans), max(clock), tuple(busy), tuple(p / v for p in peak))
