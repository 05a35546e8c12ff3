"""`sw.launch` works where the function cannot be imported by another process: `python -`
and notebooks (the function and the globals it uses travel by value)."""

import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent("""
    import torch, torch.distributed as dist, shardwise as sw
    SCALE = 10

    def summed(x):
        t = torch.tensor([float(sw.rank() + x)]) * SCALE
        dist.all_reduce(t)
        return t.item()

    print("sums", sw.launch(summed, 2, args=(1,)))
    print("ranks", sw.launch(lambda: sw.rank(), 2))
""")


@pytest.mark.timeout(120)
def test_launch_from_python_stdin():
    done = subprocess.run([sys.executable, "-"], input=PROGRAM, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sums [30.0, 30.0]" in done.stdout and "ranks [0, 1]" in done.stdout


@pytest.mark.timeout(60)
def test_what_cannot_travel_is_one_config_error():
    program = textwrap.dedent("""
        import threading, shardwise as sw
        lock = threading.Lock()
        def uses_lock():
            return lock.locked()
        try:
            sw.launch(uses_lock, 2)
        except sw.ConfigError as e:
            print("ConfigError:", e)
    """)
    done = subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ConfigError: cannot send uses_lock" in done.stdout
