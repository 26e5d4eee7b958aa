"""Seconds per image of the render stage on SDXL at 1024x1024, one four-image set, random weights.

The pipeline has the full SDXL-base architecture (UNet 2.6B parameters, both text encoders, the
VAE with its fp32 upcast for decoding), built from configs with random weights: speed does not
depend on weight values. The images go through the real stage code
(:func:`pigbench.build.render.render_jobs`: per-image CPU generators, PNG writing, records). The
baseline renders the set one image per pipeline call (batch 1); the stage's default renders the
set in one call (batch 4); both are measured in the same run after a warm-up call.

    python benchmarks/sdxl_render.py [--steps 30] [--size 1024] [--batch-sizes 1,4] [--device cuda]
    python benchmarks/sdxl_render.py --model tiny --device cpu --size 64 --steps 2   # smoke test
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _device import require_device
from pigbench.build.random_sdxl import build_random_sdxl
from pigbench.build.render import RenderJob, RenderSettings, image_seed, render_jobs
from pigbench.build.workspace import Workspace

VARIANTS = ["A red fire hydrant on a lush lawn, morning light, photograph",
            "A red hydrant on the grass, oil painting in the style of the impressionists",
            "A red hydrant on snowy grass at night under a street lamp, cinematic 3D render",
            "A cartoon red hydrant on a bright green meadow with flowers, anime style"]


def timed_set(pipe, settings: RenderSettings, batch_size: int, root: Path) -> float:
    """Seconds to render the four variants into a fresh workspace under ``root``."""
    import torch

    ws = Workspace.at(root)
    set_id = "outdoor-scenes-bench"
    jobs = [RenderJob(set_id, i, prompt, image_seed(0, set_id, i)) for i, prompt in enumerate(VARIANTS)]
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    start = time.perf_counter()
    records = list(render_jobs(pipe, jobs, settings, ws, batch_size))
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    assert len(records) == 4 and all((ws.root / r["path"]).is_file() for r in records)
    return time.perf_counter() - start


def main() -> None:
    from _args import positive_int, positive_ints
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["full", "tiny"], default="full")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--steps", type=positive_int, default=30)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--size", type=positive_int, default=1024)
    parser.add_argument("--batch-sizes", type=positive_ints, default="1,4", help="the first is the baseline")
    a = parser.parse_args()
    import torch

    require_device(a.device)
    dtype = getattr(torch, a.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        pipe = build_random_sdxl(a.model, Path(tmp) / "tokenizer", device=a.device, dtype=dtype)
        pipe.set_progress_bar_config(disable=True)
        built = time.perf_counter() - began
        unet_params = sum(p.numel() for p in pipe.unet.parameters())
        settings = RenderSettings(model=f"random-sdxl-{a.model}", steps=a.steps, guidance=a.guidance,
                                  width=a.size, height=a.size, dtype=a.dtype)
        warmup = RenderSettings(**{**settings.__dict__, "steps": 2})
        timed_set(pipe, warmup, 4, Path(tmp) / "warmup")
        if a.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        on_gpu = a.device.startswith("cuda")
        results = {}
        for b in a.batch_sizes:
            seconds = timed_set(pipe, settings, b, Path(tmp) / f"batch{b}")
            results[b] = seconds / 4
            print(f"batch {b}: {seconds:.2f} s for the set, {seconds / 4:.3f} s per image", flush=True)
        base = list(results)[0]
        summary = {
            "device": torch.cuda.get_device_name() if on_gpu else a.device,
            "model": a.model, "unet_parameters": unet_params, "size": a.size, "steps": a.steps,
            "guidance": a.guidance, "dtype": a.dtype, "build_seconds": round(built, 1),
            "seconds_per_image": {b: round(s, 3) for b, s in results.items()},
            "speedup_vs_batch_%d" % base: {b: round(results[base] / s, 2) for b, s in results.items()},
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if on_gpu else None,
            "torch": torch.__version__,
        }
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
