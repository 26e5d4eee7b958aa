"""Images per second of PickScore-sized scoring, end to end from JPEG files, against a naive per-pair loop.

The model is an HF ``CLIPModel`` with the CLIP-ViT-H-14 architecture (PickScore_v1's: vision 32
layers of width 1280, text 24 layers of width 1024, projection 1024, exact GELU), built from a config with
random weights (speed does not depend on weight values), saved to a local folder with a processor
config and a tokenizer, and loaded through the real ``pickscore`` evaluator. ``--images`` distinct
512x512 JPEGs are written first; pair episodes take prompts from the shipped PartiPrompts subset
(several pairs share a prompt, as in Pick-a-Pic).

* pigbench: the runner's prediction loop (``pigbench.runner.predict_batches``, what ``python -m
  pigbench.run`` calls) over all pairs in batches of ``--batch-size`` episodes, with the evaluator's
  look-ahead (``prepare``: each window of 2,048 episodes has its images embedded in one stream) and
  without (``--windows 0``: each ``predict`` call embeds its own batch): content hashing, JPEG
  decode in DataLoader workers, PIL-exact bicubic resize on the GPU, batched fp16 image and text
  encoding (on CUDA with pigbench's image tower, :mod:`pigbench.clip_tower`; ``--transformers-tower-too``
  times transformers' too), the on-disk embedding cache the runner enables, scoring. With ``--compiled-too`` the
  same is timed again with ``PIGBENCH_COMPILE=1`` (image encoder compiled with torch.compile);
  with ``--bf16-too`` with the evaluator option ``dtype=bfloat16`` (its score check is against
  the fp16 per-pair recipe, so it shows bf16's rounding too).
* naive: PickScore's README ``calc_probs`` one pair at a time with the same model and dtype:
  open both JPEGs, ``AutoProcessor`` for the two images and the prompt, ``get_image_features``,
  ``get_text_features``, exp(logit_scale)*cos, softmax. With ``--naive-fp32-too`` the loop is
  timed again with the model in float32, as the README's ``AutoModel.from_pretrained(...)`` (no
  dtype) loads it with transformers 4 (reported beside, not as, the speedup).
* ``--rankings-too``: both again on PIGBench's target shape (each ranked group of 4 images gives its
  6 pairs, so each image is in 3 pairs and the naive loop encodes it 3 times, pigbench once), as
  pairs per second; reported beside the main figure, whose pairs share no image.

Both are timed in the same run after warm-ups, each inside ``pigbench.runner.frozen_setup_objects``
(a garbage collection, then the live objects frozen out of later ones, as around the runner's
loop), and each reports the garbage collections made while it ran. The script also checks on a
few pairs that the pigbench scores equal a per-pair computation with the PIL processor (the
recipe it implements).
The tokenizer is character-level (no merges), so prompts are longer than with CLIP's BPE.

With ``--profile-tower`` the image tower alone (random 224x224 batches, no decode) is timed last
under several settings: compiled or eager, attention implementation and SDPA backend, activation,
dtype, batch size, pigbench's tower against transformers' (with the device time of one batch by kind
of kernel); plus the tower's matrix products alone, as a ceiling. On CUDA each timed loop also
reports when the device was encoding and when it was idle. With ``--profile-call``
one more call (on fresh JPEGs) runs under torch.profiler, which prints where the host's time goes.

    python benchmarks/scalar_throughput.py [--images 4096] [--batch-size 256] [--workers 14] [--naive-pairs 200]
    python benchmarks/scalar_throughput.py --tiny --device cpu --images 64 --workers 2 --naive-pairs 8  # smoke test
"""

from __future__ import annotations

import argparse
import copy
import csv
import gc
import json
import os
import string
import tempfile
import time
from importlib import resources
from itertools import combinations
from multiprocessing import Pool
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

VIT_H_14 = {  # LAION's ViT-H/14 (and so PickScore_v1) uses exact GELU, not OpenAI CLIP's quick_gelu
    "text_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
                    "hidden_act": "gelu"},
    "vision_config": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
                      "image_size": 224, "patch_size": 14, "hidden_act": "gelu"},
    "projection_dim": 1024,
}
TINY = {
    "text_config": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2},
    "vision_config": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2,
                      "image_size": 224, "patch_size": 14},
    "projection_dim": 16,
}


