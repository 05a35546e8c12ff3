"""SIGTERM, SIGHUP and SIGINT to a launcher end every rank and the ranks' children, and the
command exits with 128 + the signal; SIGKILL of a launcher leaves no rank behind either.

See [Note: signals] in shardwise/runtime/procs.py.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from jobtree import descendants, wait_for, wait_gone

# Each rank starts a child of its own (a data loader, a tokenizer server...), says it is ready, waits.
RANK_BODY = """
    child = subprocess.Popen(["sleep", "120"])
    pathlib.Path(folder, f"ready-{sw.rank()}").touch()
    time.sleep(120)
"""
RUN_SCRIPT = textwrap.dedent("""
    import pathlib, subprocess, sys, time, shardwise as sw
    sw.init()
    folder = sys.argv[1]
""") + textwrap.dedent(RANK_BODY)
LAUNCH_SCRIPT = textwrap.dedent("""
    import pathlib, subprocess, sys, time, shardwise as sw

    def rank_fn(folder):
""") + textwrap.indent(textwrap.dedent(RANK_BODY), "    ") + textwrap.dedent("""
    if __name__ == "__main__":
        sw.launch(rank_fn, 2, args=(sys.argv[1],), timeout_s=None)
""")
SMALL_TRAIN = ["--layers", "1", "--block-size", "16", "--embd", "32", "--heads", "2", "--steps", "100000",
               "--eval-every", "100000", "--no-progress"]
SIGNALS = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]


def _start(kind, tmp_path):
    if kind == "run":
        script = tmp_path / "job.py"
        script.write_text(RUN_SCRIPT)
        command = [sys.executable, "-m", "shardwise", "run", "-n", "2", str(script), str(tmp_path)]
    elif kind == "launch":
        script = tmp_path / "job.py"
        script.write_text(LAUNCH_SCRIPT)
        command = [sys.executable, str(script), str(tmp_path)]
    elif kind == "train":
        command = [sys.executable, "-m", "shardwise", "train", "--run-dir", str(tmp_path / "run"), *SMALL_TRAIN]
    else:
        command = [sys.executable, "-m", "shardwise", "bench", "--configs", "ddp", "--steps", "100000", "--warmup", "0",
                   "--width", "64", "--depth", "2", "--out", str(tmp_path / "bench"), "--no-progress"]
    # a session of its own, so that a stray signal never reaches the test runner; the signals'
    # default dispositions, as a job started from a terminal has them, even when the test runner
    # itself runs under nohup or in the background of a script (SIGHUP, SIGINT ignored), which a
    # job would inherit and rightly keep
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_default_signals)


def _default_signals() -> None:
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def _ranks_of(job) -> list[int]:
    return [pid for pid in descendants(job.pid) if b"shardwise" in _cmdline(pid) or b"job.py" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _wait_running(kind, job, tmp_path) -> list[int]:
    """The job's whole process tree once every rank is at work."""
    if kind in ("run", "launch"):
        assert wait_for([tmp_path / "ready-0", tmp_path / "ready-1"], 60), job.stderr.read() if job.poll() else "not ready"
    else:
        deadline = time.monotonic() + 60
        while len(_ranks_of(job)) < 2 and time.monotonic() < deadline:
            assert job.poll() is None, job.stderr.read()
            time.sleep(0.1)
        time.sleep(3)  # into the training loop
    tree = descendants(job.pid)
    assert len(tree) >= 2, tree
    return tree


# Every signal for each way ranks start (run: scripts; launch: functions; train: the CLI over launch);
# bench shares train's path, so one signal suffices there. The jobs of one way run side by side,
# one per signal, each in a folder of its own.
KINDS = {"run": SIGNALS, "launch": SIGNALS, "train": SIGNALS, "bench": [signal.SIGTERM]}


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", list(KINDS))
def test_signal_ends_every_rank(kind, tmp_path):
    signals = KINDS[kind]
    folders = [tmp_path / sig.name for sig in signals]
    for folder in folders:
        folder.mkdir()
    jobs = [_start(kind, folder) for folder in folders]
    results = []
    try:
        trees = [_wait_running(kind, job, folder) for job, folder in zip(jobs, folders)]
        for job, sig in zip(jobs, signals):
            job.send_signal(sig)
        for job, sig, tree in zip(jobs, signals, trees):
            _, stderr = job.communicate(timeout=30)
            results.append((sig, job.returncode, stderr, wait_gone(tree, 10)))
    finally:
        _kill_all([pid for job in jobs for pid in (job.pid, *descendants(job.pid))])
    for sig, returncode, stderr, left in results:
        assert left == [], f"still running after {sig.name}: {left}"
        if kind == "launch":  # a script's default action for the signal, as if shardwise were not there
            assert returncode in (-sig, 128 + sig), (sig.name, returncode, stderr)
        else:
            assert returncode == 128 + sig, (sig.name, returncode, stderr)
            assert "Traceback" not in stderr, (sig.name, stderr)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["run", "launch"])
def test_sigkill_of_the_launcher_leaves_no_rank(kind, tmp_path):
    job = _start(kind, tmp_path)
    tree = []
    try:
        tree = _wait_running(kind, job, tmp_path)
        ranks = _ranks_of(job)
        job.kill()
        job.wait(10)
        left = wait_gone(ranks, 10)
    finally:
        _kill_all([job.pid, *tree])  # the ranks' own children get no parent-death signal
    assert ranks and left == [], left


@pytest.mark.timeout(120)
def test_sigkill_while_ranks_still_import_leaves_no_rank(tmp_path):
    """The parent-death signal is armed before the rank's interpreter starts, not after imports."""
    job = _start("train", tmp_path)
    try:
        deadline = time.monotonic() + 60
        while len(_ranks_of(job)) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        ranks = _ranks_of(job)
        job.kill()
        job.wait(10)
        left = wait_gone(ranks, 10)
    finally:
        _kill_all([job.pid, *descendants(job.pid)])
    assert len(ranks) == 2 and left == [], left


def _kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
