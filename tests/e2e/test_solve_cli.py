"""`shardwise solve` as a user runs it, bad input as one line with status 2, and the benchmark at a tiny size."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shardwise.cli.main import main

REPO = Path(__file__).resolve().parents[2]
FIELDS = {"solver", "world_size", "rounds", "comm_bytes", "objective", "suboptimality", "converged"}


def shardwise(*args, cwd=None, timeout=150):
    return subprocess.run([sys.executable, "-m", "shardwise", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.mark.timeout(180)
def test_newton_cg_on_breast_cancer_at_four_ranks_meets_the_tolerance(tmp_path):
    plot = tmp_path / "solve.png"
    done = shardwise("solve", "--problem", "logistic", "--data", "breast_cancer", "--solver", "newton-cg",
                     "--nproc", "4", "--tol", "1e-8", "--json", "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert FIELDS <= set(report)
    assert report["solver"] == "newton-cg" and report["world_size"] == 4 and report["converged"] is True
    assert 0 <= report["suboptimality"] <= 1e-8 or abs(report["suboptimality"]) < 1e-14
    assert 0 < report["rounds"] < 200 and report["comm_bytes"] > 0
    assert plot.stat().st_size > 1000


@pytest.mark.timeout(180)
def test_comparing_solvers_on_ridge_prints_a_table_and_writes_the_plot(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status = main(["solve", "--problem", "ridge", "--data", "diabetes", "--solver", "cg,pcg,agd", "--nproc", "3",
                   "--tol", "1e-8"])
    out = capsys.readouterr().out
    assert status == 0
    assert "| solver | N | iterations | rounds | comm bytes | time s | f - f* | converged |" in out
    lines = [line for line in out.splitlines() if line.startswith("| cg ") or line.startswith("| pcg ")]
    assert len(lines) == 2 and all(line.rstrip().endswith("| yes |") for line in lines)
    assert (tmp_path / "runs" / "solve-ridge-diabetes.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--data", "CSV_BAD"], "line 3, column 2: 'abc' is not a number"),
    (["--data", "CSV_NAN"], "feature value nan at row 2, column 1"),
    (["--data", "CSV_LABELS"], "label 7.5 at row 1 is not a class index"),
    (["--lam", "0"], "--lam must be positive for logistic regression"),
    (["--problem", "ridge", "--lam", "-1"], "argument --lam: expected a number of at least 0, got -1"),
    (["--solver", "cg"], "cg and pcg solve ridge regression"),
    (["--solver", "sgd"], "unknown solver 'sgd'"),
    (["--problem", "lasso"], "unknown problem 'lasso'"),
    (["--data", "nowhere.npz"], "cannot read nowhere.npz"),
    (["--tol", "-1"], "argument --tol: expected a number above 0, got -1"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, args, message):
    files = {"CSV_BAD": "x1,x2,y\n1,2,0\n3,abc,1\n", "CSV_NAN": "1,2,0\nnan,4,1\n", "CSV_LABELS": "1,2,7.5\n3,4,1\n"}
    for key, text in files.items():
        (tmp_path / f"{key}.csv").write_text(text)
    args = [str(tmp_path / f"{a}.csv") if a in files else a for a in args]
    try:
        status = main(["solve", "--nproc", "1", "--no-plot", *args])
    except SystemExit as exc:  # flags that argparse itself refuses
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_benchmark_tiny_prints_the_rounds_table(tmp_path):
    report_path = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "solvers.py"), "--tiny", "--json", str(report_path)],
                          capture_output=True, text=True, timeout=140, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| problem | n x d | solver | rounds |" in done.stdout
    report = json.loads(report_path.read_text())
    assert [p["problem"] for p in report["problems"]] == ["breast_cancer", "synthetic", "synthetic-corr"]
    for problem in report["problems"]:
        rows = {row["solver"]: row for row in problem["solvers"]}
        assert set(rows) == {"gd", "agd", "lbfgs", "newton-cg"}
        assert rows["newton-cg"]["rounds"] is not None and rows["lbfgs"]["rounds"] is not None
        assert all(row["rounds_spent"] <= problem["max_rounds"] + 4 for row in rows.values())
