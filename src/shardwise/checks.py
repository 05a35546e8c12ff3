"""Checks of numbers a user passes in Python (strategy fields, launch options): finite and in range."""

from __future__ import annotations

import math
import numbers

from .errors import ConfigError


def positive_number(name: str, value) -> None:
    """`value` is a finite number above 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")


def optional_positive_number(name: str, value) -> None:
    if value is not None:
        positive_number(name, value)
