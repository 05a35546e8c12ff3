"""Validate a dataset against the problem it is for, then standardise it (pure NumPy).

[Note: which problem]
`ridge` takes any real targets. `logistic` takes class labels: integers 0..K−1 with every
class present (or −1/+1 for two classes, mapped to 0/1); two classes give binary logistic
regression, more give multinomial (softmax) regression on its own, so `--problem logistic`
works on digits and wine as they are. `multinomial` forces the softmax model, even for two
classes. Regularisation: ridge accepts λ ≥ 0 (λ = 0 is least squares); the logistic models
need λ > 0, which keeps the optimum finite and gives the strong convexity AGD and DiSCO use.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError
from .data import DataSpec, Dataset, load_raw

PROBLEMS = ("ridge", "logistic", "multinomial")


def check_lambda(problem: str, lam: float) -> None:
    if not math.isfinite(lam):
        raise ConfigError(f"--lam must be a finite number, got {lam}")
    if problem == "ridge" and lam < 0:
        raise ConfigError(f"--lam must be at least 0 for ridge, got {lam:g}")
    if problem != "ridge" and lam <= 0:
        raise ConfigError(f"--lam must be positive for {problem} regression (the optimum may not exist otherwise), got {lam:g}")


def check_finite(x: np.ndarray, y: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ConfigError(f"{name}: feature value {x[row, col]} at row {row + 1}, column {col + 1}; "
                          "remove or fill missing values first")
    bad_labels = ~np.isfinite(y)
    if bad_labels.any():
        row = int(np.argmax(bad_labels))
        raise ConfigError(f"{name}: label {y[row]} at row {row + 1}; remove or fill missing values first")


def class_labels(y: np.ndarray, problem: str, name: str) -> tuple[np.ndarray, int]:
    """Labels as int64 class indices 0..K−1, and K (see [Note: which problem])."""
    non_integer = y != np.round(y)
    if non_integer.any():
        row = int(np.argmax(non_integer))
        raise ConfigError(f"{name}: label {y[row]:g} at row {row + 1} is not a class index; {problem} needs "
                          "labels 0..K-1 (or -1/+1); use --problem ridge for real-valued targets")
    present = np.unique(y)
    if len(present) == 2 and set(present) == {-1.0, 1.0}:
        return (y > 0).astype(np.int64), 2
    if present[0] < 0:
        row = int(np.argmax(y < 0))
        raise ConfigError(f"{name}: label {y[row]:g} at row {row + 1} is outside 0..K-1 (only -1/+1 may be negative)")
    n_classes = int(present[-1]) + 1
    if n_classes < 2 or len(present) != n_classes:
        missing = sorted(set(range(n_classes)) - set(present.astype(int)))
        detail = "only one class" if n_classes < 2 else f"class {missing[0]} has no rows"
        raise ConfigError(f"{name}: labels must be 0..K-1 with every class present, K >= 2 ({detail})")
    return y.astype(np.int64), n_classes


def prepare(x: np.ndarray, spec: DataSpec) -> np.ndarray:
    if spec.standardize:
        scale = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    if spec.intercept:
        x = np.hstack([x, np.ones((len(x), 1))])
    return np.ascontiguousarray(x, dtype=np.float64)


def resolve_kind(problem: str, n_classes: int) -> str:
    """The model that fits: binary logistic becomes multinomial when there are more than two classes."""
    if problem == "logistic" and n_classes > 2:
        return "multinomial"
    return problem


def load_dataset(spec: DataSpec, problem: str) -> tuple[Dataset, str]:
    """The validated, prepared dataset for `problem` and the problem kind to solve on it."""
    if problem not in PROBLEMS:
        raise ConfigError(f"unknown problem '{problem}'; expected one of {', '.join(PROBLEMS)}")
    name, x, y = load_raw(spec, regression=problem == "ridge")
    if len(x) == 0:
        raise ConfigError(f"{name} has no rows")
    check_finite(x, y, name)
    if problem == "ridge":
        labels, n_classes = y.astype(np.float64), 1
    else:
        labels, n_classes = class_labels(y, problem, name)
    return Dataset(name, prepare(x, spec), labels, n_classes), resolve_kind(problem, n_classes)
