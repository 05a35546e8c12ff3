"""Parameter server: sharded servers; synchronous, asynchronous and bounded-staleness workers."""

from .config import ParameterServer

__all__ = ["ParameterServer"]
