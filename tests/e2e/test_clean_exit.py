"""DDP scripts end cleanly: by `destroy_process_group()` (imported by name, as nanoGPT does), by
returning, or inside an `sw.launch` function; see [Note: group lifetime] in runtime/env.py.

A gloo group that outlives `destroy_process_group()` keeps its threads into interpreter teardown,
where the process sometimes aborts ("terminate called without an active exception"). The abort
is rare on any one run, so the tests check its cause on every run (no gloo thread is left once
the group is destroyed) as well as the exit status of many runs.
"""

import json
import re
import subprocess
import sys
import textwrap

import pytest

import shardwise as sw

GLOO_THREADS = textwrap.dedent("""
    def gloo_threads():
        import os
        names = []
        for task in os.listdir("/proc/self/task"):
            try:
                names.append(open(f"/proc/self/task/{task}/comm").read().strip())
            except OSError:
                pass
        return sorted(n for n in names if "gloo" in n)
""")

# A nanoGPT-shaped script: the optimizer is built after the group exists (its first construction
# imports torch._dynamo, which used to capture the group), then 3 DDP steps.
SCRIPT = GLOO_THREADS + textwrap.dedent("""
    import atexit, functools, os, sys
    # Registered first, so it runs last: after whatever shardwise does at exit.
    atexit.register(lambda: print(f"rank {os.environ['RANK']} at exit: gloo threads {gloo_threads()}", flush=True))
    import torch
    from torch.distributed import init_process_group, destroy_process_group
    ending, order = sys.argv[1], sys.argv[2]
    if order == "init-first":  # the group exists before shardwise is imported
        init_process_group(backend="gloo")
    import shardwise as sw
    sw.init()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
    model, optimizer = sw.wrap(model, functools.partial(torch.optim.AdamW, lr=1e-3), strategy="ddp")
    x, y = torch.randn(4, 8), torch.randn(4, 1)
    for step in range(3):
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if ending == "destroy":
        destroy_process_group()
""")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ending, order", [("destroy", "shardwise-first"), ("return", "shardwise-first"),
                                           ("destroy", "init-first"), ("return", "init-first")])
def test_script_ending_frees_the_group_and_exits_zero(tmp_path, ending, order):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, "-m", "shardwise", "run", "-n", "2", str(script), ending, order],
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "terminate called" not in done.stderr
    # The group was freed while the interpreter was whole: no gloo thread reaches teardown.
    assert sorted(re.findall(r"rank \d at exit: gloo threads \[[^\]]*\]", done.stdout)) == \
        [f"rank {r} at exit: gloo threads []" for r in range(2)], done.stdout


# Forks the two ranks of each run from one process that has paid for the imports, so 50 runs fit
# in a minute; each rank then ends exactly as a script does, through interpreter teardown.
DRIVER = GLOO_THREADS + textwrap.dedent("""
    import functools, gc, json, os, socket, sys
    import torch
    import shardwise as sw

    torch.set_num_threads(1)
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # the first optimizer's imports, once
    gc.freeze()  # forked ranks need not scan what they inherit at teardown
    ENDINGS = sys.argv[2].split(",")


    def rank_body(ending):
        from torch.distributed import destroy_process_group
        sw.init()
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
        model, optimizer = sw.wrap(model, functools.partial(torch.optim.AdamW, lr=1e-3), strategy="ddp")
        x, y = torch.randn(4, 8), torch.randn(4, 1)
        for _ in range(3):
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if ending == "destroy":
            destroy_process_group()
            if gloo_threads():
                print(f"gloo threads alive after destroy_process_group: {gloo_threads()}", file=sys.stderr, flush=True)
                sys.exit(7)


    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


    def parent():
        \"\"\"Fork the ranks of every run, a few runs at a time; print each rank's ending and exit code.\"\"\"
        runs, concurrent = int(sys.argv[1]), 3
        outcomes, running = [], {}
        for run in range(runs):
            while len(running) >= 2 * concurrent:
                pid, status = os.wait()
                outcomes.append([running.pop(pid), os.waitstatus_to_exitcode(status)])
            ending = ENDINGS[run % len(ENDINGS)]
            port = free_port()
            for rank in range(2):
                pid = os.fork()
                if pid == 0:
                    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
                    return ending
                running[pid] = ending
        while running:
            pid, status = os.wait()
            outcomes.append([running.pop(pid), os.waitstatus_to_exitcode(status)])
        print("OUTCOMES " + json.dumps(outcomes), flush=True)
        return None


    ending = parent()
    if ending is not None:  # a forked rank: the script's body, then the end every script has
        rank_body(ending)
""")


@pytest.mark.timeout(180)
def test_fifty_runs_of_a_ddp_script_all_exit_zero(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    done = subprocess.run([sys.executable, str(driver), "50", "destroy,return"], capture_output=True, text=True,
                          timeout=170)
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = json.loads(done.stdout.split("OUTCOMES ", 1)[1])
    assert len(outcomes) == 100
    assert [o for o in outcomes if o[1] != 0] == [], done.stderr[-2000:]
    assert "terminate called" not in done.stderr


def _destroy_inside_launch():
    import functools
    import os

    import torch
    from torch.distributed import destroy_process_group

    torch.set_num_threads(1)
    model, optimizer = sw.wrap(torch.nn.Linear(4, 2), functools.partial(torch.optim.AdamW, lr=1e-3))
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    destroy_process_group()
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(open(f"/proc/self/task/{task}/comm").read().strip())
        except OSError:
            pass
    return [n for n in names if "gloo" in n]


@pytest.mark.timeout(90)
def test_launch_function_that_destroys_the_group_itself():
    for _ in range(2):
        assert sw.launch(_destroy_inside_launch, 2) == [[], []]
