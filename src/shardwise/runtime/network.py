"""What a job listens on: the rendezvous store and gloo's sockets, on one chosen interface.

[Note: listening sockets]
PyTorch's TCPStore server binds the wildcard address (every interface) whatever host name it
is given, and its keys feed `pickle.loads` (`all_gather_object`, the parameter server's
messages); gloo picks its interface from the host name. So shardwise binds the listening socket
itself and hands the file descriptor to the store (`master_listen_fd`):
- local jobs (`launch`, `shardwise run`, `train`, `bench`) bind 127.0.0.1 and tell gloo to use
  the loopback interface: nothing of the job is reachable from another machine;
- a multi-host job started with MASTER_ADDR/MASTER_PORT (rank 0 hosts the store, as
  `init_process_group("env://")` would) binds MASTER_ADDR's own address only, and gloo uses
  the interface that reaches MASTER_ADDR; under torchrun its agent hosts the store (see
  torchrun's --rdzv-endpoint) and shardwise only picks gloo's interface.
A variable the user set (GLOO_SOCKET_IFNAME) always wins.
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

import torch.distributed as dist

LOOPBACK = "127.0.0.1"
_SIOCGIFADDR = 0x8915


class Rendezvous:
    """A TCPStore server listening on `host` only; keep the object alive while the job runs."""

    def __init__(self, world_size: int, host: str = LOOPBACK, port: int = 0, timeout=None):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(1024)
        self.port = self.listener.getsockname()[1]
        kwargs = {} if timeout is None else {"timeout": timeout}
        self.store = dist.TCPStore(host, self.port, world_size, is_master=True, wait_for_workers=False,
                                   master_listen_fd=self.listener.fileno(), **kwargs)
        self.listener.detach()  # the store's server owns the descriptor now and closes it

    def close(self) -> None:
        self.store = None


def interface_for(address: str) -> str | None:
    """The name of the local network interface that reaches `address` (None if not found)."""
    try:
        target = socket.gethostbyname(address)
    except OSError:
        return None
    if ipaddress.ip_address(target).is_loopback:
        return loopback_interface()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((target, 9))  # no packet is sent: this only asks the routing table
        except OSError:
            return None
        local = probe.getsockname()[0]
    return next((name for name in _interface_names() if _ipv4_of(name) == local), None)


def loopback_interface() -> str | None:
    """The loopback interface's name ('lo' on Linux, 'lo0' on macOS)."""
    return next((name for name in _interface_names() if _ipv4_of(name) == LOOPBACK), None)


def local_address_for(address: str) -> str | None:
    """`address` if it names this machine (so a server may bind it), else None."""
    try:
        target = socket.gethostbyname(address)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((target, 0))
        return target
    except OSError:
        return None


def _interface_names() -> list[str]:
    try:
        return [name for _, name in socket.if_nameindex()]
    except OSError:
        return []


def _ipv4_of(name: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])
