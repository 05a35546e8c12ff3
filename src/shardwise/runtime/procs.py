"""Process hygiene shared by `launch` and `shardwise run`: no rank outlives its parent, and a
stopped job leaves no process behind.

[Note: signals]
- Each rank starts in a process group of its own, with a parent-death signal (SIGKILL) set in
  the child between fork and exec (`child_setup`), before the interpreter even starts: a
  launcher killed with SIGKILL takes its ranks with it, whatever they were importing.
- The launcher turns SIGTERM and SIGHUP into `Interrupted` (SIGINT is KeyboardInterrupt);
  unwinding stops every rank's whole process group (SIGTERM, then SIGKILL after a grace
  period), and the command exits with 128 + the signal number.
- `launch` called from a user's script does the same, then ends the script with the signal's
  default action, as if shardwise had not been there.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time

from . import network

PR_SET_PDEATHSIG = 1
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

try:  # resolved here, in the launcher: the child between fork and exec only calls it
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None


class Interrupted(BaseException):
    """The launcher received SIGTERM or SIGHUP (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def child_setup(parent: int):
    """A `preexec_fn`: own process group, and die with the launcher from the first instruction."""

    def setup() -> None:
        os.setpgid(0, 0)
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the launcher died before the signal was armed
            os._exit(1)

    return setup


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def ending_on_signals(die_after: bool = False):
    """Within the block SIGTERM and SIGHUP raise `Interrupted`, where their handler is the default
    one and this is the main thread (a handler the program installed is left alone). With
    `die_after`, an `Interrupted` this block caused ends the process by that signal after the
    block has cleaned up; otherwise it propagates."""
    installed = {}
    if threading.current_thread() is threading.main_thread():
        for sig in ENDING_SIGNALS:
            if signal.getsignal(sig) == signal.SIG_DFL:
                installed[sig] = signal.signal(sig, _raise_interrupted)
    try:
        yield
    except Interrupted as exc:
        if die_after and exc.signum in installed:
            _restore(installed)
            installed = {}
            os.kill(os.getpid(), exc.signum)
            time.sleep(5)  # the default action ends the process before this returns
        raise
    finally:
        _restore(installed)


def _restore(installed) -> None:
    for sig, previous in installed.items():
        signal.signal(sig, previous)


def die_with_parent() -> None:
    """Make this process exit when the process that started it goes away.

    Linux's PR_SET_PDEATHSIG does it in the kernel; a polling thread covers other systems and the
    window before the call.
    """
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="shardwise-parent-watch", daemon=True).start()


def stop_all(procs, grace_s: float = 2.0) -> None:
    """SIGTERM every rank's process group, then SIGKILL whatever is still there after `grace_s`
    (a rank's own children included, even when the rank itself has already exited)."""
    for p in procs:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        _wait(p, max(0.0, deadline - time.monotonic()))
    for p in procs:
        _signal(p, signal.SIGKILL)
        _wait(p, 5.0)


def rendezvous_store(world_size: int) -> network.Rendezvous:
    """A TCPStore hosted by the launching process on 127.0.0.1 only, at a free port.

    The launcher owns the store, so there is no race for the port between choosing and binding
    it, and every rank connects as a client (TORCHELASTIC_USE_AGENT_STORE, as torchrun does);
    see [Note: listening sockets].
    """
    return network.Rendezvous(world_size)


def rank_environment(rank: int, world_size: int, port: int) -> dict[str, str]:
    """The torchrun-compatible variables one local rank is started with (gloo on loopback)."""
    variables = {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
        "GROUP_RANK": "0",
        "MASTER_ADDR": network.LOOPBACK,
        "MASTER_PORT": str(port),
        "TORCHELASTIC_USE_AGENT_STORE": "True",
        "TORCHELASTIC_RESTART_COUNT": "0",
    }
    loopback = network.loopback_interface()
    if loopback and "GLOO_SOCKET_IFNAME" not in os.environ:
        variables["GLOO_SOCKET_IFNAME"] = loopback
    return variables


def _signal(p, sig) -> None:
    """Signal the rank's process group (it leads one: `child_setup`)."""
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait(p, timeout: float) -> None:
    try:
        p.wait(timeout)
    except Exception:
        pass
