"""Length-prefixed pickled messages from a rank to its launcher, one pipe per rank.

A rank writes (rank, kind, payload) tuples; the launcher reads every rank's pipe on a thread of
its own and merges them into one queue. A pipe that reaches end-of-file means its rank has
exited and everything it said has been read, so "died without a result" is never confused with
"its last message is still in flight".
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import threading

_HEADER = struct.Struct("<Q")


class Outbox:
    """The rank's end: `put` is safe from any thread of the rank."""

    def __init__(self, fd: int):
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._lock = threading.Lock()

    def put(self, message) -> None:
        blob = pickle.dumps(message)
        with self._lock:
            if self._file is not None:
                self._file.write(_HEADER.pack(len(blob)) + blob)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class Inbox:
    """The launcher's end: messages of every rank in arrival order, and which ranks have hung up."""

    def __init__(self):
        self.messages: queue.Queue = queue.Queue()
        self._closed: set[int] = set()
        self._lock = threading.Lock()

    def open_pipe(self, rank: int) -> int:
        """A new pipe for `rank`; returns the write end to hand to the rank (close it here after)."""
        read_fd, write_fd = os.pipe()
        threading.Thread(target=self._read, args=(rank, read_fd), name=f"shardwise-inbox-{rank}", daemon=True).start()
        return write_fd

    def hung_up(self, rank: int) -> bool:
        """True once `rank` closed its pipe (exited) and all it wrote is in `messages`."""
        with self._lock:
            return rank in self._closed

    def _read(self, rank: int, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            while True:
                header = pipe.read(_HEADER.size)
                if len(header) < _HEADER.size:
                    break
                blob = pipe.read(_HEADER.unpack(header)[0])
                try:
                    self.messages.put(pickle.loads(blob))
                except Exception:  # a message the launcher cannot read is a lost message, not a crash
                    continue
        with self._lock:
            self._closed.add(rank)
