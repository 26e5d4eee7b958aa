"""Optional Triton kernels: built on first use, run on CUDA tensors (or on the CPU in Triton's
interpreter), and replaced by the caller's torch operations when they cannot run here.

Set ``TRITON_INTERPRET=1`` before Triton is imported to run kernels on the CPU (tests do).
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import Callable, Generic, Optional, TypeVar

import torch

R = TypeVar("R")


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


class TritonKernel(Generic[R]):
    """A kernel ``build()`` makes (importing Triton inside), tried until it first fails.

    ``usable(t)`` says whether to call it for tensors like ``t``; calling it returns the kernel's
    result, or None after a failure (compiling happens on the first call: no Triton backend, no C
    compiler, ...). The first failure is kept in ``failure`` and warned about once, and the kernel
    is not tried again in this process. Running out of memory is raised, not a failure: the torch
    operations would need the same memory."""

    def __init__(self, name: str, build: Callable[[], Callable[..., R]], instead: str) -> None:
        self.name, self.instead, self._build = name, instead, build
        self.failure: Optional[str] = None

    @functools.cached_property
    def kernel(self) -> Optional[Callable[..., R]]:
        """The built kernel, or None when Triton cannot be imported."""
        try:
            return self._build()
        except ImportError:
            return None

    def usable(self, t: torch.Tensor) -> bool:
        return (t.is_cuda or interpreting()) and self.failure is None and self.kernel is not None

    def __call__(self, *args) -> Optional[R]:
        try:
            return self.kernel(*args)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            warnings.warn(f"the {self.name} kernel failed ({self.failure}); using {self.instead}", RuntimeWarning, stacklevel=3)
            return None
