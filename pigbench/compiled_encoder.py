"""An image encoder compiled with ``torch.compile`` for one batch shape, with an eager fallback.

``torch.compile`` fuses the elementwise work between a transformer's matrix products and turns
each forward pass into a few launches of generated code, which takes the Python overhead of the
model's modules off the host. It is opt-in (``PIGBENCH_COMPILE=1``, see :func:`compile_requested`):
compiling a ViT-H/14 takes about 25 s, and on an H200 the compiled tower ran no faster than the
eager one (``docs/benchmarks.md``), so it pays only where the host, not the GPU, is the limit.

It specializes on input shapes and strides, so an encoder compiled as is would compile again for
each new batch size: :class:`CompiledEncoder` pads each smaller batch with zero images to
``batch_size`` (and makes it contiguous) and drops the padding rows from the output, so one
compiled graph serves a whole run. If compiling fails (no Triton or C compiler, an operation the
compiler does not support), it warns once and runs the eager encoder from then on.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Optional, Union

import torch

COMPILE_ENV = "PIGBENCH_COMPILE"


def compile_requested() -> bool:
    """Whether to compile image encoders: ``$PIGBENCH_COMPILE`` is ``1``, ``true``, ``yes`` or ``on``."""
    return os.environ.get(COMPILE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class CompiledEncoder:
    """``encode`` compiled for batches of exactly ``batch_size``; callable like ``encode``.

    A batch of n < ``batch_size`` images is padded and the n real rows returned; a larger batch
    (which :class:`~pigbench.embedding.ImageEmbedder` never sends) runs eagerly. ``backend`` and
    ``mode`` are passed to ``torch.compile``. ``failure`` holds the compile error, if any.
    """

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], batch_size: int,
                 backend: Union[str, Callable] = "inductor", mode: Optional[str] = None) -> None:
        self.eager = encode
        self.batch_size = max(1, batch_size)
        self.compiled = torch.compile(encode, backend=backend, mode=mode, dynamic=False)
        self.failure: Optional[str] = None
        self._compiled_once = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if self.failure is not None or n > self.batch_size:
            return self.eager(x)
        padded = x if n == self.batch_size else torch.cat([x, x.new_zeros((self.batch_size - n, *x.shape[1:]))])
        padded = padded.contiguous()
        if self._compiled_once:
            return self.compiled(padded)[:n]
        try:
            out = self.compiled(padded)
        except Exception as exc:  # the first call compiles; any failure there means: stay eager
            self.failure = _first_line(exc)
            warnings.warn(f"torch.compile of the image encoder failed ({self.failure}); encoding eagerly. "
                          f"Unset {COMPILE_ENV} to skip compiling.", RuntimeWarning, stacklevel=2)
            return self.eager(x)
        self._compiled_once = True
        return out[:n]


def _first_line(exc: BaseException) -> str:
    """``Type: message`` of the root cause (the compiler's wrappers say little), first line only."""
    inner = getattr(exc, "inner_exception", None) or exc.__cause__  # BackendCompilerFailed keeps it apart
    while inner is not None:
        exc, inner = inner, getattr(inner, "inner_exception", None) or inner.__cause__
    return f"{type(exc).__name__}: {next(iter(str(exc).splitlines()), '')}"
