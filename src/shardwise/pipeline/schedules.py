"""Pipeline schedules as pure data: for each pipeline rank, the ordered actions it performs.

[Note: pipeline schedules]
The model is cut into S = P·v consecutive stages; stage s lives on rank s mod P (v = 1 except
for the interleaved schedule, where each rank holds v "virtual" stages, as in Megatron-LM). The
global batch is cut into M micro-batches. A schedule is, for each rank, a list of `Action`s:
- "F" (forward micro-batch i through stage s) and "B" (its backward);
- "recv_act" before an F on s > 0 and "send_act" after an F on s < S-1 (activations flow down);
- "recv_grad" before a B on s < S-1 and "send_grad" after a B on s > 0 (gradients flow up).
Sends never block (they are asynchronous); a receive waits for its send. `simulate.py` runs a
schedule on a clock to check that it cannot deadlock and to measure its bubble and the
activations each rank stores; `formulas.py` says what they should be.

- GPipe (Huang et al. 2019): all M forwards, then all M backwards. Stores M micro-batches'
  activations per rank.
- 1F1B (PipeDream-Flush, Narayanan et al. 2021): rank r runs P-1-r forwards to fill the pipe,
  then alternates one forward and one backward, then drains. Same bubble as GPipe, but a rank
  stores at most P-r micro-batches.
- Interleaved 1F1B (Narayanan et al. 2021, Megatron-LM): v stages per rank, micro-batches go
  through the ranks in groups of P; the fill is 2(P-1-r) + (v-1)P stage-forwards. The bubble is
  divided by v. Needs M to be a multiple of P.
- ZB-H1 (Qi et al., ICLR 2024, "Zero Bubble Pipeline Parallelism"): the backward is split into
  "B", the gradient of the stage's input (what the previous stage waits for), and "W", the
  gradient of its weights (which nobody waits for). Rank r runs, for x = 0 .. M+P-2, whichever
  of F(x), B(x-(P-1-r)), W(x-(P-1)) exist: 1F1B's order of F and B, with each W delayed until
  P-1 forwards later, so the W's fill what would be 1F1B's drain bubble. Bubble (P-1)(F+B-W) of
  time per rank instead of (P-1)(F+B+W); every rank holds at most P micro-batches (a forward's
  activations live until its W), 1F1B's peak on rank 0. Needs M >= P.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from ..errors import ConfigError

Kind = Literal["F", "B", "W", "send_act", "recv_act", "send_grad", "recv_grad"]
COMPUTE = ("F", "B", "W")


@dataclass(frozen=True)
class Action:
    kind: Kind
    microbatch: int
    stage: int
    """The (virtual) stage this action computes, or whose input/output it moves: send_act and
    recv_grad of stage s talk to stage s+1, recv_act and send_grad of stage s to stage s-1."""

    def __str__(self) -> str:
        return f"{self.kind}{self.microbatch}@{self.stage}"


@dataclass(frozen=True)
class Schedule:
    name: str
    ranks: int
    """P, the pipeline ranks."""
    microbatches: int
    """M."""
    virtual: int
    """v, stages per rank."""
    actions: tuple[tuple[Action, ...], ...]
    """Per rank, in order."""
    splits_backward: bool = False
    """B computes only the input's gradient and W the weights' (zero-bubble schedules); else B
    is the whole backward and there is no W."""

    @property
    def stages(self) -> int:
        return self.ranks * self.virtual

    def rank_of(self, stage: int) -> int:
        return stage % self.ranks

    def stages_of(self, rank: int) -> list[int]:
        return [rank + chunk * self.ranks for chunk in range(self.virtual)]


def _with_communication(compute: list[tuple[str, int, int]], stages: int) -> tuple[Action, ...]:
    """A rank's compute order (kind, micro-batch, stage) with the sends and receives around it."""
    out: list[Action] = []
    for kind, mb, stage in compute:
        if kind == "F":
            if stage > 0:
                out.append(Action("recv_act", mb, stage))
            out.append(Action("F", mb, stage))
            if stage < stages - 1:
                out.append(Action("send_act", mb, stage))
        elif kind == "B":
            if stage < stages - 1:
                out.append(Action("recv_grad", mb, stage))
            out.append(Action("B", mb, stage))
            if stage > 0:
                out.append(Action("send_grad", mb, stage))
        else:
            out.append(Action("W", mb, stage))  # the weights' gradient: nothing to send or receive
    return tuple(out)


def _check(ranks: int, microbatches: int) -> None:
    if not (isinstance(ranks, int) and ranks >= 1):
        raise ConfigError(f"pipeline stages must be a positive integer, got {ranks!r}")
    if not (isinstance(microbatches, int) and microbatches >= 1):
        raise ConfigError(f"microbatches must be a positive integer, got {microbatches!r}")