def write_jpeg(args: tuple[Path, int]) -> str:
    """A distinct 512x512 JPEG: smooth random colours plus noise, quality 90."""
    path, seed = args
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((512, 512), Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (512, 512, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
    return str(path)


def write_model(folder: Path, arch: dict, device: str):
    """Random-weight CLIP of ``arch`` saved (fp16) with a CLIP image processor and a char-level tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    chars = list(string.ascii_lowercase + string.digits + ".,!?'-\"&:;()/")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    CLIPImageProcessorPil().save_pretrained(folder)  # shortest edge 224, crop 224, OpenAI mean/std
    text = {**arch["text_config"], "vocab_size": 49408, "max_position_embeddings": 77,
            "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": eos}
    config = CLIPConfig(text_config=text, vision_config=arch["vision_config"], projection_dim=arch["projection_dim"])
    dtype = torch.float16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = CLIPModel(config).to(dtype).eval()
    model.save_pretrained(folder)
    return model


def prompts() -> list[str]:
    with resources.files("pigbench").joinpath("data/partiprompts_simple_detail.tsv").open() as f:
        return [row["Prompt"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def episodes(paths: list[str], texts: list[str], tag: str):
    from pigbench.protocol import Episode, ImageRef, Label, Target

    return [
        Episode(f"user{i % 64}", (), Target(f"{tag}{i}", texts[i % len(texts)], ImageRef(paths[2 * i], paths[2 * i]),
                                            ImageRef(paths[2 * i + 1], paths[2 * i + 1]), Label.A))
        for i in range(len(paths) // 2)
    ]


def ranking_episodes(paths: list[str], texts: list[str], tag: str):
    """PIGBench's target shape: each group of 4 images (one prompt, one user) gives its 6 pairs, so each
    image is in 3 pairs (``adapters/pigbench_format.py``)."""
    from pigbench.protocol import Episode, ImageRef, Label, Target

    return [
        Episode(f"user{g % 64}", (), Target(f"{tag}{g}-{i}{j}", texts[g % len(texts)], ImageRef(paths[4 * g + i], paths[4 * g + i]),
                                            ImageRef(paths[4 * g + j], paths[4 * g + j]), Label.A))
        for g in range(len(paths) // 4) for i, j in combinations(range(4), 2)
    ]


def naive_pair(model, processor, ep, device):
    """PickScore README calc_probs for one pair: returns the two scores."""
    import torch

    images = [Image.open(ep.target.image_a.source), Image.open(ep.target.image_b.source)]
    image_inputs = processor(images=images, return_tensors="pt").to(device)
    text_inputs = processor(text=ep.target.prompt, padding=True, truncation=True, max_length=77, return_tensors="pt").to(device)
    with torch.no_grad():
        img = model.get_image_features(pixel_values=image_inputs["pixel_values"].to(model.dtype))
        txt = model.get_text_features(**text_inputs)
        img = getattr(img, "pooler_output", img)
        txt = getattr(txt, "pooler_output", txt)
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        scores = model.logit_scale.exp() * (txt @ img.T)[0]
        torch.softmax(scores, dim=-1)
    return scores.float().cpu().tolist()


def stage_rates(ev, paths: list[str], args, sync) -> dict[str, float]:
    """Each stage alone: worker decode (no device work) on the warm-up JPEGs, and device work
    (resize when done on the device, normalize, encode) on random 512x512 uint8 batches."""
    import torch

    from pigbench.protocol import ImageRef

    emb = ev.images
    emb._sampler.tasks = [(i, ImageRef(p, p)) for i, p in enumerate(paths)]
    t = time.perf_counter()
    n = sum(len(idx) for groups, _ in emb._decoded() for idx, _ in groups)
    decode = n / (time.perf_counter() - t)
    side = 512 if emb.resize_on_device else 224
    # decoded batches reach the device as HWC arrays, resized through a CHW view (as ImageEmbedder._resize does)
    x = torch.randint(0, 256, (args.batch_size, side, side, 3), dtype=torch.uint8, device=args.device).permute(0, 3, 1, 2)
    x = x if emb.resize_on_device else x.contiguous()
    rounds = max(1, len(paths) // args.batch_size) * 2

    def one_round() -> None:
        batch = emb.transform.resize_crop(x) if emb.resize_on_device else x
        emb.encode(emb.transform.normalize(batch, emb.dtype))

    with torch.inference_mode():
        one_round()  # untimed: a first call may compile or plan
        sync()
        t = time.perf_counter()
        for _ in range(rounds):
            one_round()
    sync()
    return {"decode": decode, "device": rounds * args.batch_size / (time.perf_counter() - t)}


def instrument_waits(emb, texts):
    """(seconds, firsts, undo): the seconds the host spends waiting for decoded images and for encoded
    batches, for content hashes (tasks reach the workers as hashes come, so part of this wait is
    inside the wait for decoded images), in ``embed`` as a whole, and in the text embedder
    ``texts``, accumulated while instrumented; when the first hash and the first decoded chunk came
    (``perf_counter`` times); ``undo()`` removes the instrumentation."""
    waits = {"decode": 0.0, "device": 0.0, "hash": 0.0, "embed": 0.0, "texts": 0.0}
    firsts: dict[str, float] = {}  # perf_counter time of each wrapped iterator's first item
    decoded, store, embed, new_tasks = emb._decoded, emb._store, emb.embed, emb._new_tasks

    def timed(key: str, fn):
        def run(*args):
            t = time.perf_counter()
            try:
                return fn(*args)
            finally:
                waits[key] += time.perf_counter() - t
        return run

    def timed_iter(key: str, make):
        def run(*args):
            it = iter(make(*args))
            while True:
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    waits[key] += time.perf_counter() - t
                firsts.setdefault(key, time.perf_counter())
                yield item
        return run

    def undo() -> None:
        del emb._decoded, emb._store, emb.embed, emb._new_tasks, texts.embed  # back to the class's methods

    emb._decoded, emb._store, emb.embed = timed_iter("decode", decoded), timed("device", store), timed("embed", embed)
    texts.embed = timed("texts", texts.embed)
    emb._new_tasks = timed_iter("hash", new_tasks)
    return waits, firsts, undo


class GCPauses:
    """While active (a ``with`` block): the seconds Python's garbage collector ran and how many
    collections it made, by generation (0 to 2)."""

    def __init__(self) -> None:
        self.seconds, self.counts, self._began = [0.0] * 3, [0] * 3, 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._began
            self.counts[info["generation"]] += 1

    def __enter__(self) -> "GCPauses":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._callback)

    def __str__(self) -> str:
        return ", ".join(f"generation {g}: {n} in {s:.3f}s" for g, (n, s) in enumerate(zip(self.counts, self.seconds)))


class EncodeTimeline:
    """Wraps an embedder's ``encode`` with CUDA events; :meth:`summary` then tells where, in a timed
    loop that began at :meth:`start`, the device was encoding and where it was idle."""

    def __init__(self, emb) -> None:
        import torch

        self.emb, self.encode, self.torch = emb, emb.encode, torch
        self.spans: list = []
        self.first_call = 0.0  # perf_counter time of the first encode call
        self.origin = torch.cuda.Event(enable_timing=True)
        emb.encode = self._timed

    def _timed(self, x):
        begin, end = self.torch.cuda.Event(enable_timing=True), self.torch.cuda.Event(enable_timing=True)
        self.first_call = self.first_call or time.perf_counter()
        begin.record()
        out = self.encode(x)
        end.record()
        self.spans.append((begin, end))
        return out

    def start(self) -> None:
        self.origin.record()

    def summary(self, wall_s: float) -> str:
        """After a synchronize: seconds encoding, idle before the first batch, idle between batches
        (with the longest gap) and after the last one, of ``wall_s``."""
        self.emb.encode = self.encode
        spans = [(self.origin.elapsed_time(a) / 1e3, self.origin.elapsed_time(b) / 1e3) for a, b in self.spans]
        if not spans:
            return "no encoder calls"
        gaps = [max(0.0, b0 - a1) for (_, a1), (b0, _) in zip(spans, spans[1:])]
        return (f"device encoding {sum(b - a for a, b in spans):.2f}s of {wall_s:.2f}s; idle before the first batch "
                f"{spans[0][0]:.2f}s, between batches {sum(gaps):.2f}s (longest {max(gaps, default=0):.3f}s), "
                f"after the last {wall_s - spans[-1][1]:.2f}s")


def time_calls(ev, paths: list[str], texts: list[str], windows: list[int], args, sync, tag: str, make_episodes=episodes):
    """images/s (distinct images) of the runner's prediction loop (``pigbench.runner.predict_batches``:
    batches of ``--batch-size`` episodes, each window of that many episodes announced to ``prepare``
    first) for each look-ahead window (0: none, every ``predict`` call on its own), each on its own JPEGs
    paired by ``make_episodes`` and with no prompt features in memory (the warm-up's prompts are the
    same: a run encodes them once); and pairs/s in ``pair_rates``."""
    from pigbench.runner import predict_batches

    rates, pair_rates, preds = {}, {}, []
    for k, window in enumerate(windows):
        timed = make_episodes(paths[k * args.images : (k + 1) * args.images], texts, f"{tag}{k}-")
        calls_before, texts_before = ev.images.encoder_calls, ev.texts.encoded_texts
        ev.texts.memory.clear()
        waits, firsts, undo = instrument_waits(ev.images, ev.texts)
        timeline = EncodeTimeline(ev.images) if args.device == "cuda" else None
        ev.prepare_window = window
        sync()
        t = time.perf_counter()
        if timeline:
            timeline.start()
        with GCPauses() as collections:
            out = [p for _, batch in predict_batches(ev, timed, args.batch_size) for p in batch]
            sync()
        fast_s = time.perf_counter() - t
        assert all(p.score_a is not None for p in out), [p.error for p in out if p.error][:3]
        rates[window] = args.images / fast_s
        pair_rates[window] = len(timed) / fast_s
        preds.append((timed, out))
        undo()
        print(f"pigbench ({tag}), runner loop, batch {args.batch_size}, look-ahead window {window} episodes: "
              f"{args.images} images ({len(timed)} pairs) in {fast_s:.2f}s = {rates[window]:.0f} images/s, {pair_rates[window]:.0f} pairs/s "
              f"({ev.images.encoder_calls - calls_before} encoder calls; in embed "
              f"{waits['embed']:.2f}s, of which waiting for decoded images {waits['decode']:.2f}s (for content hashes "
              f"{waits['hash']:.2f}s, partly within the former), for encoded batches {waits['device']:.2f}s; outside embed "
              f"{fast_s - waits['embed']:.2f}s, of which embedding {ev.texts.encoded_texts - texts_before} prompts {waits['texts']:.2f}s; garbage collections: {collections})")
        if timeline:
            print(f"  timeline: {timeline.summary(fast_s)}; host: first hash {firsts.get('hash', t) - t:.3f}s, "
                  f"first decoded chunk {firsts.get('decode', t) - t:.3f}s, first encode call {timeline.first_call - t:.3f}s")
    del ev.prepare_window  # back to the class's
    return rates, pair_rates, preds


def profile_call(ev, paths: list[str], texts: list[str], args, sync) -> None:
    """One predict call on fresh JPEGs under torch.profiler: the host's time by operation (CUDA
    runtime calls included, so a wait for the device shows), and the device's busy time."""
    from torch.profiler import ProfilerActivity, profile

    eps = episodes(paths, texts, "profiled-")
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        ev.predict(eps)
        sync()
        wall = time.perf_counter() - t
    table = prof.key_averages()
    print(f"profiled call: {len(paths)} images in {wall:.2f}s under the profiler")
    print(table.table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60))
    device_us = sum(getattr(e, "self_device_time_total", 0) for e in table)
    print(f"device busy (sum of kernel and copy times, all streams): {device_us / 1e6:.2f}s of {wall:.2f}s")


