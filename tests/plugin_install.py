"""Installing a scaffolded plug-in for one test only: ``pip install --target`` into a temporary
folder that only the test's subprocesses see (through PYTHONPATH), so the shared environment stays
untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional


def install_for_subprocesses(package: Path, site: Path) -> Callable[..., str]:
    """Install ``package`` into ``site``; returns ``call(*python_args, cwd=None)``, which runs the test
    interpreter with ``site`` on its path and returns its stdout (asserting exit status 0)."""
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--disable-pip-version-check", "--target", str(site), str(package)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1"}

    def call(*args: str, cwd: Optional[Path] = None) -> str:
        done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    return call
