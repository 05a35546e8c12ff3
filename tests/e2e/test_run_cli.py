"""`shardwise run` and torchrun start the same script the same way; a failing rank stops the job."""

import re
import shutil
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist, shardwise as sw
    sw.init()
    t = torch.tensor([float(sw.rank())])
    dist.all_reduce(t)
    if "--fail" in sys.argv and sw.rank() == 1:
        raise SystemExit(3)
    print(f"rank {sw.rank()} of {sw.world_size()} sum {t.item():g} args {sys.argv[1:]}", flush=True)
""")


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "job.py"
    path.write_text(SCRIPT)
    return path


@pytest.mark.timeout(120)
def test_shardwise_run_starts_n_ranks(script):
    done = subprocess.run([sys.executable, "-m", "shardwise", "run", "-n", "3", str(script), "--x", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = sorted(re.findall(r"rank \d of \d sum \d+ args \[[^\]]*\]", done.stdout))  # ranks print concurrently
    assert lines == [f"rank {r} of 3 sum 3 args ['--x', '1']" for r in range(3)]


@pytest.mark.timeout(120)
def test_failing_rank_is_named(script):
    done = subprocess.run([sys.executable, "-m", "shardwise", "run", "-n", "2", str(script), "--fail"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "rank 1 failed (exit status 3)" in done.stderr


@pytest.mark.timeout(120)
def test_torchrun_works_unchanged_with_init(script):
    torchrun = shutil.which("torchrun") or str(__import__("pathlib").Path(sys.executable).with_name("torchrun"))
    done = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(script)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(re.findall(r"rank \d of \d sum \d+ args \[\]", done.stdout)) == [f"rank {r} of 2 sum 1 args []" for r in range(2)]
