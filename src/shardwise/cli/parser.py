"""An argparse parser whose errors are one line on stderr with exit status 2 (no usage dump)."""

from __future__ import annotations

import argparse
import math
import sys

USER_ERROR = 2


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default shown in --help, except where there is none to show."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        fail(f"{self.prog}: {message} (see {self.prog} --help)")


def fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(USER_ERROR)


def whole_number(least: int, most: int | None = None):
    """An argparse type: a whole number of at least `least` (and at most `most`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {least}, got {value}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"expected a whole number of at most {most}, got {value}")
        return value

    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)


def real_number(least: float | None = None, above: float | None = None, most: float | None = None):
    """An argparse type: a finite number within the bounds given (`above`: strictly greater)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
        if least is not None and value < least:
            raise argparse.ArgumentTypeError(f"expected a number of at least {least:g}, got {value:g}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"expected a number above {above:g}, got {value:g}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"expected a number of at most {most:g}, got {value:g}")
        return value

    return parse


positive_real = real_number(above=0)
non_negative_real = real_number(least=0)
