"""Stage 3, ``pigbench build render``: four SDXL images per set, resumable, provenance per image.

The pipeline is diffusers' ``StableDiffusionXLPipeline`` from a local directory or a hub id
(``--model``, env ``PIGBENCH_SDXL_MODEL``). Every image has its own seed, derived from the base
seed, the set id and the variant index, and its own CPU ``torch.Generator``, so an image does
not depend on the batch it was rendered in nor on the device. Images are written atomically to
``images/<set_id>/<index>.png`` and then recorded in ``renders.jsonl`` with the model,
scheduler, steps, guidance, size, dtype, seed and sha256; a rerun skips every recorded image whose
file exists with its recorded sha256, and renders again (and reports) one whose file is missing or
differs or whose variant changed. A workspace renders with one set of settings: resuming with other settings is refused.
The device is checked before the pipeline is loaded.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from pigbench.build.workspace import (RENDER_FIELDS, VARIANT_FIELDS, BuildError, Workspace, append_jsonl, file_sha256,
                                      read_jsonl, require_at_least_one, write_atomic)
from pigbench.evaluator import RequirementError
from pigbench.hub import cache_only

MODEL_ENV = "PIGBENCH_SDXL_MODEL"
DEFAULT_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"


@dataclass(frozen=True)
class RenderSettings:
    """What decides an image besides its prompt and seed; recorded with every image."""

    model: str = DEFAULT_MODEL
    scheduler: Optional[str] = None  # a diffusers scheduler class name; None keeps the model's own
    steps: int = 30
    guidance: float = 5.0
    width: int = 1024
    height: int = 1024
    dtype: str = "float16"
    negative_prompt: str = ""
    seed: int = 0  # base seed; each image's seed is derived from it (see image_seed)


@dataclass(frozen=True)
class RenderJob:
    set_id: str
    index: int
    prompt: str
    seed: int
    redo: bool = False  # recorded before, but its file is missing or does not match the recorded sha256

    @property
    def relpath(self) -> str:
        return f"images/{self.set_id}/{self.index}.png"


def image_seed(base_seed: int, set_id: str, index: int) -> int:
    """A 31-bit seed fixed by (base seed, set id, variant index)."""
    digest = hashlib.sha256(f"{base_seed}:{set_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def pending_jobs(ws: Workspace, settings: RenderSettings) -> list[RenderJob]:
    """Every image of every expanded set not yet recorded with an intact file (on disk, with the recorded sha256)
    rendered from its current variant (a set expanded again is rendered again)."""
    variants = read_jsonl(ws.require(ws.variants, "expand"), VARIANT_FIELDS)
    records = read_jsonl(ws.renders, RENDER_FIELDS)
    wanted = _recorded_settings(settings)
    for r in records:
        found = {k: r.get(k) for k in wanted}
        if found != wanted:
            raise BuildError(f"{ws.renders} holds images rendered with {found}, not {wanted}; "
                             "render into another --workdir, or pass the same settings to resume")
        if r.get("seed") != image_seed(settings.seed, r["set_id"], r["index"]):
            raise BuildError(f"{ws.renders}: {r['path']} was rendered with another base --seed than "
                             f"{settings.seed}; render into another --workdir, or pass the same --seed to resume")
    latest = {(r["set_id"], r["index"]): r for r in records}
    current = {(v["set_id"], i): prompt for v in variants for i, prompt in enumerate(v["variants"])}
    done = {key for key, r in latest.items()
            if _intact(ws.root / r["path"], r.get("sha256")) and r.get("prompt") == current.get(key)}
    return [RenderJob(v["set_id"], i, prompt, image_seed(settings.seed, v["set_id"], i),
                      redo=(v["set_id"], i) in latest)
            for v in variants for i, prompt in enumerate(v["variants"]) if (v["set_id"], i) not in done]


def _intact(path: Path, sha256: Optional[str]) -> bool:
    return path.is_file() and file_sha256(path) == sha256


def _recorded_settings(settings: RenderSettings) -> dict[str, Any]:
    d = asdict(settings)
    d.pop("seed")  # the per-image seed is recorded instead
    return d


def load_pipeline(settings: RenderSettings, device: str, variant: Optional[str] = None):
    """``StableDiffusionXLPipeline`` from a local directory or hub id, on ``device``, scheduler swapped if asked."""
    try:
        import diffusers
        import torch
    except ImportError as exc:
        raise RequirementError("render needs torch and diffusers: pip install -e '.[models,build]'") from exc
    local = Path(settings.model).is_dir()
    try:
        pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(
            settings.model, torch_dtype=getattr(torch, settings.dtype), variant=variant,
            local_files_only=local or cache_only(settings.model))
    except (OSError, ValueError) as exc:
        raise RequirementError(
            f"cannot load the SDXL pipeline {settings.model!r}: {exc}. Pass --model (or set {MODEL_ENV}) to a "
            f"local diffusers directory, e.g. a download of {DEFAULT_MODEL} made with "
            f"`hf download {DEFAULT_MODEL}`, or to a hub id reachable from this machine") from exc
    return prepare_pipeline(pipe, settings, device)


def scheduler_class(name: str):
    """The diffusers scheduler class called ``name``, or :class:`BuildError`."""
    import diffusers

    cls = getattr(diffusers, name, None) if re.fullmatch(r"[A-Za-z0-9]+Scheduler", name) else None
    if cls is None or not hasattr(cls, "from_config"):
        raise BuildError(f"--scheduler {name!r} is not a diffusers scheduler class "
                         "(e.g. EulerDiscreteScheduler, DPMSolverMultistepScheduler)")
    return cls


def prepare_pipeline(pipe, settings: RenderSettings, device: str):
    """Swap in ``settings.scheduler`` (if any), move to ``device``, silence the progress bar."""
    if settings.scheduler:
        pipe.scheduler = scheduler_class(settings.scheduler).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def render_jobs(pipe, jobs: Sequence[RenderJob], settings: RenderSettings, ws: Workspace,
                batch_size: int = 4) -> Iterable[dict[str, Any]]:
    """Render ``jobs`` in batches, writing each image and its record as soon as its batch ends."""
    import torch

    scheduler = type(pipe.scheduler).__name__
    for start in range(0, len(jobs), batch_size):
        batch = jobs[start:start + batch_size]
        began = time.perf_counter()
        with torch.inference_mode():
            images = pipe(
                prompt=[j.prompt for j in batch],
                negative_prompt=[settings.negative_prompt] * len(batch) if settings.negative_prompt else None,
                num_inference_steps=settings.steps, guidance_scale=settings.guidance,
                width=settings.width, height=settings.height, output_type="pil",
                generator=[torch.Generator("cpu").manual_seed(j.seed) for j in batch],
            ).images
        seconds = (time.perf_counter() - began) / len(batch)
        for job, image in zip(batch, images):
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            write_atomic(ws.root / job.relpath, buf.getvalue())
            record = {**_recorded_settings(settings), "set_id": job.set_id, "index": job.index,
                      "prompt": job.prompt, "path": job.relpath, "seed": job.seed, "generator": "torch.Generator(cpu)",
                      "scheduler_class": scheduler, "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
                      "batch_size": len(batch), "device": str(pipe.device), "seconds_per_image": round(seconds, 3),
                      "diffusers_version": _version("diffusers"), "torch_version": torch.__version__}
            append_jsonl(ws.renders, record)
            yield record


def _version(package: str) -> Optional[str]:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=os.environ.get(MODEL_ENV, DEFAULT_MODEL),
                   help=f"diffusers SDXL directory or hub id (env {MODEL_ENV}; default {DEFAULT_MODEL})")
    p.add_argument("--variant", help="weight file variant to load, e.g. fp16")
    p.add_argument("--scheduler",
                   help="diffusers scheduler class, e.g. DPMSolverMultistepScheduler (default: the model's)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--seed", type=int, default=0, help="base seed; each image's seed derives from it")
    p.add_argument("--device", default="cuda", help="cuda, cuda:1, cpu, ...")
    p.add_argument("--dtype", choices=["auto", "float16", "bfloat16", "float32"], default="auto",
                   help="auto: float16 on GPU, float32 on CPU")
    p.add_argument("--batch-size", type=int, default=4, help="images per pipeline call")
    p.add_argument("--limit", type=int, help="render at most N pending images")


def main(args: argparse.Namespace) -> int:
    from pigbench.runner import check_device  # not at the top: every `pigbench build` stage imports this module

    require_at_least_one(("--steps", args.steps), ("--width", args.width), ("--height", args.height),
                         ("--batch-size", args.batch_size), ("--limit", args.limit))  # before the pipeline loads
    dtype = args.dtype if args.dtype != "auto" else ("float32" if args.device == "cpu" else "float16")
    settings = RenderSettings(model=args.model, scheduler=args.scheduler, steps=args.steps, guidance=args.guidance,
                              width=args.width, height=args.height, dtype=dtype,
                              negative_prompt=args.negative_prompt, seed=args.seed)
    if settings.scheduler:
        scheduler_class(settings.scheduler)  # a wrong name fails before any work
    check_device(args.device)  # an absent GPU fails before the pipeline loads
    ws = Workspace.at(args.workdir)
    jobs = pending_jobs(ws, settings)[:args.limit]
    if not jobs:
        print(f"nothing to render: every image of {ws.variants} is in {ws.renders}")
        return 0
    redo = [j.relpath for j in jobs if j.redo]
    if redo:
        print(f"rendering {len(redo)} recorded image(s) again: the file is missing or does not match the sha256 "
              f"recorded in {ws.renders}, or its variant in {ws.variants} changed: " + ", ".join(redo),
              file=sys.stderr)
    pipe = load_pipeline(settings, args.device, args.variant)
    for n, record in enumerate(render_jobs(pipe, jobs, settings, ws, args.batch_size), start=1):
        print(f"[{n}/{len(jobs)}] {record['path']} seed {record['seed']} ({record['seconds_per_image']} s/image)")
    return 0
