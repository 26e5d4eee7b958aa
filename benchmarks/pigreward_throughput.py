"""Throughput of PIGReward's reward-model step: ``transformers.generate`` at batch 1 against
:mod:`pigbench.fastgen`, measured in the same run, plus the reasoner step and peak GPU memory.

The model has Qwen2-VL-7B-Instruct's shape with random bf16 weights (speed does not depend on the
weights; :mod:`pigbench.judging.random_models`). A reward-model sample is the shape of the issue:
two target images of 36 x 36 patches (324 visual tokens each), about 1,500 text tokens (prompt
2,152 tokens) and exactly ``--new-tokens`` generated tokens (EOS suppressed until then). Of the
text, ``--shared-tokens`` (instructions and user context) are the same for a user's
``--targets-per-user`` targets; the optimized path is timed with that prefix shared and with every
target from a different user (nothing shared). A reasoner sample is one reference pair: two
images and ``--reasoner-text-tokens`` of text, ``--reasoner-new-tokens`` generated.

Timed: the engine from token ids and pixel patches to generated ids (vision tower, prefill,
decode). Reported separately: the CPU/GPU input preparation of the real backend (chat template,
tokenizing, image processing of 504 x 504 images) per target. Also checks that greedy outputs at
batch 1 and batch 64 agree on a small random Qwen2-VL (float32 and bfloat16) and compares the 7B
engine's tokens with ``generate``'s.

    python benchmarks/pigreward_throughput.py                      # GPU: the measurement
    python benchmarks/pigreward_throughput.py --shape tiny --device cpu --targets 8 --naive-samples 1 \\
        --new-tokens 8 --reasoner-pairs 4 --batch-sizes 4 --check-prompts 4   # smoke test

``--vision-compare`` instead times only the vision tower: transformers' against
:class:`pigbench.fastgen.vision.VisionEncoder` on ``--vision-images`` target images (a few seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from typing import Any

import numpy as np
import torch
from PIL import Image

from _device import require_device
from pigbench.fastgen.engine import PATCH_BUDGET, Qwen2VLEngine
from pigbench.fastgen.inputs import GenerationSettings, ImageInput, Prompt
from pigbench.judging import random_models

SMALL = {  # a small random Qwen2-VL for the batch-1 vs batch-64 agreement check on the device
    "text": dict(vocab_size=0, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=2, rope_parameters={"rope_type": "default", "mrope_section": [4, 6, 6],
                                                         "rope_theta": 10000.0}),
    "vision": dict(depth=2, embed_dim=64, hidden_size=256, num_heads=4, mlp_ratio=2),
}


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, *args) -> tuple[float, Any]:
    sync()
    start = time.perf_counter()
    out = fn(*args)
    sync()
    return time.perf_counter() - start, out


class Workload:
    """Token ids and pixel patches of the benchmark's prompts (deterministic)."""

    def __init__(self, model: Any, processor: Any, side: int, device: str) -> None:
        tok = processor.tokenizer
        self.specials = {t: tok.convert_tokens_to_ids(t) for t in random_models.QWEN_SPECIALS}
        self.vocab = [i for i in range(len(tok)) if i not in self.specials.values()]
        self.image_token = model.config.image_token_id
        self.side, self.device = side, device
        self.pixel_dim = 3 * 2 * 14 * 14
        self.dtype = next(model.parameters()).dtype

    def text(self, seed: int, n: int) -> list[int]:
        return np.random.default_rng(seed).choice(self.vocab, n).tolist()

    def image(self, key: str, seed: int) -> tuple[list[int], ImageInput]:
        g = torch.Generator().manual_seed(seed)
        pixels = torch.randn(self.side * self.side, self.pixel_dim, generator=g).to(self.device, self.dtype)
        tokens = [self.specials["<|vision_start|>"]] + [self.image_token] * (self.side // 2) ** 2 + [
            self.specials["<|vision_end|>"]]
        return tokens, ImageInput(key, pixels, (1, self.side, self.side))

    def prompt(self, user: int, target: int, shared: int, text_tokens: int, share: bool, images: int = 2) -> Prompt:
        """``shared`` text tokens of the user's, then per target: text, the images, closing text."""
        ids = [self.specials["<|im_start|>"]] + self.text(1_000_003 * user, shared - 1)
        own = text_tokens - shared - 6
        ids += self.text(7 * target + 1, own // 2)
        inputs = []
        for k in range(images):
            tokens, image = self.image(f"u{user}t{target}i{k}", 1000 * target + k)
            ids += tokens
            inputs.append(image)
        ids += self.text(7 * target + 2, own - own // 2) + [self.specials["<|im_end|>"], self.specials["<|im_start|>"]]
        ids += self.text(3, 4)
        return Prompt(tuple(ids), tuple(inputs), user if share else None)

    def hf_inputs(self, prompt: Prompt) -> dict[str, Any]:
        ids = torch.tensor([prompt.token_ids], device=self.device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "mm_token_type_ids": (ids == self.image_token).int(),
                "pixel_values": torch.cat([im.pixel_values for im in prompt.images]),
                "image_grid_thw": torch.tensor([im.grid_thw for im in prompt.images], device=self.device)}


def naive(model: Any, work: Workload, prompts: list[Prompt], new_tokens: int,
          repetition_penalty: float = 1.0) -> tuple[list[float], list[list[int]]]:
    """Seconds and tokens of ``generate`` at batch 1 for each prompt but the last, which is an
    untimed full-length warm-up (the first long generation also pays for growing the allocator's
    cache: 3.7x slower in a measured run)."""
    fixed = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, repetition_penalty=repetition_penalty)
    model.generate(**work.hf_inputs(prompts[-1]), **fixed)
    times, outputs = [], []
    with torch.inference_mode():
        for p in prompts[:-1]:
            inputs = work.hf_inputs(p)
            dt, out = timed(lambda: model.generate(**inputs, **fixed))
            times.append(dt)
            outputs.append(out[0, inputs["input_ids"].shape[1]:].tolist())
    return times, outputs


def optimized(engine: Qwen2VLEngine, prompts: list[Prompt], settings: GenerationSettings) -> dict[str, Any]:
    """Warm up kernels on two short generations, then time the whole list (its CUDA graph captures
    included, ``engine.capture_s``); per-phase seconds from the engine."""
    engine.generate(prompts[:2], dataclasses.replace(settings, max_new_tokens=2, min_new_tokens=2))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    engine.stats.clear()
    dt, out = timed(engine.generate, prompts, settings)
    stats = {k: round(v, 3) if isinstance(v, float) else v for k, v in engine.stats.items()}
    assert all(len(o) == settings.max_new_tokens for o in out), "the generation length was not fixed"
    return {"s_total": round(dt, 3), "s_per_sample": round(dt / len(prompts), 4), "samples": len(prompts),
            "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
            "engine": stats, "tokens": out}


def vision_compare(engine: Qwen2VLEngine, work: Workload, images: int) -> dict[str, Any]:
    """Seconds per image of transformers' vision tower and of the engine's :class:`VisionEncoder` on
    ``images`` target images, in the engine's patch-budget chunks, each timed after a warm-up chunk;
    and the largest difference between their merged features."""
    pictures = [work.image(f"v{i}", 5_000 + i)[1] for i in range(images)]
    per_chunk = max(1, PATCH_BUDGET // pictures[0].pixel_values.shape[0])
    chunks = [(torch.cat([im.pixel_values for im in pictures[i : i + per_chunk]]),
               torch.tensor([im.grid_thw for im in pictures[i : i + per_chunk]], device=work.device))
              for i in range(0, images, per_chunk)]
    tower = engine.vision.visual

    def transformers_tower(batches):
        return [getattr(out, "pooler_output", out) for out in (tower(px, grid_thw=grid) for px, grid in batches)]

    def fastgen_tower(batches):
        return [engine.vision(px, grid) for px, grid in batches]

    with torch.inference_mode():
        transformers_tower(chunks[:1])
        fastgen_tower(chunks[:1])
        t_ref, ref = timed(transformers_tower, chunks)
        t_fast, ours = timed(fastgen_tower, chunks)
    return {"images": images, "patches_per_image": pictures[0].pixel_values.shape[0], "chunks": len(chunks),
            "transformers_s_per_image": round(t_ref / images, 6), "fastgen_s_per_image": round(t_fast / images, 6),
            "speedup": round(t_ref / t_fast, 2),
            "max_abs_diff": max((a.float() - b.float()).abs().max().item() for a, b in zip(ref, ours)),
            "max_abs_reference": max(a.float().abs().max().item() for a in ref)}


def agreement(device: str, dtype: torch.dtype, n: int, new_tokens: int) -> dict[str, Any]:
    """Greedy outputs of a small random Qwen2-VL: engine at batch 1 vs batch 64 vs ``generate``."""
    torch.backends.cuda.matmul.allow_tf32 = False
    model, processor = random_models.qwen2_vl(SMALL, device=device, dtype=dtype, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.1)
    model.generation_config.eos_token_id = None
    work = Workload(model, processor, side=8, device=device)
    prompts = [work.prompt(u % 8, u, 48, 160, share=True) for u in range(n)]
    settings = GenerationSettings(new_tokens, new_tokens, (), batch_size=1)
    one = Qwen2VLEngine(model).generate(prompts, settings)
    many = Qwen2VLEngine(model).generate(prompts, GenerationSettings(new_tokens, new_tokens, (), batch_size=64))
    with torch.inference_mode():
        hf = [model.generate(**work.hf_inputs(p), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False)[0, -new_tokens:].tolist() for p in prompts[:4]]
    return {"dtype": str(dtype).removeprefix("torch."), "prompts": n, "new_tokens": new_tokens,
            "batch1_vs_batch64_identical": sum(a == b for a, b in zip(one, many)),
            "engine_vs_generate_identical": f"{sum(a == b for a, b in zip(one, hf))}/{len(hf)}"}


def preprocessing(processor: Any, model: Any, targets: int) -> float:
    """Seconds per target of the real backend's input preparation for PIGReward prompts (two
    504 x 504 JPEG-like images, the full instructions and a ~1,000-token context)."""
    from pigbench.fastgen.backend import FastLocalBackend
    from pigbench.judging.messages import ImagePolicy
    from pigbench.pigreward.output_format import FormatRules
    from pigbench.pigreward.prompts import reward_prompt
    from pigbench.protocol import Episode, ImageRef, Label, Target

    rng = np.random.default_rng(0)

    def picture(i: int) -> ImageRef:
        arr = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
        return ImageRef(f"img{i}", lambda: Image.fromarray(arr), known_hash=f"h{i}")

    backend = FastLocalBackend(model, processor)
    context = "\n".join(f'{k}. Prompt: "a red fox in the snow". The user prefers warm light and soft focus.' * 4
                        for k in range(8))
    prompts = [reward_prompt(Episode(f"u{i}", (), Target(f"t{i}", "a cat on a sofa", picture(2 * i), picture(2 * i + 1),
                                                              Label.INVALID)), FormatRules(), True, context)
               for i in range(targets)]
    policy = ImagePolicy(max_pixels=324 * 28 * 28)
    backend.engine_prompts(prompts[:2], policy, [None, None])  # warm-up
    dt, out = timed(backend.engine_prompts, prompts, policy, [None] * targets)
    assert out[0].images[0].grid_thw == (1, 36, 36), out[0].images[0].grid_thw
    return dt / targets


def main() -> None:
    from _args import non_negative_int, positive_int, positive_ints
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["7b", "tiny"], default="7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--targets", type=positive_int, default=256)
    ap.add_argument("--targets-per-user", type=positive_int, default=8)
    ap.add_argument("--naive-samples", type=non_negative_int, default=3)
    ap.add_argument("--new-tokens", type=positive_int, default=256)
    ap.add_argument("--text-tokens", type=positive_int, default=1500)
    ap.add_argument("--shared-tokens", type=non_negative_int, default=1400)
    ap.add_argument("--image-side", type=positive_int, default=36, help="patches per image side (36: 324 visual tokens)")
    ap.add_argument("--batch-sizes", type=positive_ints, default="128,256")
    ap.add_argument("--reasoner-pairs", type=non_negative_int, default=256)
    ap.add_argument("--reasoner-text-tokens", type=positive_int, default=150)
    ap.add_argument("--reasoner-new-tokens", type=positive_int, default=256)
    ap.add_argument("--check-prompts", type=non_negative_int, default=64)
    ap.add_argument("--json", default="", help="also write all results to this file")
    ap.add_argument("--vision-compare", action="store_true",
                    help="only time transformers' vision tower against fastgen's, then exit")
    ap.add_argument("--vision-images", type=positive_int, default=256, help="images timed by --vision-compare")
    ap.add_argument("--repetition-penalty", type=float, default=1.0,
                    help="applied by generate and the engine alike (Qwen2-VL-7B-Instruct's generation config: 1.05; 1.0: none)")
    a = ap.parse_args()
    if not a.repetition_penalty > 0:
        ap.error(f"--repetition-penalty must be > 0, got {a.repetition_penalty}")

    cuda = a.device.startswith("cuda")
    require_device(a.device)
    shape = random_models.QWEN2_VL_7B if a.shape == "7b" else random_models.QWEN2_VL_TINY
    t_build, (model, processor) = timed(lambda: random_models.qwen2_vl(
        shape, device=a.device, dtype=torch.bfloat16 if cuda else torch.float32, vocab_size=4096))
    work = Workload(model, processor, a.image_side, a.device)
    engine = Qwen2VLEngine(model)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__, "transformers": __import__("transformers").__version__,
        "parameters_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3), "build_s": round(t_build, 1),
        "repetition_penalty": a.repetition_penalty}
    if a.vision_compare:
        report["vision"] = vision_compare(engine, work, a.vision_images)
        print(json.dumps(report), flush=True)
        save(report, a.json)
        return
    shared = [work.prompt(t // a.targets_per_user, t, a.shared_tokens, a.text_tokens, True) for t in range(a.targets)]
    alone = [work.prompt(10_000 + t, t, a.shared_tokens, a.text_tokens, False) for t in range(a.targets)]
    report["prompt_tokens"] = len(shared[0].token_ids)
    print(json.dumps(report), flush=True)

    times, naive_tokens = naive(model, work, alone[: a.naive_samples + 1], a.new_tokens, a.repetition_penalty)
    base = sum(times) / len(times)
    report["naive_batch1"] = {"s_per_sample": round(base, 3), "samples": len(times), "each_s": [round(t, 2) for t in times]}
    print(json.dumps(report["naive_batch1"]), flush=True)

    fixed = dict(max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, eos_token_ids=(work.specials["<|im_end|>"],),
                 repetition_penalty=a.repetition_penalty)
    rows = []
    for bs in a.batch_sizes:
        for name, prompts in (("shared_prefix", shared), ("no_sharing", alone)):
            try:
                row = optimized(engine, prompts, GenerationSettings(batch_size=bs, **fixed))
            except Exception as exc:  # keep the other measurements; say what failed
                rows.append({"variant": name, "batch_size": bs, "error": f"{type(exc).__name__}: {exc}"})
                print(json.dumps(rows[-1]), flush=True)
                continue
            tokens = row.pop("tokens")
            if name == "no_sharing":  # the naive samples are the first prompts: compare their tokens
                row["leading_tokens_equal_to_generate"] = [_common(x, y) for x, y in zip(tokens, naive_tokens)]
            row.update(variant=name, batch_size=bs, speedup_vs_naive=round(base / row["s_per_sample"], 1))
            rows.append(row)
            print(json.dumps(row), flush=True)
    report["optimized"] = rows
    save(report, a.json)

    pairs = [work.prompt(20_000 + i, i, 1, a.reasoner_text_tokens, False) for i in range(a.reasoner_pairs)]
    try:
        reasoner = optimized(engine, pairs, GenerationSettings(
            max_new_tokens=a.reasoner_new_tokens, min_new_tokens=a.reasoner_new_tokens,
            eos_token_ids=fixed["eos_token_ids"], repetition_penalty=a.repetition_penalty, batch_size=max(a.batch_sizes)))
        reasoner.pop("tokens")
        report["reasoner_per_pair"] = {**reasoner, "prompt_tokens": len(pairs[0].token_ids)}
    except Exception as exc:
        report["reasoner_per_pair"] = {"error": f"{type(exc).__name__}: {exc}", "s_per_sample": float("nan")}
    print(json.dumps({"reasoner": report["reasoner_per_pair"]}), flush=True)

    save(report, a.json)
    try:
        report["input_preparation_s_per_target"] = round(preprocessing(processor, model, 32), 4)
    except Exception as exc:
        report["input_preparation_s_per_target"] = f"failed: {type(exc).__name__}: {exc}"
    del model, engine
    if cuda:
        torch.cuda.empty_cache()
    report["agreement"] = [agreement(a.device, dt, a.check_prompts, 32) for dt in (torch.float32, torch.bfloat16)]
    print(json.dumps({"input_preparation_s_per_target": report["input_preparation_s_per_target"],
                      "agreement": report["agreement"]}), flush=True)
    save(report, a.json)
    print(f"\nSUMMARY {report['device']}: generate batch 1 {base:.2f} s/sample ({len(times)} samples)")
    for r in rows:
        print(f"  fastgen {r['variant']:13s} batch {r['batch_size']:3d}: " + (
            f"{r['s_per_sample']:.4f} s/sample, {r['speedup_vs_naive']}x, peak GPU {r['peak_gpu_gib']} GiB"
            if "error" not in r else r["error"]))
    print(f"  reasoner: {report['reasoner_per_pair']['s_per_sample']:.4f} s/pair; input preparation "
          f"{report['input_preparation_s_per_target']} s/target")


def save(report: dict[str, Any], path: str) -> None:
    """Write what is measured so far (a run cut short still leaves its numbers)."""
    if path:
        with open(path, "w") as f:
            json.dump(report, f, indent=2)


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


if __name__ == "__main__":
    main()
