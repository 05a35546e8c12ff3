"""Two ranks as two hosts: network namespaces joined by a veth pair, each side started by
torchrun with c10d rendezvous over the veth addresses. Training runs; then the link is cut and
both ranks must exit within the collective timeout, naming the collective and the step,
instead of hanging.

torchrun's own agent on the host that does not hold the rendezvous store may stay blocked on
that store for minutes after its rank has exited (its keep-alive thread holds a lock while it
waits on the dead connection, and the monitor loop waits for that lock): that process is
torchrun's, not a rank, and the test ends it."""

import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

TIMEOUT_S = 8
SCRIPT = textwrap.dedent("""
    import sys, time, functools, torch, shardwise as sw
    from shardwise.runtime import progress
    torch.set_num_threads(1)
    sw.init()
    open(sys.argv[1] + f"/pid{sw.rank()}", "w").write(str(__import__("os").getpid()))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
    model, optimizer = sw.wrap(model, functools.partial(torch.optim.SGD, lr=0.01), strategy="ddp")
    for step in range(100000):
        progress.report_step(step)
        model(torch.randn(8, 64)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"rank {sw.rank()} step {step}", flush=True)
        time.sleep(0.05)
""")


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    probe = f"swprobe{uuid.uuid4().hex[:6]}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode != 0:
        return "ip netns is unavailable here"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _running(pid: int) -> bool:
    """Alive and not a zombie (a blocked parent may not have reaped an exited rank yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _sh(*args):
    subprocess.run(args, check=True, capture_output=True)


@pytest.mark.timeout(180)
def test_two_hosts_train_then_exit_cleanly_when_the_link_is_cut(tmp_path):
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    tag = uuid.uuid4().hex[:5]
    ns = [f"swa{tag}", f"swb{tag}"]
    veth = [f"vwa{tag}", f"vwb{tag}"]
    addrs = ["10.231.7.1", "10.231.7.2"]
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    jobs = []
    try:
        for name in ns:
            _sh("ip", "netns", "add", name)
        _sh("ip", "link", "add", veth[0], "type", "veth", "peer", "name", veth[1])
        for name, dev, addr in zip(ns, veth, addrs):
            _sh("ip", "link", "set", dev, "netns", name)
            _sh("ip", "-n", name, "addr", "add", f"{addr}/24", "dev", dev)
            _sh("ip", "-n", name, "link", "set", dev, "up")
            _sh("ip", "-n", name, "link", "set", "lo", "up")
        torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
        for node, (name, dev) in enumerate(zip(ns, veth)):
            env = {**os.environ, "GLOO_SOCKET_IFNAME": dev, "SHARDWISE_TIMEOUT_S": str(TIMEOUT_S), "PYTHONUNBUFFERED": "1"}
            cmd = ["ip", "netns", "exec", name, torchrun, "--nnodes", "2", "--nproc-per-node", "1",
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{addrs[0]}:29611", "--rdzv-id", tag,
                   "--rdzv-conf", f"is_host={'true' if node == 0 else 'false'},read_timeout={TIMEOUT_S}",
                   "--local-addr", addrs[node], str(script), str(tmp_path)]
            log = open(tmp_path / f"node{node}.log", "w")
            jobs.append((subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            logs = [(tmp_path / f"node{n}.log").read_text() for n in range(2)]
            if all("step 5" in text for text in logs):
                break
            assert all(job.poll() is None for job, _ in jobs), logs
            time.sleep(0.2)
        else:
            pytest.fail(f"training did not start on both hosts: {logs}")
        rank_pids = [int((tmp_path / f"pid{r}").read_text()) for r in range(2)]
        _sh("ip", "-n", ns[0], "link", "set", veth[0], "down")  # cut the link
        cut_at = time.monotonic()
        exited_after = {}
        while len(exited_after) < 2 and time.monotonic() - cut_at < TIMEOUT_S + 30:
            for rank, pid in enumerate(rank_pids):
                if rank not in exited_after and not _running(pid):
                    exited_after[rank] = round(time.monotonic() - cut_at, 1)
            time.sleep(0.1)
        print("seconds from the cut to each rank's exit:", exited_after)
        logs = [(tmp_path / f"node{n}.log").read_text() for n in range(2)]
        assert len(exited_after) == 2, (exited_after, logs)
        for rank, text in enumerate(logs):
            assert f"rank {rank} step" in text  # trained over the veth before the cut
            assert "CollectiveError: all_reduce could not complete at step" in text, text[-3000:]
        jobs[0][0].wait(timeout=30)  # the agent that holds the rendezvous store exits too
        assert jobs[0][0].returncode != 0
    finally:
        for job, log in jobs:
            if job.poll() is None:
                try:
                    os.killpg(job.pid, 9)
                except ProcessLookupError:
                    pass
                job.wait()
            log.close()
        for name in ns:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
