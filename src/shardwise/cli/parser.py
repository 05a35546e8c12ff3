"""An argparse parser whose errors are one line on stderr with exit status 2 (no usage dump)."""

from __future__ import annotations

import argparse
import sys

USER_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        fail(f"{self.prog}: {message} (see {self.prog} --help)")


def fail(message: str):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(USER_ERROR)


def whole_number(least: int):
    """An argparse type: a whole number of at least `least`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {least}, got {value}")
        return value

    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)
