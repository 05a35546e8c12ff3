"""What a schedule should cost, in closed form ([Note: pipeline schedules]).

With P ranks, M micro-batches, v stages per rank and a forward and a backward of equal duration
on every stage, the idle fraction of a step (the bubble) is (P-1)/(v·M + P-1): GPipe's
(P-1)/(M+P-1) (Huang et al. 2019), the same for 1F1B, divided by about v for the interleaved
schedule (Narayanan et al. 2021). Activations stored at once on rank r, counted in micro-batches
of one whole rank's layers: GPipe M; 1F1B min(P-r, M); interleaved, (2(P-1-r) + (v-1)P + 1)
virtual stages of 1/v each, at most M·v; ZB-H1 min(P, M) on every rank (activations are kept
until the weights' gradient W), and a bubble of (P-1)(F+B-W) per rank against M(F+B+W).
"""

from __future__ import annotations


def bubble_fraction(ranks: int, microbatches: int, virtual: int = 1, schedule: str = "1f1b",
                    forward: float = 1.0, backward: float = 2.0, weight: float | None = None) -> float:
    """Idle fraction of a step. Only zb-h1's depends on the costs: a forward `forward`, a whole
    backward `backward`, of which `weight` (default half) is the weights' gradient (W); its
    ranks idle (P-1)(F+B-W) each against M(F+B+W) of work (Qi et al. 2024), for M >= P and
    W <= F+B."""
    if schedule == "zb-h1":
        w = backward / 2 if weight is None else weight
        idle = (ranks - 1) * (forward + (backward - w) - w)
        return idle / (microbatches * (forward + backward) + idle)
    return (ranks - 1) / (virtual * microbatches + ranks - 1)


def peak_stored(schedule: str, ranks: int, microbatches: int, rank: int, virtual: int = 1) -> float:
    """Micro-batch activations rank `rank` holds at most, in units of its whole share of layers."""
    if schedule == "gpipe":
        return float(microbatches)
    if schedule == "1f1b":
        return float(min(ranks - rank, microbatches))
    if schedule == "zb-h1":  # a forward's activations live until its W, P-1 forwards later
        return float(min(ranks, microbatches))
    if schedule == "interleaved-1f1b":
        total = microbatches * virtual
        return min(2 * (ranks - 1 - rank) + (virtual - 1) * ranks + 1, total) / virtual
    raise ValueError(f"no formula for schedule '{schedule}'")
