"""Pillow's bicubic resize of 8-bit images, reproduced bit-exactly with tensor operations.

Moving the resize of decoded images from CPU workers to the GPU halves the CPU work per image
without changing a single output pixel, so scores stay those of the published PIL recipes.

Pillow (``libImaging/Resample.c``) resizes in two separable passes, horizontal then vertical
(Pillow 13 runs the vertical pass first when the height shrinks by more than twice as many
pixels as the width; the order changes the result, so it is followed here). Each output sample is a weighted sum of input samples with bicubic (a = -0.5) weights stretched by
the downscale factor, normalized to sum 1, then turned into fixed-point integers with 22
fractional bits (rounded half away from zero); the sum starts at 2**21 (rounding), is shifted
right by 22 bits and clipped to [0, 255] after *each* pass.

On CUDA each pass is a Triton kernel that computes those sums in 32-bit integers, as Pillow does
(:func:`_triton_pass`): it reads the 8-bit samples once, in any memory layout (the HWC batches the
decode workers hand over need no copy to CHW), and writes 8-bit samples. Elsewhere, or if the kernel
cannot be built, each pass is a float64 matrix product with a dense weight matrix: every partial
sum is an integer below 2**53, so the result is exact whatever the summation order. The two agree
bit for bit with each other and with Pillow (tests run the kernel in Triton's interpreter).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Optional

import PIL
import torch

from pigbench.triton_kernel import TritonKernel

PRECISION_BITS = 22
_PILLOW_MAJOR = int(PIL.__version__.split(".")[0])


def _bicubic(x: float) -> float:
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


@functools.lru_cache(maxsize=64)
def bicubic_weights(in_size: int, out_size: int, start: int = 0, count: int = -1) -> torch.Tensor:
    """The fixed-point weights Pillow uses for one axis, as float64 integers: (count, in_size), the
    rows of outputs ``start`` to ``start + count`` (``count`` -1: all ``out_size`` outputs). Each
    output's weights depend on its own index only, so a window's rows are those of the full table."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ss = 1.0 / filterscale
    count = out_size - start if count < 0 else count
    weights = torch.zeros(count, in_size, dtype=torch.float64)
    for row, xx in enumerate(range(start, start + count)):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        taps = min(int(center + support + 0.5), in_size) - xmin
        raw = [_bicubic((x + xmin - center + 0.5) * ss) for x in range(taps)]
        total = 0.0
        for w in raw:
            total += w
        for x, w in enumerate(raw):
            w = w / total if total != 0.0 else w
            weights[row, xmin + x] = int((-0.5 if w < 0 else 0.5) + w * (1 << PRECISION_BITS))
    return weights


@functools.lru_cache(maxsize=64)
def _weights_on(in_size: int, out_size: int, start: int, count: int, device: torch.device) -> torch.Tensor:
    """:func:`bicubic_weights` transposed, kept on ``device``: copied there once, not once per call
    (a copy from the CPU would make the host wait for all work queued on the device)."""
    return bicubic_weights(in_size, out_size, start, count).T.contiguous().to(device)


