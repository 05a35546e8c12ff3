"""A rank killed mid-training ends the job quickly and cleanly; --resume finishes it exactly."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import shardwise as sw

SMALL = ["--layers", "2", "--block-size", "32", "--eval-every", "100", "--no-progress"]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _checkpoint_step(run_dir) -> int:
    try:
        latest = open(os.path.join(run_dir, "checkpoint", "LATEST")).read().strip()
        return json.load(open(os.path.join(run_dir, "checkpoint", latest, "meta.json")))["extra"]["step"]
    except (OSError, ValueError):
        return 0


@pytest.mark.timeout(300)
def test_sigkill_of_a_rank_ends_the_job_and_resume_matches(tmp_path):
    run_dir = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "shardwise", "train", "--steps", "40", "--save-every", "10", "--run-dir", run_dir, *SMALL]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _checkpoint_step(run_dir) < 10 and time.monotonic() < deadline:
        time.sleep(0.2)
    ranks = [pid for pid in _children(job.pid) if "shardwise.runtime.launch" in open(f"/proc/{pid}/cmdline").read()]
    assert len(ranks) == 2
    os.kill(ranks[1], signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = job.communicate(timeout=60)
    assert time.monotonic() - killed_at < 60
    assert job.returncode not in (0, None)
    assert "rank 1 died (killed by signal SIGKILL) at step" in stderr, stderr
    assert "resume from the last checkpoint with: shardwise train --resume" in stderr
    assert "Traceback" not in stderr
    assert not any(_alive(pid) for pid in ranks)
    saved = _checkpoint_step(run_dir)
    assert saved >= 10
    report = str(tmp_path / "resumed.json")
    resumed = subprocess.run([*cmd[:-len(SMALL)], *SMALL, "--resume", run_dir, "--report", report],
                             capture_output=True, text=True, timeout=200)
    assert resumed.returncode == 0, resumed.stderr
    straight_report = str(tmp_path / "straight.json")
    straight = subprocess.run([sys.executable, "-m", "shardwise", "train", "--steps", "40", "--save-every", "0",
                               "--run-dir", str(tmp_path / "straight"), "--report", straight_report, *SMALL],
                              capture_output=True, text=True, timeout=200)
    assert straight.returncode == 0, straight.stderr
    after = json.load(open(report))
    before = json.load(open(straight_report))
    assert after["start_step"] == saved
    assert after["losses"] == before["losses"][saved:]


def _disagree():
    import torch

    from shardwise import comm
    from shardwise.runtime import progress

    progress.report_step(3)
    if sw.rank() == 0:
        comm.all_reduce(torch.ones(4))  # rank 1 never joins
    else:
        time.sleep(30)


@pytest.mark.timeout(60)
def test_a_collective_that_cannot_complete_times_out_with_its_name_and_step():
    started = time.monotonic()
    with pytest.raises(sw.WorkerError, match=r"rank 0 failed at step 3: CollectiveError: all_reduce could not complete at step 3 within the 3s timeout"):
        sw.launch(_disagree, 2, timeout_s=50, collective_timeout_s=3)
    assert time.monotonic() - started < 25
