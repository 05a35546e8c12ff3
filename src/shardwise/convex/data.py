"""Datasets for the solvers: scikit-learn's bundled sets, seeded synthetic ones, or a user's file.

Pure NumPy, no communication. Every rank loads the same source and keeps its own rows
(`flat.ranges.even_range`); a synthetic set is generated from its seed, so it is the same on every
rank without being sent. Features are standardised with full-data statistics (a data
preparation step, not part of the solve) and an intercept column of ones is appended; the L2
term covers the intercept too, which keeps every problem strongly convex.
"""

from __future__ import annotations

import csv
import zipfile
import os
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

BUNDLED = ("breast_cancer", "digits", "diabetes", "wine")
SYNTHETIC = "synthetic"


@dataclass(frozen=True)
class DataSpec:
    """Where the rows come from and how they are prepared."""

    source: str
    """A bundled name (breast_cancer, digits, diabetes, wine), "synthetic", or a path to a .npz or .csv file."""
    samples: int = 1000
    """Rows of a synthetic set."""
    features: int = 20
    """Columns of a synthetic set (before the intercept)."""
    classes: int = 2
    """Classes of a synthetic classification set."""
    seed: int = 0
    """Seed of a synthetic set."""
    effective_rank: int = 0
    """0: independent features; R > 0: correlated features with about R strong directions (see _synthetic)."""
    standardize: bool = True
    """Scale each feature to zero mean and unit variance (constant columns are only centred)."""
    intercept: bool = True
    """Append a column of ones."""


@dataclass
class Dataset:
    name: str
    features: np.ndarray  # (n, d) float64, prepared
    labels: np.ndarray  # (n,) float64 targets (ridge) or int64 class indices
    n_classes: int = 1  # 1 for regression


def load_raw(spec: DataSpec, regression: bool) -> tuple[str, np.ndarray, np.ndarray]:
    """(name, X, y) as stored, before validation and preparation."""
    source = spec.source
    if source in BUNDLED:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{source}")()
        return source, np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.float64)
    if source == SYNTHETIC:
        return _synthetic(spec, regression)
    if source.endswith(".npz"):
        return os.path.basename(source), *_read_npz(source)
    if source.endswith(".csv"):
        return os.path.basename(source), *_read_csv(source)
    raise ConfigError(f"unknown data '{source}': use one of {', '.join(BUNDLED)}, {SYNTHETIC}, or a .npz/.csv path")


def _synthetic(spec: DataSpec, regression: bool):
    """Seeded scikit-learn generators, scaled to `features`.

    Regression: make_regression (its own `effective_rank` when R > 0). Classification with
    independent features: make_classification, a tenth of the features informative, a tenth
    redundant (linear combinations of those), the rest noise, 1% of labels flipped. With R > 0:
    the features of make_regression(effective_rank=R) (sklearn's make_low_rank_matrix: a
    bell-shaped singular spectrum with a heavy tail, as in real data whose features correlate)
    and labels drawn from a logistic model on them (`_logistic_labels`).
    """
    from sklearn.datasets import make_classification, make_low_rank_matrix, make_regression

    if spec.samples < 1 or spec.features < 1:
        raise ConfigError(f"a synthetic set needs at least 1 sample and 1 feature, got {spec.samples}x{spec.features}")
    if spec.effective_rank < 0:
        raise ConfigError(f"effective rank must be 0 (independent features) or positive, got {spec.effective_rank}")
    name = f"synthetic-{spec.samples}x{spec.features}-s{spec.seed}" + (f"-r{spec.effective_rank}" if spec.effective_rank else "")
    informative = max(2, spec.features // 10)
    if regression:
        x, y = make_regression(spec.samples, spec.features, n_informative=min(informative, spec.features),
                               effective_rank=spec.effective_rank or None, noise=1.0, random_state=spec.seed)
        return name, x, y
    if spec.effective_rank:
        x = make_low_rank_matrix(spec.samples, spec.features, effective_rank=spec.effective_rank, tail_strength=0.5,
                                 random_state=spec.seed)
        return name + f"-k{spec.classes}", x, _logistic_labels(x, spec.classes, spec.seed)
    if spec.classes < 2:
        raise ConfigError(f"a classification set needs at least 2 classes, got {spec.classes}")
    informative = max(informative, int(np.ceil(np.log2(spec.classes))) + 1)
    redundant = min(informative, spec.features - informative)
    if informative > spec.features:
        raise ConfigError(f"{spec.classes} classes need at least {informative} features, got {spec.features}")
    x, y = make_classification(spec.samples, spec.features, n_informative=informative, n_redundant=redundant,
                               n_classes=spec.classes, random_state=spec.seed)
    return name + f"-k{spec.classes}", x, y.astype(np.float64)


def _logistic_labels(x: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """y ~ softmax(z W): z the standardised features, W Gaussian scaled so the scores have std 3 (pure, seeded)."""
    rng = np.random.default_rng(seed)
    z = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    weights = rng.standard_normal((x.shape[1], n_classes if n_classes > 2 else 1))
    scores = z @ weights
    scores *= 3.0 / max(float(scores.std()), 1e-300)
    if n_classes == 2:
        return (rng.random(len(x)) < 1.0 / (1.0 + np.exp(-scores[:, 0]))).astype(np.float64)
    probs = np.exp(scores - scores.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    return (rng.random((len(x), 1)) > probs.cumsum(1)).sum(1).clip(0, n_classes - 1).astype(np.float64)


def _read_npz(path: str):
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ConfigError(f"{path} is empty")
    try:
        if os.path.isfile(path) and not zipfile.is_zipfile(path):
            raise ConfigError(f"{path} is not an .npz archive (an .npz is a zip of arrays, as numpy.savez writes; "
                              "an .npy file holds one array without labels)")
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            x_key = next((k for k in ("X", "x", "features", "data") if k in keys), None)
            y_key = next((k for k in ("y", "labels", "target") if k in keys), None)
            if x_key is None or y_key is None:
                raise ConfigError(f"{path} must hold arrays 'X' and 'y', found: {', '.join(sorted(keys)) or 'none'}")
            x, y = archive[x_key], archive[y_key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise ConfigError(f"{path}: X and y must be numeric arrays, got {x.dtype} and {y.dtype}")
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ConfigError(f"{path}: X must be (n, d) and y (n,), got {x.shape} and {y.shape}")
    return x.astype(np.float64), y.astype(np.float64)


def _read_csv(path: str):
    """Numbers only, the last column is the label; a first row with no numbers is a header."""
    try:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not a readable CSV file ({exc})") from None
    first_data = 1 if rows and not any(_is_number(cell) for cell in rows[0]) else 0
    if len(rows) <= first_data:
        raise ConfigError(f"{path} has no data rows")
    width = len(rows[first_data])
    if width < 2:
        raise ConfigError(f"{path} needs at least two columns (features, then the label)")
    values = np.empty((len(rows) - first_data, width), dtype=np.float64)
    for i, row in enumerate(rows[first_data:]):
        line = first_data + i + 1
        if len(row) != width:
            raise ConfigError(f"{path} line {line}: {len(row)} columns, expected {width}")
        for j, cell in enumerate(row):
            if not _is_number(cell):
                raise ConfigError(f"{path} line {line}, column {j + 1}: '{cell.strip()}' is not a number")
            values[i, j] = float(cell)
    return values[:, :-1], values[:, -1]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
