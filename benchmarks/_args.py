"""Argument types the benchmark scripts share: counts refused with argparse's one-line usage error
(exit status 2) instead of a traceback deep inside. The scripts run as ``python3 benchmarks/X.py``,
which puts this folder on ``sys.path``, so they import it as ``_args``."""

from __future__ import annotations

import argparse


def _count(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {least} or more, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (a count that cannot be none: images, batch size, steps)."""
    return _count(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a count where 0 means none: references, workers)."""
    return _count(text, 0)


def positive_ints(text: str) -> list[int]:
    """A comma list of integers >= 1 (batch sizes)."""
    return [positive_int(x) for x in text.split(",")]


def non_negative_ints(text: str) -> list[int]:
    """A comma list of integers >= 0 (look-ahead windows, 0: none)."""
    return [non_negative_int(x) for x in text.split(",")]
