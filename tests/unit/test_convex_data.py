"""Datasets and bad input: every user error is one clear ConfigError line; the reference f* and its cache."""

import numpy as np
import pytest

from shardwise.convex import DataSpec, load_dataset, reference_optimum
from shardwise.convex import reference as reference_module
from shardwise.convex.prepare import check_lambda
from shardwise.errors import ConfigError


def _csv(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_csv_with_header_and_npz_load(tmp_path):
    data, kind = load_dataset(DataSpec(_csv(tmp_path, "a,b,label\n1,2,0\n3,4,1\n5,7,1\n")), "logistic")
    assert kind == "logistic" and data.features.shape == (3, 3) and data.labels.tolist() == [0, 1, 1]
    np.savez(tmp_path / "d.npz", X=np.arange(8.0).reshape(4, 2), y=np.array([-1.0, 1, 1, -1]))
    data, kind = load_dataset(DataSpec(str(tmp_path / "d.npz"), standardize=False, intercept=False), "logistic")
    assert data.labels.tolist() == [0, 1, 1, 0] and data.features[1].tolist() == [2.0, 3.0]


def test_bundled_sets_and_the_multinomial_switch():
    data, kind = load_dataset(DataSpec("wine"), "logistic")
    assert kind == "multinomial" and data.n_classes == 3 and data.features.shape == (178, 14)
    np.testing.assert_allclose(data.features[:, :-1].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(data.features[:, :-1].std(0), 1, atol=1e-12)
    assert load_dataset(DataSpec("breast_cancer"), "multinomial")[1] == "multinomial"
    assert load_dataset(DataSpec("diabetes"), "ridge")[0].features.shape == (442, 11)


def test_synthetic_sets_are_seeded():
    a, _ = load_dataset(DataSpec("synthetic", samples=50, features=6, seed=3), "logistic")
    b, _ = load_dataset(DataSpec("synthetic", samples=50, features=6, seed=3), "logistic")
    c, _ = load_dataset(DataSpec("synthetic", samples=50, features=6, seed=4), "logistic")
    assert np.array_equal(a.features, b.features) and not np.array_equal(a.features, c.features)
    d, kind = load_dataset(DataSpec("synthetic", samples=60, features=6, classes=4, effective_rank=2), "logistic")
    assert kind == "multinomial" and sorted(set(d.labels.tolist())) == [0, 1, 2, 3]


@pytest.mark.parametrize("text, problem, message", [
    ("1,2,0\n3,x,1\n", "logistic", "line 2, column 2: 'x' is not a number"),
    ("1,2,0\n3,4\n", "logistic", "line 2: 2 columns, expected 3"),
    ("1,nan,0\n3,4,1\n", "logistic", "feature value nan at row 1, column 2"),
    ("1,2,0\n3,4,\n", "ridge", "line 2, column 3: '' is not a number"),
    ("1,2,0\n3,4,nan\n", "ridge", "label nan at row 2"),
    ("1,2,0\n3,4,2.5\n", "logistic", "label 2.5 at row 2 is not a class index"),
    ("1,2,1\n3,4,2\n", "logistic", "class 0 has no rows"),
    ("1,2,0\n3,4,-2\n", "logistic", "label -2 at row 2 is outside 0..K-1"),
    ("1,2,0\n3,4,0\n", "logistic", "only one class"),
    ("h1,h2\n", "ridge", "has no data rows"),
])
def test_bad_files_are_one_line_config_errors(tmp_path, text, problem, message):
    with pytest.raises(ConfigError) as caught:
        load_dataset(DataSpec(_csv(tmp_path, text)), problem)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_bad_sources_and_lambdas(tmp_path):
    np.savez(tmp_path / "d.npz", features_wrong=np.zeros((2, 2)))
    for spec, message in [(DataSpec("nope"), "unknown data 'nope'"), (DataSpec(str(tmp_path / "missing.csv")), "cannot read"),
                          (DataSpec(str(tmp_path / "d.npz")), "must hold arrays 'X' and 'y'")]:
        with pytest.raises(ConfigError, match=message):
            load_dataset(spec, "ridge")
    for problem, lam in [("logistic", 0.0), ("multinomial", -1.0), ("ridge", -1e-3), ("ridge", float("nan"))]:
        with pytest.raises(ConfigError, match="--lam"):
            check_lambda(problem, lam)
    check_lambda("ridge", 0.0)  # least squares is allowed


def test_reference_optimum_is_tight_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SHARDWISE_CACHE", str(tmp_path))
    monkeypatch.setattr(reference_module, "_MEMORY", {})
    data, kind = load_dataset(DataSpec("breast_cancer"), "logistic")
    reference = reference_optimum(data, kind, 1e-4)
    assert reference.grad_norm < 1e-10 and reference.bound < 1e-15
    assert len(list((tmp_path / "reference").glob("*.json"))) == 1
    assert reference_optimum(data, kind, 1e-4) == reference
    ridge, _ = load_dataset(DataSpec("diabetes"), "ridge")
    x, y = ridge.features, ridge.labels
    w = np.linalg.solve(x.T @ x / len(y) + 1e-4 * np.eye(x.shape[1]), x.T @ y / len(y))
    f = 0.5 * np.mean((x @ w - y) ** 2) + 0.5e-4 * w @ w
    assert reference_optimum(ridge, "ridge", 1e-4, use_cache=False).f_star == pytest.approx(f, rel=1e-13)
