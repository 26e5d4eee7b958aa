"""What the GPU benchmark scripts share. They run as ``python3 benchmarks/X.py``, which puts this
folder on ``sys.path``, so they import it as ``_device``."""

from __future__ import annotations

import sys

from pigbench.runner import check_device


def require_device(device: str) -> None:
    """Exit (status 1) with one line when ``device`` cannot run on this machine (``--device cuda``
    where torch sees no GPU), pointing to the CPU smoke test in the script's docstring."""
    try:
        check_device(device)
    except ValueError as exc:
        sys.exit(f"{exc} (the CPU smoke test is in this script's docstring)")
