"""Process hygiene shared by `launch` and `shardwise run`: no rank outlives its parent, and a
stopped job leaves no process behind."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

from . import network

PR_SET_PDEATHSIG = 1


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
    """SIGTERM every live process, then SIGKILL whatever is still there after `grace_s`."""
    for p in procs:
        if _alive(p):
            _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        _wait(p, max(0.0, deadline - time.monotonic()))
    for p in procs:
        if _alive(p):
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


def _alive(p) -> bool:
    return p.poll() is None if hasattr(p, "poll") else p.is_alive()


def _signal(p, sig) -> None:
    try:
        os.kill(p.pid, sig)
    except ProcessLookupError:
        pass


def _wait(p, timeout: float) -> None:
    if hasattr(p, "poll"):
        try:
            p.wait(timeout)
        except Exception:
            pass
    else:
        p.join(timeout)
