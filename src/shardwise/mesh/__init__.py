"""Data, pipeline and tensor parallelism composed on a device mesh."""

from .config import Mesh
from .layout import MeshShape

__all__ = ["Mesh", "MeshShape"]
