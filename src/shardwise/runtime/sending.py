"""How `launch` sends the function and its arguments to fresh rank processes.

[Note: sending the function]
Ranks are new interpreters, so the function travels pickled. Functions of importable modules
go by reference (the rank imports the module, with the launcher's sys.path). Functions that no
other process can import (defined in a notebook, in `python -`, or in the script being run as
`__main__`) go by value with cloudpickle, together with the globals they use, as Ray, Dask and
Accelerate's notebook launcher send them. If something cannot travel (an open file, a lock), the
error says which object and what to do.
"""

from __future__ import annotations

import pickle

import cloudpickle

from ..errors import ConfigError


def dumps_job(fn, args: tuple) -> bytes:
    if not callable(fn):
        raise ConfigError(f"launch needs a function to run on every rank, got {type(fn).__name__}")
    try:
        return cloudpickle.dumps((fn, tuple(args)))
    except Exception as exc:
        name = getattr(fn, "__qualname__", repr(fn))
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot send {name} or its arguments to the ranks ({reason}): pass such objects "
                          "by path or build them inside the function") from None


def loads_job(blob: bytes):
    return pickle.loads(blob)
