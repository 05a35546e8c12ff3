"""The reference optimum f*: a tight single-process SciPy solve on the full data, cached per problem.

Ridge: the normal equations (XᵀX/n + λI) w = Xᵀy/n by Cholesky (`scipy.linalg.solve`), or the
minimum-norm least-squares solution when λ = 0 (`scipy.linalg.lstsq`). Logistic and
multinomial: `scipy.optimize.minimize(method="trust-exact")` with the exact dense Hessian,
to ‖∇f‖ ≤ 1e-11, polished by up to three plain Newton steps (which need no f differences, the
limit of trust-exact's progress test in float64), then checked: with λ-strong convexity f − f* ≤ ‖∇f‖²/(2λ), so the reported f*
is within that bound of the true optimum (far below the 1e-8 the benchmarks resolve).
The cache key hashes the problem kind, λ and the prepared data bytes; entries live in memory
and as small JSON files under $SHARDWISE_CACHE/reference (default ~/.cache/shardwise/reference).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .data import Dataset
from .oracle import Oracle
from .problems import make_local_problem

GRAD_TOL = 1e-11
_MEMORY: dict[str, "Reference"] = {}


@dataclass(frozen=True)
class Reference:
    f_star: float
    grad_norm: float
    """‖∇f‖ at the reference point."""
    bound: float
    """Guaranteed f(reference point) − f* ≤ bound (‖∇f‖²/(2λ); 0 for an exact linear solve)."""
    method: str


def cache_key(data: Dataset, kind: str, lam: float) -> str:
    digest = hashlib.sha256(f"v1|{kind}|{lam!r}|{data.features.shape}|{data.n_classes}".encode())
    digest.update(np.ascontiguousarray(data.features).tobytes())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()[:32]


def cache_dir() -> str:
    """$SHARDWISE_CACHE/reference: the one cache variable, shared with the corpus."""
    from ..data.corpus import default_cache_dir

    return os.path.join(default_cache_dir(), "reference")


def reference_optimum(data: Dataset, kind: str, lam: float, use_cache: bool = True) -> Reference:
    key = cache_key(data, kind, lam)
    path = os.path.join(cache_dir(), f"{key}.json")
    if use_cache and key in _MEMORY:
        return _MEMORY[key]
    if use_cache and os.path.exists(path):
        try:
            with open(path) as handle:
                _MEMORY[key] = Reference(**json.load(handle))
            return _MEMORY[key]
        except (OSError, ValueError, TypeError):
            pass  # a corrupt entry is recomputed
    reference = _solve(data, kind, lam)
    _MEMORY[key] = reference
    if use_cache:
        try:
            os.makedirs(cache_dir(), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as handle:
                json.dump(asdict(reference), handle)
            os.replace(tmp, path)
        except OSError:
            pass  # an unwritable cache only costs a recomputation
    return reference


def full_oracle(data: Dataset, kind: str, lam: float) -> Oracle:
    features = torch.from_numpy(data.features)
    labels = torch.from_numpy(data.labels)
    return Oracle(make_local_problem(kind, features, labels, data.n_classes), len(data.labels), lam)


def _solve(data: Dataset, kind: str, lam: float) -> Reference:
    import scipy.linalg
    import scipy.optimize

    oracle = full_oracle(data, kind, lam)
    n = len(data.labels)
    if kind == "ridge":
        x, y = data.features, data.labels
        if lam > 0:
            gram = x.T @ x / n + lam * np.eye(x.shape[1])
            w = scipy.linalg.solve(gram, x.T @ y / n, assume_a="pos")
            method = "scipy.linalg.solve (normal equations)"
        else:
            w = scipy.linalg.lstsq(x, y)[0]
            method = "scipy.linalg.lstsq (minimum norm)"
        f, g = oracle.value_grad(torch.from_numpy(w))
        return Reference(f, float(g.norm()), 0.0, method)

    def fun(w):
        f, g = oracle.value_grad(torch.from_numpy(w))
        return f, g.numpy()

    def hess(w):
        hessian = oracle.local.hessian_sum(torch.from_numpy(w)) / n
        return (hessian + lam * torch.eye(oracle.dim, dtype=torch.float64)).numpy()

    solution = scipy.optimize.minimize(fun, np.zeros(oracle.dim), jac=True, hess=hess, method="trust-exact",
                                       options={"gtol": GRAD_TOL, "maxiter": 500})
    w, (f, g) = solution.x, oracle.value_grad(torch.from_numpy(solution.x))
    for _ in range(3):  # trust-exact stops once f stops resolving progress; Newton steps need only ∇f
        candidate = w - scipy.linalg.solve(hess(w), g.numpy(), assume_a="pos")
        f_candidate, g_candidate = oracle.value_grad(torch.from_numpy(candidate))
        if not float(g_candidate.norm()) < float(g.norm()):
            break
        w, f, g = candidate, f_candidate, g_candidate
    grad_norm = float(g.norm())
    if grad_norm > 1e3 * GRAD_TOL:
        raise RuntimeError(f"reference solve did not converge: ‖∇f‖ = {grad_norm:.3g} ({solution.message})")
    return Reference(f, grad_norm, grad_norm ** 2 / (2 * lam), "scipy.optimize.minimize(trust-exact)")
