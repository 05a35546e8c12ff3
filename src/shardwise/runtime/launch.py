"""`launch`: run a function on N fresh local ranks and return what each returned.

[Note: failure reporting]
When a rank fails, its peers usually fail a moment later inside a collective ("connection
closed by peer"). Those are consequences, not causes. The launcher waits a short grace period
after the first failure, then reports the root cause: an exception that is not a communication
error, or a rank that died without a word (killed, out of memory), before any collateral error.
Every rank is then stopped, so `launch` never leaves a process behind and never hangs past
`timeout_s`.
"""

from __future__ import annotations

import numbers
import os
import pickle
import queue
import subprocess
import sys
import time
import traceback

from ..checks import optional_positive_number
from ..errors import ConfigError, WorkerError
from . import env, frames, procs, progress, sending

_GRACE_S = 2.0
_PIPE_GRACE_S = 1.0
_COLLATERAL_TYPES = {"DistBackendError", "DistNetworkError", "DistError", "DistStoreError"}
_COLLATERAL_TEXT = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


class RemoteTraceback(Exception):
    """Carries a rank's traceback text so it prints under the WorkerError that reports it."""

    def __str__(self) -> str:
        return self.args[0]


def launch(fn, nproc: int, args: tuple = (), backend: str | None = None, timeout_s: float | None = 300,
           collective_timeout_s: float | None = None):
    """Run `fn(*args)` in `nproc` fresh local processes, each with an initialised process group.

    Returns the per-rank return values in rank order. If any rank fails or the job outlives
    `timeout_s` (None: no limit), raises WorkerError naming the rank (see [Note: failure
    reporting]). A collective waits at most `collective_timeout_s` for its peers (default:
    `timeout_s`, or SHARDWISE_TIMEOUT_S). `fn` may be defined in a notebook or in `python -`:
    see [Note: sending the function]. SIGTERM, SIGHUP and SIGINT end every rank: see
    [Note: signals].
    """
    if isinstance(nproc, bool) or not isinstance(nproc, numbers.Integral) or nproc < 1:
        raise ConfigError(f"nproc must be a whole number of at least 1, got {nproc!r}")
    nproc = int(nproc)
    optional_positive_number("timeout_s", timeout_s)
    optional_positive_number("collective_timeout_s", collective_timeout_s)
    job = sending.dumps_job(fn, args)
    with procs.ending_on_signals(die_after=True):
        return _run(job, nproc, backend, timeout_s, collective_timeout_s)


