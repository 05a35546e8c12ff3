"""Where to cut a sequence of layers into pipeline stages (pure arithmetic, no processes).

`balanced_bounds(weights, parts)` cuts consecutive layers with the given weights (parameter
counts, or measured times) into `parts` non-empty runs whose largest total is as small as
possible (the classic linear partition, solved exactly by binary search on the largest total
when weights are integers, or by dynamic programming). `bounds_at(names, points)` turns
user-named cut points ("blocks.2": the stage starts at that layer) into the same bounds.
"""

from __future__ import annotations

from ..errors import ConfigError


def balanced_bounds(weights: list[float], parts: int) -> list[tuple[int, int]]:
    """[start, end) layer ranges of `parts` consecutive non-empty stages minimizing the largest
    stage's total weight; among equal maxima, the earliest cuts."""
    n = len(weights)
    if parts > n:
        raise ConfigError(f"cannot cut {n} layers into {parts} pipeline stages: use at most {n} stages "
                          f"or a model with more layers")
    prefix = [0.0]
    for w in weights:
        prefix.append(prefix[-1] + float(w))
    inf = float("inf")
    # best[k][i]: smallest possible largest total cutting the first i layers into k stages
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0.0
    for k in range(1, parts + 1):
        for i in range(k, n - (parts - k) + 1):
            for j in range(k - 1, i):
                value = max(best[k - 1][j], prefix[i] - prefix[j])
                if value < best[k][i]:
                    best[k][i], cut[k][i] = value, j
    bounds = []
    end = n
    for k in range(parts, 0, -1):
        start = cut[k][end]
        bounds.append((start, end))
        end = start
    return bounds[::-1]


def bounds_at(names: list[str], points: list[str], parts: int) -> list[tuple[int, int]]:
    """Stage ranges starting at the named layers: P-1 points for P stages, in model order."""
    if len(points) != parts - 1:
        raise ConfigError(f"split needs {parts - 1} cut points for {parts} stages, got {len(points)}: {points}")
    starts = []
    for point in points:
        if point not in names:
            raise ConfigError(f"split point '{point}' is not a layer of the pipeline; layers: {', '.join(names)}")
        starts.append(names.index(point))
    if starts != sorted(set(starts)) or (starts and starts[0] == 0):
        raise ConfigError(f"split points must be distinct, in model order and after the first layer, got {points}")
    edges = [0, *starts, len(names)]
    return [(edges[i], edges[i + 1]) for i in range(parts)]
