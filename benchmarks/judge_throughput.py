"""Throughput of ``qwen2-vl-judge`` on the local backend: seconds per episode and peak GPU memory,
batched against batch size 1 in the same run.

The model has Qwen2-VL-7B-Instruct's shape with random bf16 weights (speed does not depend on
weight values) and an offline processor (:mod:`pigbench.judging.random_models`). Each episode has
``--references`` reference pairs and a target pair, all ``--image-size`` square noise images, so
with the judge's default budget (256 visual tokens per image) an episode of 8 references carries
18 images = 4,608 visual tokens. Generation length is fixed (``min_new_tokens = max_new_tokens``).
The timed path is the judge's own ``predict``: prompt building, image loading and processing,
batched generation, parsing.

    python benchmarks/judge_throughput.py                       # GPU, 7B shape, 64 episodes
    python benchmarks/judge_throughput.py --shape tiny --device cpu --episodes 4 --baseline-episodes 2 --batch-sizes 2

Prints one JSON line per variant and batch size, with the speed-up over the first variant at batch
size 1 and the seconds spent building model inputs (``encode``: image decoding and processing,
tokenizing, transfer to the GPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from PIL import Image

from _device import require_device
from pigbench.judging import random_models
from pigbench.judging.local_backend import LocalBackend
from pigbench.judging.messages import reference_prompt
from pigbench.protocol import Episode, ImageRef, Label, ReferencePair, Target
from pigbench.registry import evaluators


def noise(name: str, seed: int, size: int) -> ImageRef:
    """A lazily rendered noise image (rendered on each open, like a file read)."""
    def render() -> Image.Image:
        return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))
    return ImageRef(name, render, known_hash=f"noise-{seed}-{size}")


def episodes(n: int, k: int, size: int) -> list[Episode]:
    prompts = [p for p in random_models._corpus()][:200]
    out = []
    for i in range(n):
        base = i * (2 * k + 2)
        refs = tuple(ReferencePair(prompts[(i + j) % len(prompts)], noise(f"e{i}p{j}", base + 2 * j, size),
                                   noise(f"e{i}r{j}", base + 2 * j + 1, size)) for j in range(k))
        target = Target(f"e{i}", prompts[(i * 7) % len(prompts)], noise(f"e{i}a", base + 2 * k, size),
                        noise(f"e{i}b", base + 2 * k + 1, size), Label.INVALID)
        out.append(Episode(f"user{i}", refs, target))
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_encode(backend: LocalBackend, device: str) -> list[float]:
    """Wrap ``backend.encode`` to add its (synchronised) seconds to the returned one-item list."""
    spent = [0.0]
    encode = backend.encode

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = encode(*args, **kwargs)
        sync(device)
        spent[0] += time.perf_counter() - start
        return out

    backend.encode = wrapper
    return spent


def measure(judge, batch: list[Episode], batch_size: int, device: str) -> dict:
    judge.backend.batch_size = batch_size
    spent = timed_encode(judge.backend, device)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    preds = []
    for i in range(0, len(batch), batch_size):  # as the runner calls predict
        preds += judge.predict(batch[i : i + batch_size])
    sync(device)
    wall = time.perf_counter() - start
    del judge.backend.encode  # back to the class method
    errors = [p.error for p in preds if p.error]
    return {
        "batch_size": batch_size, "episodes": len(batch), "wall_s": round(wall, 3),
        "s_per_episode": round(wall / len(batch), 4), "inputs_s_per_episode": round(spent[0] / len(batch), 4),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
        "failed": len(errors), "first_error": errors[0] if errors else None,
    }


def main() -> None:
    from _args import non_negative_int, positive_int, positive_ints
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=positive_int, default=64)
    ap.add_argument("--baseline-episodes", type=positive_int, default=16, help="episodes timed at batch size 1")
    ap.add_argument("--references", type=non_negative_int, default=8)
    ap.add_argument("--image-size", type=positive_int, default=448)
    ap.add_argument("--batch-sizes", type=positive_ints, default="8,32")
    ap.add_argument("--new-tokens", type=positive_int, default=16)
    ap.add_argument("--shape", choices=["7b", "tiny"], default="7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--variants", default="plain,fast",
                    help="plain: images decoded serially and processed on the CPU; fast: the backend defaults "
                         "(decoding threads, image processing on the GPU)")
    args = ap.parse_args()
    require_device(args.device)

    shape = random_models.QWEN2_VL_7B if args.shape == "7b" else random_models.QWEN2_VL_TINY
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    t0 = time.perf_counter()
    model, processor = random_models.qwen2_vl(shape, device=args.device, dtype=dtype, vocab_size=4096)
    build_s = time.perf_counter() - t0
    cls = evaluators.get("qwen2-vl-judge")
    judge = cls(cls.Config(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens))
    judge.backend = LocalBackend(model, processor, source=f"random Qwen2-VL ({args.shape} shape)")
    data = episodes(args.episodes, args.references, args.image_size)

    enc = judge.backend.encode([reference_prompt(data[0])], judge.generation_params().images)
    image_tokens = int((enc["input_ids"] == processor.image_token_id).sum())
    info = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "parameters_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3), "build_s": round(build_s, 1),
        "prompt_tokens": int(enc["input_ids"].shape[1]), "image_tokens": image_tokens,
        "image_grid_thw_first": enc["image_grid_thw"][0].tolist(), "images_per_episode": 2 * args.references + 2,
        "new_tokens": args.new_tokens, "attn": model.config._attn_implementation,
    }
    print(json.dumps(info), flush=True)

    judge.predict(data[:2])  # warm-up (kernels, allocator)
    fast = (judge.backend.image_workers, judge.backend.preprocess_on_device)
    base = None
    for variant in args.variants.split(","):
        judge.backend.image_workers, judge.backend.preprocess_on_device = fast if variant == "fast" else (0, False)
        runs = [(1, data[: args.baseline_episodes])] + [(b, data) for b in args.batch_sizes]
        for bs, batch in runs:
            row = {"variant": variant, **measure(judge, batch, bs, args.device)}
            base = base or row  # the first variant's batch size 1
            row["speedup_vs_first_bs1"] = round(base["s_per_episode"] / row["s_per_episode"], 2)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
