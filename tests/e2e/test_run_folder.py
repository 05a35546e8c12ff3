"""A training run never overwrites another run's folder, report or checkpoints."""

import os
import subprocess
import sys

import pytest

from shardwise.errors import ConfigError
from shardwise.train.run_folder import choose_run_folder

SMALL = ["--layers", "1", "--block-size", "16", "--embd", "32", "--heads", "2", "--eval-every", "100", "--no-progress"]


def _snapshot(folder):
    return {os.path.relpath(os.path.join(d, f), folder): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(folder) for f in files}


def test_default_folders_are_unique_within_one_second(tmp_path):
    made = {choose_run_folder(None, str(tmp_path), "ddp", 2, None) for _ in range(5)}
    assert len(made) == 5 and all(os.path.isdir(f) for f in made)


def test_non_empty_run_dir_is_refused(tmp_path):
    (tmp_path / "report.json").write_text("{}")
    with pytest.raises(ConfigError, match=f"continue it with --resume {tmp_path}"):
        choose_run_folder(str(tmp_path), "runs", "ddp", 2, None)


def test_resuming_in_place_keeps_the_earlier_results(tmp_path):
    (tmp_path / "report.json").write_text("first")
    (tmp_path / "loss.png").write_text("first plot")
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "LATEST").write_text("ckpt-x")
    assert choose_run_folder(str(tmp_path), "runs", "ddp", 2, str(tmp_path / "checkpoint")) == str(tmp_path)
    assert (tmp_path / "report.1.json").read_text() == "first" and (tmp_path / "loss.1.png").exists()
    assert not (tmp_path / "report.json").exists()


@pytest.mark.timeout(200)
def test_train_refuses_a_folder_holding_a_run_and_resume_gets_its_own(tmp_path):
    run = tmp_path / "run"
    first = subprocess.run([sys.executable, "-m", "shardwise", "train", "--steps", "4", "--run-dir", str(run), *SMALL],
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    before = _snapshot(run)
    again = subprocess.run([sys.executable, "-m", "shardwise", "train", "--steps", "4", "--run-dir", str(run), *SMALL],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and f"--resume {run}" in again.stderr, again.stderr
    assert _snapshot(run) == before
    out = tmp_path / "runs"
    resumed = subprocess.run([sys.executable, "-m", "shardwise", "train", "--steps", "6", "--resume", str(run),
                              "--out", str(out), "--strategy", "zero2", *SMALL], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert _snapshot(run) == before  # the resumed run wrote its own folder
    (folder,) = os.listdir(out)
    assert {"report.json", "loss.png", "checkpoint"} <= set(os.listdir(out / folder))