def kernel_breakdown(name: str, encode, x, sync) -> None:
    """Device time of one ``encode(x)`` by kind of kernel (matrix products, attention, layer norms,
    activation, other), from torch.profiler's kernel names."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    kinds = {"attention": ("sdpa", "flash", "fmha", "attention"),  # first: cuDNN's attention kernel names say sm90 too
             "matrix products": ("gemm", "cutlass", "xmma", "nvjet", "sm90", "cublas"),
             "layer norms": ("layer_norm", "add_norm"), "activation": ("gelu",)}
    with torch.inference_mode():
        encode(x)
        sync()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            encode(x)
            sync()
    totals: dict[str, float] = {}
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", 0)
        if us <= 0:
            continue
        kind = next((k for k, keys in kinds.items() if any(w in e.key.lower() for w in keys)), "other")
        totals[kind] = totals.get(kind, 0.0) + us / 1e3
    top = sorted(((getattr(e, "self_device_time_total", 0) / 1e3, e.key[:70]) for e in prof.key_averages()), reverse=True)[:8]
    print(f"kernels of one batch of {len(x)}, {name}: total {sum(totals.values()):.1f} ms; "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(totals.items(), key=lambda kv: -kv[1])))
    for ms, key in top:
        print(f"    {ms:7.2f} ms  {key}")


def profile_tower(model, ev, args, sync) -> dict[str, float]:
    """images/s of the image tower alone (224x224 fp16 inputs to projected features) per setting."""

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers.activations import ACT2FN

    from pigbench.clip_tower import CLIPImageTower
    from pigbench.compiled_encoder import CompiledEncoder
    from pigbench.evaluators._hf_clip import encode_images

    def rate(fn, batch: int, dtype=None, iters: int = 6) -> float:
        x = torch.randn(batch, 3, 224, 224, device=args.device).to(dtype or model.dtype)
        with torch.inference_mode():
            fn(x), fn(x)
            sync()
            t = time.perf_counter()
            for _ in range(iters):
                fn(x)
            sync()
        return iters * batch / (time.perf_counter() - t)

    eager = lambda x: encode_images(model, x)  # noqa: E731
    layers = model.vision_model.encoder.layers
    attn_config = layers[0].self_attn.config
    out: dict[str, float] = {}

    def setting(name: str, fn) -> None:
        try:
            out[name] = fn()
            print(f"tower alone, {name}: {out[name]:.0f} images/s")
        except Exception as exc:  # a setting this torch/transformers lacks is reported, not fatal
            print(f"tower alone, {name}: failed ({type(exc).__name__}: {str(exc)[:200]})")

    bs = args.batch_size
    if isinstance(ev.images.encode, CompiledEncoder):
        with torch.inference_mode():
            x = torch.randn(bs, 3, 224, 224, device=args.device).to(model.dtype)
            a, b = ev.images.encode(x).float(), eager(x).float()
        print(f"compiled vs eager features: max |diff| {(a - b).abs().max():.2e} (max |value| {b.abs().max():.2e}); "
              f"compile failure: {ev.images.encode.failure}")
        setting(f"compiled (pigbench), batch {bs}", lambda: rate(ev.images.encode, bs))
    print(f"attention implementation of the loaded model: {attn_config._attn_implementation}")
    setting(f"eager, sdpa default dispatch, batch {bs}", lambda: rate(eager, bs))
    for b in (128, 512):
        setting(f"eager, batch {b}", lambda b=b: rate(eager, b))
    for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"):
        def forced(backend=backend):
            with sdpa_kernel([getattr(SDPBackend, backend)]):
                return rate(eager, bs)
        setting(f"eager, sdpa forced {backend}", forced)

    def attn_eager():
        attn_config._attn_implementation = "eager"
        try:
            return rate(eager, bs)
        finally:
            attn_config._attn_implementation = "sdpa"
    setting("eager, attn_implementation=eager", attn_eager)

    def quick_gelu():
        acts = [layer.mlp.activation_fn for layer in layers]
        for layer in layers:
            layer.mlp.activation_fn = ACT2FN["quick_gelu"]
        try:
            return rate(eager, bs)
        finally:
            for layer, act in zip(layers, acts):
                layer.mlp.activation_fn = act
    setting("eager, quick_gelu (the previous benchmark model)", quick_gelu)

    def bf16(tower: bool = False):
        vision, proj = copy.deepcopy(model.vision_model).bfloat16(), copy.deepcopy(model.visual_projection).bfloat16()
        if tower:
            return rate(CLIPImageTower(SimpleNamespace(vision_model=vision, visual_projection=proj)), bs, torch.bfloat16)
        return rate(lambda x: proj(vision(pixel_values=x).pooler_output), bs, torch.bfloat16)
    setting("eager, bfloat16", bf16)

    fused = CLIPImageTower(model)
    with torch.inference_mode():
        x = torch.randn(bs, 3, 224, 224, device=args.device).to(model.dtype)
        a, b = fused(x).float(), eager(x).float()
    print(f"pigbench tower vs transformers, features of {bs} random images: max |diff| {(a - b).abs().max():.2e} "
          f"(max |value| {b.abs().max():.2e})")
    setting(f"pigbench tower (pigbench.clip_tower), batch {bs}", lambda: rate(fused, bs))
    setting("pigbench tower, bfloat16", lambda: bf16(tower=True))
    for name, fn in (("transformers", eager), ("pigbench tower", fused)) if args.device == "cuda" else ():
        kernel_breakdown(name, fn, torch.randn(bs, 3, 224, 224, device=args.device).to(model.dtype), sync)

    def matmuls_only():
        cfg = model.config.vision_config
        tokens = bs * ((cfg.image_size // cfg.patch_size) ** 2 + 1)
        d, f = cfg.hidden_size, cfg.intermediate_size
        shapes = [(d, d)] * 4 + [(d, f), (f, d)]  # q, k, v, out; fc1, fc2
        xs = {k: torch.randn(tokens, k, device=args.device, dtype=model.dtype) for k in (d, f)}
        ws = [torch.randn(n, k, device=args.device, dtype=model.dtype) / k**0.5 for k, n in shapes]
        with torch.inference_mode():
            def one_layer():
                for (k, _), w in zip(shapes, ws):
                    torch.nn.functional.linear(xs[k], w)
            one_layer()
            sync()
            t = time.perf_counter()
            for _ in range(cfg.num_hidden_layers):
                one_layer()
            sync()
        seconds = time.perf_counter() - t
        flops = 2 * tokens * sum(k * n for k, n in shapes) * cfg.num_hidden_layers
        print(f"tower matrix products alone: {flops / seconds / 1e12:.0f} TFLOP/s")
        return bs / seconds
    setting("linear layers' matrix products only (ceiling)", matmuls_only)
    return out


def main() -> None:
    from _args import non_negative_int, non_negative_ints, positive_int
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=positive_int, default=4096)
    ap.add_argument("--batch-size", type=positive_int, default=256)
    ap.add_argument("--workers", type=non_negative_int, default=14)
    ap.add_argument("--windows", type=non_negative_ints, default="0,2048",
                    help="comma list of look-ahead windows (episodes announced to prepare; 0: none, the default is "
                         "the evaluator's); each is timed on its own fresh set of --images JPEGs")
    ap.add_argument("--naive-pairs", type=non_negative_int, default=200)
    ap.add_argument("--naive-fp32-too", action="store_true",
                    help="also time the naive loop with the model in float32, as the README's AutoModel.from_pretrained(...) "
                         "loads it with transformers 4 (the speedup stays against the same dtype)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny CLIP instead of ViT-H-14 (smoke test)")
    ap.add_argument("--compiled-too", action="store_true", help="also time pigbench with PIGBENCH_COMPILE=1")
    ap.add_argument("--bf16-too", action="store_true", help="also time pigbench with the evaluator option dtype=bfloat16")
    ap.add_argument("--transformers-tower-too", action="store_true",
                    help="also time pigbench with transformers' image tower (PIGBENCH_CLIP_TOWER=transformers)")
    ap.add_argument("--memory-cache-too", action="store_true", help="also time pigbench with embeddings kept in memory only")
    ap.add_argument("--rankings-too", action="store_true",
                    help="also time pigbench (default window) and the naive loop on PIGBench's target shape: --images "
                         "fresh JPEGs in groups of 4, each group's 6 pairs (each image in 3 pairs), in pairs/s")
    ap.add_argument("--profile-tower", action="store_true", help="time the image tower alone under several settings")
    ap.add_argument("--profile-call", action="store_true", help="run one more call under torch.profiler")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from pigbench.compiled_encoder import COMPILE_ENV
    from pigbench.evaluators._hf_clip import TOWER_ENV
    from pigbench.evaluator import Runtime
    from pigbench.registry import evaluators
    from _device import require_device
    from pigbench.runner import frozen_setup_objects

    require_device(args.device)
    windows = args.windows
    variants = ["default"] + (["compiled"] if args.compiled_too else []) + (["bf16"] if args.bf16_too else []) + (
        ["memory-cache"] if args.memory_cache_too else []) + (["transformers-tower"] if args.transformers_tower_too else [])
    work = Path(tempfile.mkdtemp(prefix="scalar_throughput_"))
    (work / "img").mkdir()
    warm_n = 2 * args.batch_size
    per_variant = args.images * len(windows)
    t = time.perf_counter()
    with Pool(max(1, args.workers)) as pool:
        rankings_at, rankings_n = per_variant * len(variants), args.images if args.rankings_too else 0
        total = rankings_at + rankings_n + warm_n + args.images // 4
        paths = pool.map(write_jpeg, [(work / "img" / f"{i:05d}.jpg", i) for i in range(total)])
    print(f"wrote {len(paths)} JPEGs in {time.perf_counter() - t:.1f}s ({Path(paths[0]).stat().st_size} bytes each, first)")

    t = time.perf_counter()
    model = write_model(work / "model", TINY if args.tiny else VIT_H_14, args.device)
    print(f"built and saved the model in {time.perf_counter() - t:.1f}s: "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters")

    def sync() -> None:
        if args.device == "cuda":
            torch.cuda.synchronize()

    texts = prompts()
    warm = episodes(paths[-warm_n:], texts[::-1], "warm")
    cls = evaluators.get("pickscore")
    rates, preds, evs = {}, {}, {}
    for v, variant in enumerate(variants):
        if variant == "compiled":
            os.environ[COMPILE_ENV] = "1"
        else:
            os.environ.pop(COMPILE_ENV, None)
        if variant == "transformers-tower":
            os.environ[TOWER_ENV] = "transformers"
        else:
            os.environ.pop(TOWER_ENV, None)
        dtype = {"dtype": "bfloat16"} if variant == "bf16" else {}
        cache_dir = None if variant == "memory-cache" else str(work / f"cache-{variant}")  # the runner's default: on disk
        ev = cls(cls.Config(model_path=str(work / "model"), processor_path=str(work / "model"), **dtype),
                 Runtime(device=args.device, batch_size=args.batch_size, num_workers=args.workers, cache_dir=cache_dir))
        t = time.perf_counter()
        ev.setup()
        print(f"pickscore evaluator ({variant}) loaded in {time.perf_counter() - t:.1f}s (dtype {ev.dtype}, "
              f"resize on the device: {ev.images.resize_on_device}, image tower: {ev.provenance()['image_tower']})")
        t = time.perf_counter()
        ev.predict(warm)  # CUDA kernels, allocator, worker start-up code paths; compiling the image encoder
        sync()
        print(f"warm-up predict ({variant}, {warm_n} images): {time.perf_counter() - t:.1f}s; "
              f"image encoder: {ev.provenance().get('image_encoder', 'eager')}")
        with frozen_setup_objects():  # as the runner's loop runs
            rates[variant], _, preds[variant] = time_calls(
                ev, paths[v * per_variant : (v + 1) * per_variant], texts, windows, args, sync, variant)
        evs[variant] = ev
    ev = evs["default"]
    default_window = type(ev).prepare_window
    if args.rankings_too:
        with frozen_setup_objects():
            _, ranking_rates, ranking_preds = time_calls(ev, paths[rankings_at : rankings_at + rankings_n], texts,
                                                         [default_window], args, sync, "rankings", ranking_episodes)
    fast_rate = rates["default"].get(default_window, min(rates["default"].values()))
    timed = preds["default"][-1][0]

    tf = ev.images.transform
    mismatched = sum(
        int((tf(Image.open(p)).to(args.device) != tf.resize_crop(tf.decode(Image.open(p))[None].to(args.device))[0]).sum())
        for p in paths[:64]
    )
    print(f"pixels differing between PIL on the CPU and the device resize, {len(paths[:64])} images: {mismatched}")
    stages = stage_rates(ev, paths[-warm_n:], args, sync)
    print("stage ceilings: " + ", ".join(f"{k} {v:.0f} images/s" for k, v in stages.items()))

    processor = AutoProcessor.from_pretrained(work / "model")
    subset = timed[: args.naive_pairs]

    def naive_loop(naive_model, what: str, subset: list = subset) -> float:
        for ep in warm[:3]:
            naive_pair(naive_model, processor, ep, args.device)
        with frozen_setup_objects(), GCPauses() as collections:  # no full collection in this loop either
            sync()
            t = time.perf_counter()
            for ep in subset:
                naive_pair(naive_model, processor, ep, args.device)
            sync()
            seconds = time.perf_counter() - t
        print(f"naive per-pair loop ({what}, {type(processor.image_processor).__name__}): {2 * len(subset)} images in "
              f"{seconds:.2f}s = {2 * len(subset) / seconds:.1f} images/s (garbage collections: {collections})")
        return 2 * len(subset) / seconds

    naive_rate = naive_loop(model, f"{model.dtype}, the same as pigbench's")
    naive_fp32_rate = naive_loop(copy.deepcopy(model).float(), "float32, as the README loads the model") if args.naive_fp32_too else None
    if args.rankings_too:
        naive_ranking_pairs = naive_loop(model, f"{model.dtype}, PIGBench's pairs", ranking_preds[0][0][: args.naive_pairs]) / 2
        preds["rankings"] = ranking_preds

    pil = AutoProcessor.from_pretrained(work / "model")
    pil.image_processor = CLIPImageProcessorPil.from_pretrained(work / "model")
    diffs = {}
    for variant, runs in preds.items():
        eps, got = runs[-1]
        check = [(naive_pair(model, pil, ep, args.device), (p.score_a, p.score_b)) for ep, p in zip(eps[:32], got)]
        diffs[variant] = max(abs(a - b) for ref, out in check for a, b in zip(ref, out))
        print(f"max |score difference| vs the per-pair PIL-processor recipe on 32 pairs ({variant}): {diffs[variant]:.2e}")
    if args.rankings_too:
        ranking_speedup = ranking_rates[default_window] / naive_ranking_pairs
        print(f"speedup over the naive loop on PIGBench's pairs, in pairs/s (default, window {default_window}): "
              f"{ranking_rates[default_window]:.0f} / {naive_ranking_pairs:.1f} = {ranking_speedup:.2f}x")
    for variant, r in rates.items():
        print(f"speedup over the naive loop ({variant}): " + ", ".join(
            f"{x / naive_rate:.2f}x (window {w})" for w, x in r.items()))
        if naive_fp32_rate:
            print(f"speedup over the float32 naive loop ({variant}): " + ", ".join(
                f"{x / naive_fp32_rate:.2f}x (window {w})" for w, x in r.items()))

    figures = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "torch": torch.__version__, "transformers": transformers.__version__, "model": "tiny" if args.tiny else "CLIP ViT-H-14",
        "images": args.images, "batch_size": args.batch_size, "workers": args.workers,
        "image_encoder": ev.provenance().get("image_encoder", "eager"), "image_tower": ev.provenance()["image_tower"],
        "pigbench_images_per_s_by_lookahead_window": {v: {k: round(x, 1) for k, x in r.items()} for v, r in rates.items()},
        "pigbench_images_per_s_default_window": round(fast_rate, 1), "default_window": default_window, "naive_images_per_s": round(naive_rate, 1),
        "naive_pairs": len(subset), "speedup": round(fast_rate / naive_rate, 2),
        "naive_float32_images_per_s": naive_fp32_rate and round(naive_fp32_rate, 1), "max_score_diff_vs_pil_recipe": diffs,
        "rankings_pigbench_pairs_per_s": round(ranking_rates[default_window], 1) if args.rankings_too else None,
        "rankings_naive_pairs_per_s": round(naive_ranking_pairs, 1) if args.rankings_too else None,
        "rankings_speedup": round(ranking_speedup, 2) if args.rankings_too else None,
        "dtype": str(ev.dtype), "resize_on_device": ev.images.resize_on_device, "device_resize_mismatched_pixels_64_images": mismatched, "stage_ceilings_images_per_s": {k: round(v, 1) for k, v in stages.items()},
    }
    print(json.dumps(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    if args.profile_call:
        profile_call(ev, paths[-warm_n - args.images // 4 : -warm_n], texts, args, sync)
    if args.profile_tower:
        figures["tower_alone_images_per_s"] = {k: round(v, 1) for k, v in profile_tower(model, ev, args, sync).items()}
        print(json.dumps(figures["tower_alone_images_per_s"]))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
