"""Careless inputs, as a new user types them: each is refused before any work starts, with exit
status 2 (or ConfigError from Python), exactly one line on stderr, no traceback, and nothing on
disk changed (the working folder and the cache)."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = "import shardwise as sw\nsw.init()\n"

# (name, arguments after `shardwise`, a phrase the one line must contain)
CASES = [
    ("train lr inf", ["train", "--lr", "inf"], "--lr"),
    ("train lr negative", ["train", "--lr", "-1"], "--lr"),
    ("train timeout zero", ["train", "--timeout", "0"], "--timeout"),
    ("train grad-clip nan", ["train", "--grad-clip", "nan"], "--grad-clip"),
    ("train staleness negative", ["train", "--strategy", "ps", "--staleness", "-1"], "--staleness"),
    ("train nproc zero", ["train", "--nproc", "0"], "--nproc"),
    ("train unknown strategy", ["train", "--strategy", "zero4"], "zero4"),
    ("train slow-worker below one", ["train", "--slow-worker", "0.5"], "--slow-worker"),
    ("train heads do not divide", ["train", "--heads", "3", "--embd", "32"], "n_head"),
    ("train batch over 3 ranks", ["train", "--nproc", "3"], "over 3 training ranks"),
    ("train resume missing", ["train", "--resume", "no-such-run"], "no-such-run"),
    ("train run-dir holds a run", ["train", "--run-dir", "oldrun"], "--resume oldrun"),
    ("train report into a folder", ["train", "--report", "oldrun"], "--report"),
    ("train out is a file", ["train", "--out", "notes.txt"], "notes.txt"),
    ("train on-nonfinite", ["train", "--on-nonfinite", "ignore"], "--on-nonfinite"),
    ("train save-every under async ps", ["train", "--strategy", "ps", "--nproc", "3", "--mode", "async",
                                         "--save-every", "10"], "--save-every"),
    ("sample empty prompt", ["sample", "oldrun", "--prompt", ""], "--prompt"),
    ("sample top-k zero", ["sample", "oldrun", "--top-k", "0"], "--top-k"),
    ("sample temperature zero", ["sample", "oldrun", "--temperature", "0"], "--temperature"),
    ("sample missing run", ["sample", "no-such-run"], "no-such-run"),
    ("run zero ranks", ["run", "-n", "0", "job.py"], "--nproc"),
    ("run missing script", ["run", "-n", "2", "missing.py"], "missing.py"),
    ("plan malformed config", ["plan", "--config", "bad.json"], "bad.json"),
    ("plan mfu above one", ["plan", "--params", "1e9", "--mfu", "2"], "--mfu"),
    ("plan params negative", ["plan", "--params", "-5"], "--params"),
    ("plan params nan", ["plan", "--params", "nan"], "--params"),
    ("plan world size zero", ["plan", "--params", "1e9", "--world-size", "0"], "--world-size"),
    ("bench unknown config", ["bench", "--configs", "ddp,zero9"], "zero9"),
    ("bench timeout negative", ["bench", "--timeout", "-1"], "--timeout"),
    ("bench json into a folder", ["bench", "--json", "oldrun"], "--json"),
    ("solve empty npz", ["solve", "--data", "empty.npz"], "empty.npz"),
    ("solve truncated npz", ["solve", "--data", "truncated.npz"], "truncated.npz"),
    ("solve npy named npz", ["solve", "--data", "array.npz"], "array.npz"),
    ("solve non-numeric csv", ["solve", "--data", "words.csv"], "words.csv"),
    ("solve negative seed", ["solve", "--data", "synthetic", "--seed", "-1"], "--seed"),
    ("solve lam nan", ["solve", "--lam", "nan"], "--lam"),
    ("solve plot into a folder", ["solve", "--plot", "oldrun"], "--plot"),
]


@pytest.fixture
def workdir(tmp_path):
    """A working folder with an earlier run, a text file and broken data files; a cache of its own."""
    (tmp_path / "oldrun").mkdir()
    (tmp_path / "oldrun" / "report.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("notes")
    (tmp_path / "job.py").write_text(SCRIPT)
    (tmp_path / "bad.json").write_text('{"hidden_size": 768, ')
    (tmp_path / "empty.npz").write_bytes(b"")
    buffer = tmp_path / "whole.npz"
    np.savez(buffer, X=np.ones((10, 3)), y=np.zeros(10))
    (tmp_path / "truncated.npz").write_bytes(buffer.read_bytes()[:200])
    buffer.unlink()
    with open(tmp_path / "array.npz", "wb") as f:
        np.save(f, np.ones((10, 4)))
    (tmp_path / "words.csv").write_text("a,b,label\nx,y,1\nz,w,0\n")
    (tmp_path / "cache").mkdir()
    return tmp_path


def _snapshot(folder):
    found = {}
    for d, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(d, name)
            found[os.path.relpath(path, folder)] = os.stat(path).st_mtime_ns if name in files else None
    return found


def _cli_in_process(args, workdir, monkeypatch, capsys):
    """(exit status, stderr) of `shardwise ARGS` run in this process (imports paid once)."""
    from shardwise.cli.main import main

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("SHARDWISE_CACHE", str(workdir / "cache"))
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def _cli_subprocess(args, workdir):
    env = {**os.environ, "SHARDWISE_CACHE": str(workdir / "cache")}
    done = subprocess.run([sys.executable, "-m", "shardwise", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=50)
    return done.returncode, done.stderr


def _check_refused(code, stderr, phrase):
    lines = stderr.strip().splitlines()
    assert code == 2, (code, stderr[-1500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    assert phrase in lines[0], lines[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,args,phrase", CASES, ids=[c[0] for c in CASES])
def test_cli_refuses_with_one_line(workdir, name, args, phrase, monkeypatch, capsys):
    before = _snapshot(workdir)
    _check_refused(*_cli_in_process(args, workdir, monkeypatch, capsys), phrase)
    assert _snapshot(workdir) == before


@pytest.mark.timeout(120)
@pytest.mark.parametrize("index", [0, 11, 15, 29], ids=lambda i: CASES[i][0])
def test_the_real_command_refuses_the_same_way(workdir, index):
    """A few of the cases again through `python -m shardwise`, as a user runs it."""
    _, args, phrase = CASES[index]
    before = _snapshot(workdir)
    _check_refused(*_cli_subprocess(args, workdir), phrase)
    assert _snapshot(workdir) == before


PYTHON_CASES = [
    ("wrap unknown strategy", "sw.wrap(torch.nn.Linear(2, 2), None, strategy='zero4')", "zero4"),
    ("wrap not a module", "sw.wrap('model', None)", "Module"),
    ("ddp bucket size inf", "sw.wrap(torch.nn.Linear(2, 2), None, strategy=sw.DDP(bucket_mb=float('inf')))", "bucket_mb"),
    ("zero bucket size negative", "sw.ZeRO(stage=2, bucket_mb=-1)", "bucket_mb"),
    ("ps dead_after_s zero", "sw.ParameterServer(mode='async', dead_after_s=0)", "dead_after_s"),
    ("launch zero ranks", "sw.launch(print, 0)", "nproc"),
    ("launch not a function", "sw.launch('train', 2)", "function"),
    ("launch timeout zero", "sw.launch(print, 2, timeout_s=0)", "timeout"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,call,phrase", PYTHON_CASES, ids=[c[0] for c in PYTHON_CASES])
def test_python_api_raises_config_error(tmp_path, name, call, phrase, monkeypatch):
    import torch

    import shardwise as sw

    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(sw.ConfigError, match=re.escape(phrase)):
        eval(call, {"sw": sw, "torch": torch})
    assert _snapshot(tmp_path) == before
