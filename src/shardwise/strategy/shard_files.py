"""The files of a checkpoint save: written durably with their SHA-256, read back only after the
checksum matches and only as tensors (see [Note: checkpoint format] in checkpoint/io.py).

Every process that writes a piece of a save uses these (training ranks, a parameter server's
servers), so they sit below the strategies.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch

from ..errors import ConfigError

FORMAT = "shardwise-checkpoint"
VERSION = 2


def read_meta(path: str) -> tuple[str, dict]:
    """The folder of the latest complete save under `path`, and its metadata."""
    latest = os.path.join(path, "LATEST")
    if os.path.isfile(latest):
        with open(latest) as f:
            folder = os.path.join(path, f.read().strip())
    elif os.path.isfile(os.path.join(path, "meta.json")):
        folder = path
    else:
        raise ConfigError(f"no checkpoint at {path}")
    try:
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
    except OSError:
        raise ConfigError(f"checkpoint {path} is incomplete: {folder} has no meta.json") from None
    except ValueError:
        raise ConfigError(f"checkpoint {path} is corrupt: its meta.json is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a shardwise checkpoint")
    if meta.get("version") != VERSION:
        raise ConfigError(f"checkpoint {path} has format version {meta.get('version')}; this shardwise reads version {VERSION}")
    return folder, meta


def read_shards(path: str, folder: str, meta: dict) -> list[dict]:
    shards = []
    for name, expected in sorted(meta["files"].items()):
        file = os.path.join(folder, name)
        if not os.path.isfile(file):
            raise ConfigError(f"checkpoint {path} is incomplete: {name} is missing")
        if sha256(file) != expected:
            raise ConfigError(f"checkpoint {path} is corrupt: {name} does not match its checksum")
        try:
            shards.append(torch.load(file, weights_only=True, map_location="cpu"))
        except Exception as exc:  # unpickling refuses anything but tensors and plain data
            raise ConfigError(f"checkpoint {path} is corrupt: {name} cannot be read ({str(exc).splitlines()[0]})") from None
    return shards


def write_file(file: str, write) -> str:
    """Write, flush and fsync; return the file's SHA-256."""
    with open(file, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    return sha256(file)


def sha256(file: str) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