@functools.lru_cache(maxsize=64)
def _taps_on(in_size: int, out_size: int, start: int, count: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`bicubic_weights` as taps, kept on ``device``: the first input index of each output
    (count,) and the int32 weights from there (count, taps), ``taps`` the widest window. A
    window that would pass the input's end starts earlier, with zero weights in front."""
    weights = bicubic_weights(in_size, out_size, start, count)
    nonzero = weights != 0
    first = nonzero.int().argmax(1)
    last = in_size - 1 - nonzero.flip(1).int().argmax(1)
    taps = int((last - first).max()) + 1
    first = first.clamp(max=in_size - taps)
    table = weights.gather(1, first[:, None] + torch.arange(taps)).to(torch.int32)
    return first.to(torch.int32).to(device), table.contiguous().to(device), taps


def _pass(x: torch.Tensor, out_size: int, start: int, count: int) -> torch.Tensor:
    """One axis (the last of ``x``), outputs ``start`` to ``start + count``: fixed-point sum, shift,
    clip to 8 bits (kept as float64)."""
    acc = x @ _weights_on(x.shape[-1], out_size, start, count, x.device) + (1 << (PRECISION_BITS - 1))
    return torch.floor(acc / (1 << PRECISION_BITS)).clamp_(0, 255)


def resize_bicubic_uint8(x: torch.Tensor, height: int, width: int,
                         window: Optional[tuple[int, int, int, int]] = None) -> torch.Tensor:
    """``Image.resize((width, height), Image.BICUBIC)`` of uint8 images (..., H, W), on x's device.

    ``window`` (top, left, rows, cols): only that part of the resized image, computed without the
    rest (the resize of a 1 x 4000 image to a short side of 224 is 224 x 896000; its center crop
    is not). ``x`` may have any strides; the result is contiguous."""
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    h, w = x.shape[-2:]
    top, left, rows, cols = window or (0, 0, height, width)
    vertical_first = _PILLOW_MAJOR >= 13 and 0 < h - height and h - height > 2 * (w - width)
    passes = [(-2, height, top, rows), (-1, width, left, cols)]
    passes = passes if vertical_first else passes[::-1]
    same = [p for p in passes if x.shape[p[0]] == p[1]]  # no resampling along this axis: a slice
    passes = [p for p in passes if p not in same]
    for axis, _, start, count in same:
        x = x.narrow(axis, start, count)
    if KERNEL.usable(x) and x.dim() == 4 and x.numel():
        out = x
        for axis, size, start, count in passes:
            out = KERNEL(out, axis, size, start, count)
            if out is None:
                break
        else:
            return out.contiguous()
    out = x.double()
    for axis, size, start, count in passes:
        if axis == -1:
            out = _pass(out, size, start, count)
        else:
            out = _pass(out.transpose(-1, -2), size, start, count).transpose(-1, -2)
    return out.to(torch.uint8).contiguous()


def _build() -> Callable[[torch.Tensor, int, int], torch.Tensor]:
    """The Triton pass (raises ImportError without Triton): uint8 images (N, C, H, W), any strides,
    resampled along ``axis`` (-1 or -2) to ``size``, outputs ``start`` to ``start + count`` along it;
    the result is contiguous."""
    import triton
    import triton.language as tl

    # sizes and outer strides vary with image sizes; specializing on them would compile once per size
    @triton.jit(do_not_specialize=["rows", "cols", "s_n", "s_c", "s_row", "channels"])
    def resample(src, dst, first, weights, rows, cols, s_n, s_c, s_row, s_col, channels,
                 TAPS: tl.constexpr, BITS: tl.constexpr, ALONG_COLS: tl.constexpr, BLOCK: tl.constexpr):
        """dst[n, c, row, :] for one output row (n * channels + c) * rows + row and BLOCK columns:
        the fixed-point sum of TAPS samples of src, shifted and clipped."""
        out_row = tl.program_id(0).to(tl.int64)
        plane, row = out_row // rows, out_row % rows
        col = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = col < cols
        base = (plane // channels) * s_n + (plane % channels) * s_c
        acc = tl.full([BLOCK], 1 << (BITS - 1), tl.int32)
        if ALONG_COLS:  # each output column has its own window of input columns
            start = tl.load(first + col, mask=mask, other=0).to(tl.int64)
            for t in tl.static_range(TAPS):
                w = tl.load(weights + col * TAPS + t, mask=mask, other=0)
                px = tl.load(src + base + row * s_row + (start + t) * s_col, mask=mask, other=0)
                acc += px.to(tl.int32) * w
        else:  # the output row's window of input rows, the same for every column
            start = tl.load(first + row).to(tl.int64)
            for t in tl.static_range(TAPS):
                w = tl.load(weights + row * TAPS + t)
                px = tl.load(src + base + (start + t) * s_row + col * s_col, mask=mask, other=0)
                acc += px.to(tl.int32) * w
        out = tl.minimum(tl.maximum(acc >> BITS, 0), 255)  # an arithmetic shift: floor, as Pillow's clip
        tl.store(dst + out_row * cols + col, out.to(tl.uint8), mask=mask)

    def run(x: torch.Tensor, axis: int, size: int, start: int, count: int) -> torch.Tensor:
        n, c, h, w = x.shape
        along_cols = axis == -1
        rows, cols = (h, count) if along_cols else (count, w)
        first, weights, taps = _taps_on(w if along_cols else h, size, start, count, x.device)
        out = torch.empty(n, c, rows, cols, dtype=torch.uint8, device=x.device)
        block = min(1024, triton.next_power_of_2(cols))
        grid = (n * c * rows, triton.cdiv(cols, block))
        with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():  # Triton launches on the current device
            resample[grid](x, out, first, weights, rows, cols, *x.stride(), c,
                           TAPS=taps, BITS=PRECISION_BITS, ALONG_COLS=along_cols, BLOCK=block, num_warps=max(1, min(8, block // 128)))
        return out

    return run


KERNEL = TritonKernel("bicubic resize", _build, instead="float64 matrix products")
