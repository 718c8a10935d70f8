"""Argument types shared by the command-line edges (argparse ``type=`` callables)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def seconds(high: float, zero_ok: bool = False, low: float = 0.0) -> Callable[[str], float]:
    """A number of seconds, finite, above 0 (or from 0 with ``zero_ok``; from ``low`` when given) and at
    most ``high``.

    nan and inf are refused: a wait of nan seconds never ends, and time.sleep rejects inf.
    """
    def parse(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds") from None
        if not (math.isfinite(x) and (low <= x if zero_ok or low else 0 < x) and x <= high):
            span = f"[{low:g}, {high:g}]" if zero_ok or low else f"(0, {high:g}]"
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds in {span}")
        return x
    return parse


def checked(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type from one of the settings' parse functions (kvfile.whole, usm checks...): the
    command line checks a value with the words the files use, and argparse names the option."""
    from snmplb.errors import ConfigError

    def arg(text: str) -> object:
        try:
            return parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return arg
