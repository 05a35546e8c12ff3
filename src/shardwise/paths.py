"""Output paths checked before any work starts, so that a long job never fails at its last step
because it cannot write its result."""

from __future__ import annotations

import os

from .errors import ConfigError


def check_writable(file: str | None, flag: str) -> None:
    """`file` can be written (created, with its missing parent folders); None passes."""
    if file is None:
        return
    if file == "" or os.path.isdir(file):
        raise ConfigError(f"{flag} {file!r} is not a file name")
    if os.path.exists(file):
        if not os.access(file, os.W_OK):
            raise ConfigError(f"{flag} {file}: not writable")
        return
    check_folder_writable(os.path.dirname(os.path.abspath(file)), flag)


def check_folder_writable(folder: str | None, flag: str) -> None:
    """Files can be made in `folder` (it exists, or the nearest existing folder above it allows creating it)."""
    if folder is None:
        return
    if folder == "":
        raise ConfigError(f"{flag} needs a folder name")
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{flag} {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {folder}: {existing} is not writable")
