"""Typed reading of an adapter's ``--dataset-option key=value`` strings; unknown keys are refused.

Each adapter declares ``OPTIONS = {name: help}``; :func:`check_options` rejects a key that is not
declared (with the list of known ones), and :func:`get_bool` / :func:`get_int` convert values
with an error that names the dataset, the option and the bad value.
"""

from __future__ import annotations

from typing import Mapping, Optional

from pigbench.adapter import DatasetError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def check_options(dataset: str, options: Mapping[str, str], known: Mapping[str, str]) -> None:
    """Raise :class:`DatasetError` for an option the adapter does not declare."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        listing = "; ".join(f"{k}: {v}" for k, v in known.items()) or "none"
        raise DatasetError(f"{dataset}: unknown option(s) {', '.join(unknown)} (known options: {listing})")


def get_bool(dataset: str, options: Mapping[str, str], key: str, default: bool) -> bool:
    raw = options.get(key)
    if raw is None:
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise DatasetError(f"{dataset}: option {key}={raw!r} is not a boolean (use true or false)")


def get_int(dataset: str, options: Mapping[str, str], key: str, default: Optional[int], minimum: int = 0) -> Optional[int]:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DatasetError(f"{dataset}: option {key}={raw!r} is not an integer") from None
    if value < minimum:
        raise DatasetError(f"{dataset}: option {key}={raw!r} must be >= {minimum}")
    return value
