"""`shardwise run -n N script.py [args...]`: N local ranks of a script, torchrun-style.

Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT, so
`shardwise.init()` (or `torch.distributed.init_process_group("env://")`) works unchanged. If a
rank exits with an error, the others are stopped and the command exits with that rank's status.
SIGTERM, SIGHUP and SIGINT stop every rank and its children; see [Note: signals].
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ..runtime import procs
from .parser import fail, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help="start N local ranks of a script (torchrun-compatible)")
    p.add_argument("-n", "--nproc", type=positive_int, required=True, help="number of local ranks")
    p.add_argument("script", help="the Python script every rank runs")
    p.add_argument("script_args", nargs="...", help="arguments for the script")
    p.set_defaults(run=main)


def main(args) -> int:
    if not os.path.isfile(args.script):
        fail(f"no such script: {args.script}")
    rendezvous = procs.rendezvous_store(args.nproc)
    children = []
    try:
        for rank in range(args.nproc):
            env = {**os.environ, **procs.rank_environment(rank, args.nproc, rendezvous.port)}
            children.append(subprocess.Popen([sys.executable, args.script, *args.script_args], env=env,
                                             preexec_fn=procs.child_setup(os.getpid())))
        return _wait(children)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    finally:
        procs.stop_all(children)
        rendezvous.close()


def _wait(children) -> int:
    while True:
        codes = [c.poll() for c in children]
        failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            rank, code = failed[0]
            reason = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            print(f"error: rank {rank} failed ({reason}); stopping the other ranks", file=sys.stderr)
            return code if code > 0 else 1
        if all(code == 0 for code in codes):
            return 0
        time.sleep(0.1)