def _run(job: bytes, nproc: int, backend, timeout_s, collective_timeout_s) -> list:
    inbox = frames.Inbox()
    rendezvous = procs.rendezvous_store(nproc)
    threads = max(1, (os.cpu_count() or 1) // nproc)
    workers = []
    try:
        for rank in range(nproc):
            spec = {
                "job": job, "rank": rank, "env": procs.rank_environment(rank, nproc, rendezvous.port),
                "backend": backend, "threads": threads, "collective_timeout_s": collective_timeout_s or timeout_s,
                "sys_path": list(sys.path), "sys_argv": list(sys.argv),
            }
            workers.append(_start_rank(spec, inbox))
        return _collect(workers, inbox, timeout_s)
    finally:
        procs.stop_all(workers)
        rendezvous.close()


def _start_rank(spec: dict, inbox: frames.Inbox) -> subprocess.Popen:
    write_fd = inbox.open_pipe(spec["rank"])
    try:
        p = subprocess.Popen([sys.executable, "-c", _BOOT, str(write_fd)], stdin=subprocess.PIPE, pass_fds=(write_fd,),
                             preexec_fn=procs.child_setup(os.getpid()))
    finally:
        os.close(write_fd)
    try:
        p.stdin.write(pickle.dumps(spec))
        p.stdin.close()
    except BrokenPipeError:  # it died at once; _collect reports how
        pass
    return p


_BOOT = "from shardwise.runtime.launch import _boot; _boot()"


def _collect(workers, inbox: frames.Inbox, timeout_s: float) -> list:
    nproc = len(workers)
    results: dict[int, object] = {}
    steps: dict[int, int] = {}
    expendable: set[int] = set()
    exited_at: dict[int, float] = {}
    failures: list[tuple[float, int, str, str, str, object]] = []
    deadline = time.monotonic() + timeout_s if timeout_s is not None else float("inf")
    first_failure_at = None
    while len(results) < nproc:
        now = time.monotonic()
        if first_failure_at is not None and now - first_failure_at > _GRACE_S:
            break
        if now > deadline:
            running = [r for r in range(nproc) if r not in results]
            raise WorkerError(f"timed out after {timeout_s:g}s; ranks still running: {running}")
        try:
            rank, kind, payload = inbox.messages.get(timeout=0.05)
        except queue.Empty:
            for rank, p in enumerate(workers):
                if rank in results or p.poll() is None or any(f[1] == rank for f in failures):
                    continue
                exited_at.setdefault(rank, time.monotonic())
                # Its last words may still be in the pipe; a child it forked may hold the pipe
                # open after it exited, so wait for the end of the pipe a moment only.
                if not inbox.messages.empty() or (
                        not inbox.hung_up(rank) and time.monotonic() - exited_at[rank] < _PIPE_GRACE_S):
                    break
                if rank in expendable:  # an asynchronous worker may die; the job goes on
                    results[rank] = None
                    continue
                failures.append((time.monotonic(), rank, "died", _exit_description(p.returncode), "", None))
                first_failure_at = first_failure_at or time.monotonic()
            continue
        if kind == "step":
            steps[rank] = payload
        elif kind == "expendable":
            expendable.add(rank)
        elif kind == "ok":
            results[rank] = pickle.loads(payload)
        else:
            type_name, message, tb_text, original = payload
            failures.append((time.monotonic(), rank, type_name, message, tb_text, original))
            first_failure_at = first_failure_at or time.monotonic()
    if not failures:
        return [results[r] for r in range(nproc)]
    _, rank, type_name, message, tb_text, original = _root_cause(failures)
    at = f" at step {steps[rank]}" if rank in steps else ""
    if type_name == "died":
        error = WorkerError(f"rank {rank} died ({message}){at}")
    else:
        error = WorkerError(f"rank {rank} failed{at}: {type_name}: {message}")
    error.rank = rank
    error.step = steps.get(rank)
    error.original = _unpickle_or_none(original)
    raise error from (RemoteTraceback(tb_text) if tb_text else None)


def _root_cause(failures):
    """The first failure that is not a consequence of another rank's failure."""
    def collateral(f) -> bool:
        _, _, type_name, message, _, _ = f
        return type_name in _COLLATERAL_TYPES or any(t in message for t in _COLLATERAL_TEXT)

    causes = [f for f in failures if not collateral(f)]
    return min(causes or failures, key=lambda f: f[0])


def _exit_description(exitcode) -> str:
    if exitcode is not None and exitcode < 0:
        import signal

        return f"killed by signal {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode} without reporting a result"


def _unpickle_or_none(blob):
    if blob is None:
        return None
    try:
        return pickle.loads(blob)
    except Exception:
        return None


def _boot() -> None:
    """Entry point of one rank process (its parent-death signal is already armed)."""
    procs.die_with_parent()
    outbox = frames.Outbox(int(sys.argv[1]))
    spec = pickle.load(sys.stdin.buffer)
    sys.stdin.close()
    sys.path[:] = spec["sys_path"]
    sys.argv[:] = spec["sys_argv"]  # as multiprocessing's spawn does: the function may read them
    _rank_main(spec, outbox)


def _rank_main(spec: dict, outbox: frames.Outbox) -> None:
    import torch

    rank = spec["rank"]
    os.environ.update(spec["env"])
    if spec["collective_timeout_s"] is not None:
        os.environ[env.TIMEOUT_ENV] = str(spec["collective_timeout_s"])
    torch.set_num_threads(spec["threads"])
    progress.attach(outbox, rank)
    try:
        fn, args = sending.loads_job(spec["job"])
        env.init(spec["backend"])
        result = fn(*args)
        progress.run_finishers()
        outbox.put((rank, "ok", pickle.dumps(result)))
    except progress.ServerFinished:
        outbox.put((rank, "ok", pickle.dumps(None)))
    except BaseException as exc:  # report everything, KeyboardInterrupt included
        try:
            original = pickle.dumps(exc)
        except Exception:
            original = None
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        payload = (type(exc).__name__, message, traceback.format_exc(), original)
        outbox.put((rank, "error", payload))
    finally:
        outbox.close()
        env.shutdown()
