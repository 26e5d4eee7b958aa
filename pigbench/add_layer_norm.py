"""A residual addition fused with the layer norm that follows it: one pass over memory instead of two.

``add_layer_norm(h, x, weight, bias, eps)`` does ``h += x`` in place and returns
``layer_norm(h)``, as a pre-norm transformer block does between its branches. On CUDA, with
Triton available, both happen in one kernel that reads ``h`` and ``x`` once and writes the sum and
the normalized rows; elsewhere it runs the two torch operations. Either way the sum is rounded to
``h``'s dtype before it is normalized, as the unfused ``h + x`` followed by ``F.layer_norm``
does, and the statistics are computed in float32.

Set ``TRITON_INTERPRET=1`` before Triton is imported to run the kernel on the CPU (tests do, in
float32 and float16: the interpreter truncates to bfloat16 where the GPU rounds).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F

from pigbench.triton_kernel import TritonKernel


def add_layer_norm(h: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """``h += x``, then the layer norm of ``h`` over its last axis. ``h`` and ``x``: contiguous, same shape and dtype.

    If the Triton kernel cannot be compiled or launched here, a warning says so once and the torch
    operations run from then on."""
    if KERNEL.usable(h):
        _check_inputs(h, x)
        y = KERNEL(h, x, weight, bias, eps)
        if y is not None:
            return y
    h.add_(x)
    return F.layer_norm(h, h.shape[-1:], weight, bias, eps)


def _check_inputs(h: torch.Tensor, x: torch.Tensor) -> None:
    if not (h.is_contiguous() and x.is_contiguous()) or h.shape != x.shape or h.dtype != x.dtype:
        raise ValueError(f"add_layer_norm needs contiguous h and x of one shape and dtype, got "
                         f"{tuple(h.shape)} {h.dtype} and {tuple(x.shape)} {x.dtype}")


def _build() -> Callable[..., torch.Tensor]:
    """The Triton implementation (raises ImportError without Triton)."""
    import triton
    import triton.language as tl

    @triton.jit
    def add_norm_rows(h_ptr, x_ptr, w_ptr, b_ptr, y_ptr, n_cols, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        offsets = row * n_cols + cols
        h = tl.load(h_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        s = (h + x).to(h_ptr.dtype.element_ty)  # rounded as the unfused addition is
        tl.store(h_ptr + offsets, s, mask=mask)
        s = s.to(tl.float32)
        mean = tl.sum(s, axis=0) / n_cols
        centered = tl.where(mask, s - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=0) / n_cols + eps)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + offsets, (centered * rstd * w + b).to(y_ptr.dtype.element_ty), mask=mask)

    def run(h: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        n_cols = h.shape[-1]
        y = torch.empty_like(h)
        block = triton.next_power_of_2(n_cols)
        # Triton launches on the current device's current stream: make that h's device (cuda:1 ...)
        with torch.cuda.device(h.device) if h.is_cuda else contextlib.nullcontext():
            add_norm_rows[(h.numel() // n_cols,)](h, x, weight, bias, y, n_cols, eps, BLOCK=block,
                                                  num_warps=min(16, max(1, block // 256)))
        return y

    return run


KERNEL = TritonKernel("fused add + layer norm", _build, instead="torch's operations")