def gpipe(ranks: int, microbatches: int, virtual: int = 1) -> Schedule:
    _check(ranks, microbatches)
    _one_stage_per_rank("gpipe", virtual)
    actions = tuple(
        _with_communication([("F", i, r) for i in range(microbatches)] + [("B", i, r) for i in range(microbatches)],
                            ranks)
        for r in range(ranks))
    return Schedule("gpipe", ranks, microbatches, 1, actions)


def one_f_one_b(ranks: int, microbatches: int, virtual: int = 1) -> Schedule:
    _check(ranks, microbatches)
    _one_stage_per_rank("1f1b", virtual)
    actions = []
    for r in range(ranks):
        warmup = min(ranks - 1 - r, microbatches)
        compute = [("F", i, r) for i in range(warmup)]
        for i in range(microbatches - warmup):
            compute += [("F", warmup + i, r), ("B", i, r)]
        compute += [("B", i, r) for i in range(microbatches - warmup, microbatches)]
        actions.append(_with_communication(compute, ranks))
    return Schedule("1f1b", ranks, microbatches, 1, tuple(actions))


def interleaved_1f1b(ranks: int, microbatches: int, virtual: int = 2) -> Schedule:
    _check(ranks, microbatches)
    if not (isinstance(virtual, int) and virtual >= 1):
        raise ConfigError(f"virtual stages per rank must be a positive integer, got {virtual!r}")
    if microbatches % ranks:
        raise ConfigError(f"interleaved-1f1b needs the micro-batches ({microbatches}) to be a multiple of the "
                          f"pipeline stages ({ranks}): pass --microbatches {(microbatches // ranks + 1) * ranks}")
    stages = ranks * virtual
    total = microbatches * virtual

    def forward(k: int, r: int) -> tuple[str, int, int]:
        chunk = (k // ranks) % virtual
        return ("F", (k // (ranks * virtual)) * ranks + k % ranks, r + chunk * ranks)

    def backward(k: int, r: int) -> tuple[str, int, int]:
        chunk = virtual - 1 - (k // ranks) % virtual
        return ("B", (k // (ranks * virtual)) * ranks + k % ranks, r + chunk * ranks)

    actions = []
    for r in range(ranks):
        warmup = min((ranks - 1 - r) * 2 + (virtual - 1) * ranks, total)
        compute = [forward(k, r) for k in range(warmup)]
        for k in range(total - warmup):
            compute += [forward(warmup + k, r), backward(k, r)]
        compute += [backward(k, r) for k in range(total - warmup, total)]
        actions.append(_with_communication(compute, stages))
    return Schedule("interleaved-1f1b", ranks, microbatches, virtual, tuple(actions))


def zb_h1(ranks: int, microbatches: int, virtual: int = 1) -> Schedule:
    _check(ranks, microbatches)
    _one_stage_per_rank("zb-h1", virtual)
    if microbatches < ranks:
        raise ConfigError(f"zb-h1 needs at least as many micro-batches as stages ({ranks}), got {microbatches}: "
                          f"pass --microbatches {ranks} or more, or use 1f1b")
    actions = []
    for r in range(ranks):
        compute = []
        for x in range(microbatches + ranks - 1):
            for kind, mb in (("F", x), ("B", x - (ranks - 1 - r)), ("W", x - (ranks - 1))):
                if 0 <= mb < microbatches:
                    compute.append((kind, mb, r))
        actions.append(_with_communication(compute, ranks))
    return Schedule("zb-h1", ranks, microbatches, 1, tuple(actions), splits_backward=True)


def _one_stage_per_rank(name: str, virtual: int) -> None:
    if virtual != 1:
        raise ConfigError(f"schedule '{name}' runs one stage per rank; use 'interleaved-1f1b' for virtual stages")


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "gpipe": gpipe,
    "1f1b": one_f_one_b,
    "interleaved-1f1b": interleaved_1f1b,
    "zb-h1": zb_h1,
}


def make_schedule(name: str, ranks: int, microbatches: int, virtual: int | None = None) -> Schedule:
    """The schedule called `name` ("gpipe", "1f1b", "interleaved-1f1b", "zb-h1"); `virtual` stages per
    rank (default 1, or 2 for the interleaved one)."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown pipeline schedule '{name}'; choose from {', '.join(SCHEDULES)}")
    if virtual is None:
        virtual = 2 if name == "interleaved-1f1b" else 1
    return SCHEDULES[name](ranks, microbatches, virtual)
