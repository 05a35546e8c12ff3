"""A local job listens on loopback only: the rendezvous store and gloo's sockets.

See [Note: listening sockets] in shardwise/runtime/network.py.
"""

import subprocess
import sys
import textwrap

import pytest

from jobtree import descendants, is_loopback, listening, wait_for

# Every rank joins a collective (so gloo's pairs are connected), says it is ready, then waits.
SCRIPT = textwrap.dedent("""
    import pathlib, sys, time, torch, torch.distributed as dist, shardwise as sw
    sw.init()
    t = torch.ones(1)
    dist.all_reduce(t)
    pathlib.Path(sys.argv[1], f"ready-{sw.rank()}").touch()
    deadline = time.monotonic() + 60
    while not pathlib.Path(sys.argv[1], "done").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    dist.barrier()
""")

LAUNCH = textwrap.dedent("""
    import pathlib, sys, time, torch, torch.distributed as dist, shardwise as sw

    def rank_fn(folder):
        t = torch.ones(1)
        dist.all_reduce(t)
        pathlib.Path(folder, f"ready-{sw.rank()}").touch()
        deadline = time.monotonic() + 60
        while not pathlib.Path(folder, "done").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        dist.barrier()

    if __name__ == "__main__":
        sw.launch(rank_fn, 2, args=(sys.argv[1],), timeout_s=120)
""")


def _job_sockets(command, tmp_path):
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for([tmp_path / "ready-0", tmp_path / "ready-1"], 60), job.stderr.read() if job.poll() else "no ranks"
        sockets = listening([job.pid, *descendants(job.pid)])
    finally:
        (tmp_path / "done").touch()
        out, err = job.communicate(timeout=60)
    assert job.returncode == 0, err[-2000:]
    return sockets


@pytest.mark.timeout(120)
def test_shardwise_run_listens_on_loopback_only(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    sockets = _job_sockets([sys.executable, "-m", "shardwise", "run", "-n", "2", str(script), str(tmp_path)], tmp_path)
    assert sockets, "the job should at least host its rendezvous store"
    assert [s for s in sockets if not is_loopback(s[0])] == [], sockets


@pytest.mark.timeout(120)
def test_launch_listens_on_loopback_only(tmp_path):
    script = tmp_path / "launch_job.py"
    script.write_text(LAUNCH)
    sockets = _job_sockets([sys.executable, str(script), str(tmp_path)], tmp_path)
    assert sockets
    assert [s for s in sockets if not is_loopback(s[0])] == [], sockets
