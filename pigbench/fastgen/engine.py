"""Batched greedy generation for Qwen2-VL: shared-prefix prefill, static KV cache, graph decode.

``Qwen2VLEngine(model).generate(prompts, settings)`` returns, per prompt, the greedy tokens that
``model.generate(do_sample=False, repetition_penalty=settings.repetition_penalty)`` would return
for that prompt alone (without the EOS token), up to floating-point differences between batched
and unbatched kernels. How:

1. Every distinct image (by key) is encoded once by the vision tower, in large batches, with
   same-size images attended together (:mod:`pigbench.fastgen.vision`).
2. Prompts with the same ``share_key`` share the KV of their longest common prefix (equal
   tokens, equal images): the prefix is prefilled once and copied into each row's cache.
3. Prompts are sorted by length and decoded ``batch_size`` at a time. Each row's remaining
   suffix is prefilled in padded chunks of about ``prefill_tokens`` tokens, attending its prefix.
4. Decoding runs a fixed-shape step (one token for every row, see
   :mod:`pigbench.fastgen.decode_step`) from a CUDA graph; every ``check_every`` steps the host
   stops when all rows have produced EOS, and moves the unfinished rows into a smaller batch
   once half of them are done (early exit of finished sequences).
5. With a repetition penalty, each row carries a ``(vocab,)`` mask of the ids in its prompt and
   output so far: set from the prompt before the prefill's token, updated inside the step, and
   moved with the row when a batch is compacted.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Hashable, Optional, Sequence

from pigbench.fastgen.decode_step import DecodeWorkspace, apply_repetition_penalty
from pigbench.fastgen.decoder import TextDecoder
from pigbench.fastgen.inputs import GenerationSettings, ImageInput, Prompt
from pigbench.fastgen.rope import mrope_positions
from pigbench.fastgen.vision import VisionEncoder

_KEYS_BUCKET = 128  # attention lengths are rounded up to this, to reuse captured graphs
PATCH_BUDGET = 65536  # vision patches per vision-tower forward


@dataclass
class _Plan:
    """A prompt's positions and where its shared prefix ends."""

    positions: Any  # (3, n) long
    next_position: int  # rotary position of the first generated token
    prefix: int = 0  # leading tokens taken from the shared prefix KV
    group: Optional[Hashable] = None

    @property
    def length(self) -> int:
        return self.positions.shape[1]


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


class Qwen2VLEngine:
    """Fast greedy generation with a loaded ``Qwen2VLForConditionalGeneration`` (eval mode).

    Raises ``ValueError`` for any other model (Qwen2.5-VL's windowed vision tower, say, is not
    reproduced)."""

    def __init__(self, model: Any) -> None:
        model_type = getattr(model.config, "model_type", None)
        if model_type != "qwen2_vl":
            name = getattr(model.config, "_name_or_path", "") or type(model).__name__
            raise ValueError(f"pigbench.fastgen runs Qwen2-VL models (model_type 'qwen2_vl') only; "
                             f"{name} has model_type {model_type!r}")
        self.model = model.eval()
        self.decoder = TextDecoder(model)
        self.vision = VisionEncoder(model)
        self.image_token_id = model.config.image_token_id
        self.merge_size = model.config.vision_config.spatial_merge_size
        self.device = self.decoder.device
        self.stats: Counter[str] = Counter()  # counts and seconds per phase, cumulative
        self._k_cache: Any = None
        self._v_cache: Any = None
        self._workspaces: dict[tuple, DecodeWorkspace] = {}
        self._pool: Any = None

    # -- public ------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], settings: GenerationSettings) -> list[list[int]]:
        """Greedy tokens per prompt, in input order, without the EOS token that ended them."""
        import torch

        if not prompts:
            return []
        if settings.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if not settings.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be positive, got {settings.repetition_penalty!r}")
        with torch.inference_mode():
            plans = [self._plan(p) for p in prompts]
            self._assign_prefixes(prompts, plans, settings.min_shared_prefix)
            order = _length_order(plans)
            longest = max(p.length for p in plans)
            self._ensure_cache(min(settings.batch_size, len(prompts)),
                               _round_up(longest + settings.max_new_tokens, _KEYS_BUCKET) + _KEYS_BUCKET)
            results: list[list[int]] = [[] for _ in prompts]
            features: dict[Hashable, Any] = {}
            prefix_kv: dict[Hashable, tuple[Any, Any]] = {}
            left_in_group = Counter(p.group for p in plans if p.group is not None)
            image_uses = Counter(im.key for p in prompts for im in p.images)
            for start in range(0, len(order), settings.batch_size):
                batch = order[start : start + settings.batch_size]
                self._encode_images([im for i in batch for im in prompts[i].images], features)
                tokens = self._run_batch([prompts[i] for i in batch], [plans[i] for i in batch], features,
                                         prefix_kv, settings)
                for i, toks in zip(batch, tokens):
                    results[i] = toks
                for i in batch:  # free what no later batch needs
                    group = plans[i].group
                    if group is not None:
                        left_in_group[group] -= 1
                        if not left_in_group[group]:
                            prefix_kv.pop(group, None)
                    for im in prompts[i].images:
                        image_uses[im.key] -= 1
                        if not image_uses[im.key]:
                            features.pop(im.key, None)
            self.stats["prompts"] += len(prompts)
            return results

    # -- planning ------------------------------------------------------------------------------
    def _plan(self, prompt: Prompt) -> _Plan:
        positions, nxt = mrope_positions(prompt.token_ids, self.image_token_id,
                                         [im.grid_thw for im in prompt.images], self.merge_size)
        return _Plan(positions, nxt)

    def _assign_prefixes(self, prompts: Sequence[Prompt], plans: list[_Plan], minimum: int) -> None:
        groups: dict[Hashable, list[int]] = {}
        for i, p in enumerate(prompts):
            if p.share_key is not None:
                groups.setdefault(p.share_key, []).append(i)
        for key, members in groups.items():
            if len(members) < 2:
                continue
            identity = [self._identity(prompts[i]) for i in members]
            common = min(len(x) for x in identity) - 1  # each row keeps one token of its own
            for other in identity[1:]:
                common = min(common, _common_prefix(identity[0], other))
            if common >= minimum:
                for i in members:
                    plans[i].prefix, plans[i].group = common, key

    def _identity(self, prompt: Prompt) -> list[Hashable]:
        """Token ids, with each image token replaced by its image's key (equal lists, equal KV)."""
        out: list[Hashable] = []
        images = iter(prompt.images)
        run_left = 0
        current: Hashable = None
        for tok in prompt.token_ids:
            if tok != self.image_token_id:
                out.append(tok)
                continue
            if run_left == 0:
                image = next(images)
                t, h, w = image.grid_thw
                current, run_left = ("image", image.key), t * (h // self.merge_size) * (w // self.merge_size)
            out.append(current)
            run_left -= 1
        return out

    # -- memory --------------------------------------------------------------------------------
    def _ensure_cache(self, rows: int, length: int) -> None:
        import torch

        if self._k_cache is not None and self._k_cache.shape[1] >= rows and self._k_cache.shape[3] >= length:
            return
        self._k_cache = self._v_cache = None
        self._workspaces.clear()
        self._pool = None  # a private graph pool dies with its last graph: captures need a new one
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # return the old cache's memory before taking a larger one
        d = self.decoder
        shape = (len(d.layers), rows, d.num_kv_heads, length, d.head_dim)
        k_cache = torch.zeros(shape, dtype=d.dtype, device=self.device)  # both or neither: a failed V keeps no K
        self._v_cache = torch.zeros(shape, dtype=d.dtype, device=self.device)
        self._k_cache = k_cache

    @property
    def _scratch(self) -> int:
        return self._k_cache.shape[3] - 2

    def _workspace(self, rows: int, keys: int, settings: GenerationSettings) -> DecodeWorkspace:
        import torch

        use_graph = settings.use_cuda_graphs and self.device.type == "cuda"
        key = (rows, keys, settings.max_new_tokens, tuple(settings.eos_token_ids), settings.repetition_penalty, use_graph)
        if key not in self._workspaces:
            if use_graph and self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            t0 = self._now()
            self._workspaces[key] = DecodeWorkspace(
                self.decoder, self._k_cache, self._v_cache, rows, keys, settings.max_new_tokens,
                settings.eos_token_ids, use_graph, self._pool, self._scratch, settings.repetition_penalty)
            self.stats["graph_captures" if use_graph else "workspaces"] += 1
            self.stats["capture_s"] += self._now() - t0
        return self._workspaces[key]

    # -- vision ----------------------------------------------------------------------------------
    def _encode_images(self, images: Sequence[ImageInput], features: dict[Hashable, Any]) -> None:
        import torch

        todo = list({im.key: im for im in images if im.key not in features}.values())
        t0 = self._now()
        chunk: list[ImageInput] = []
        for image in todo + [None]:
            patches = sum(im.pixel_values.shape[0] for im in chunk)
            if chunk and (image is None or patches + image.pixel_values.shape[0] > PATCH_BUDGET):
                pixels = torch.cat([im.pixel_values for im in chunk]).to(self.device, self.vision.dtype)
                grid = torch.tensor([im.grid_thw for im in chunk])
                merged = self.vision(pixels, grid)
                sizes = (grid.prod(-1) // self.merge_size**2).tolist()
                for im, feats in zip(chunk, merged.split(sizes)):
                    features[im.key] = feats.to(self.decoder.dtype)
                chunk = []
            if image is not None:
                chunk.append(image)
        self.stats["images"] += len(todo)
        self.stats["vision_s"] += self._now() - t0

    def _embed(self, prompt: Prompt, features: dict[Hashable, Any]) -> Any:
        import torch

        ids = torch.tensor(prompt.token_ids, dtype=torch.long, device=self.device)
        x = self.decoder.embed_tokens(ids)
        if prompt.images:
            x[ids == self.image_token_id] = torch.cat([features[im.key] for im in prompt.images])
        return x

    # -- one decode batch ------------------------------------------------------------------------
    def _run_batch(self, prompts: list[Prompt], plans: list[_Plan], features: dict[Hashable, Any],
                   prefix_kv: dict[Hashable, tuple[Any, Any]], settings: GenerationSettings) -> list[list[int]]:
        import torch

        rows = len(prompts)
        keys = _round_up(max(p.length for p in plans) + settings.max_new_tokens, _KEYS_BUCKET)
        ws = self._workspace(rows, keys, settings) if settings.max_new_tokens > 1 else None
        t0 = self._now()
        for r, (prompt, plan) in enumerate(zip(prompts, plans)):
            if plan.prefix:
                if plan.group not in prefix_kv:
                    prefix_kv[plan.group] = self._prefill_prefix(prompt, plan, features)
                k, v = prefix_kv[plan.group]
                self._k_cache[:, r, :, : plan.prefix] = k
                self._v_cache[:, r, :, : plan.prefix] = v
                self.stats["prefix_tokens_reused"] += plan.prefix
        seen = self._prompt_ids(prompts) if settings.repetition_penalty != 1.0 else None
        first = torch.empty(rows, dtype=torch.long, device=self.device)
        r0 = 0
        while r0 < rows:
            r1 = r0 + 1
            while r1 < rows and (r1 + 1 - r0) * max(p.length - p.prefix for p in plans[r0 : r1 + 1]) <= settings.prefill_tokens:
                r1 += 1
            first[r0:r1] = self._prefill_rows(prompts[r0:r1], plans[r0:r1], features, r0, settings,
                                              None if seen is None else seen[r0:r1])
            r0 = r1
        self.stats["prefill_s"] += self._now() - t0
        if ws is None:
            return [[t] if t not in settings.eos_token_ids else [] for t in first.tolist()]
        t0 = self._now()
        if seen is not None:
            seen[torch.arange(rows, device=self.device), first] = True
        out = self._decode(ws, first, plans, settings, seen)
        self.stats["decode_s"] += self._now() - t0
        return [_until_eos(toks, settings.eos_token_ids) for toks in out]

    def _prefill_prefix(self, prompt: Prompt, plan: _Plan, features: dict[Hashable, Any]) -> tuple[Any, Any]:
        """K/V ``(layers, Hkv, P, D)`` of the shared prefix, computed in a private cache."""
        import torch

        d, length = self.decoder, plan.prefix
        keys = _round_up(length, 16)
        shape = (len(d.layers), 1, d.num_kv_heads, keys, d.head_dim)
        k_cache = torch.zeros(shape, dtype=d.dtype, device=self.device)
        v_cache = torch.zeros_like(k_cache)
        x = self._embed(prompt, features)[None, :length]
        cos, sin = d.rope(plan.positions[:, None, :length].to(self.device))
        starts = torch.zeros(1, dtype=torch.long, device=self.device)
        write_pos = torch.arange(length, device=self.device)[None]
        d.forward(x, cos, sin, k_cache, v_cache, torch.zeros_like(write_pos), write_pos,
                  d.causal_mask(starts, length, keys), keys)
        self.stats["prefill_tokens"] += length
        return k_cache[:, 0, :, :length], v_cache[:, 0, :, :length]

    def _prompt_ids(self, prompts: list[Prompt]) -> Any:
        """``(rows, vocab)`` bool: the ids in each prompt (ids past the LM head's vocabulary, which
        it cannot generate, are left out as ``transformers`` does)."""
        import torch

        vocab = self.decoder.lm_head.weight.shape[0]
        seen = torch.zeros(len(prompts), vocab, dtype=torch.bool, device=self.device)
        for r, prompt in enumerate(prompts):
            ids = torch.tensor(prompt.token_ids, dtype=torch.long, device=self.device)
            seen[r, ids[ids < vocab]] = True
        return seen

    def _prefill_rows(self, prompts: list[Prompt], plans: list[_Plan], features: dict[Hashable, Any], row0: int,
                      settings: GenerationSettings, seen: Any = None) -> Any:
        """Prefill each row's suffix (after its shared prefix) into cache rows ``row0...``; returns
        the first generated token of each row (``seen``: its rows' ids to penalize, with a penalty)."""
        import torch

        d, dev = self.decoder, self.device
        rows = len(prompts)
        lengths = [p.length - p.prefix for p in plans]
        width = max(lengths)
        x = torch.zeros(rows, width, self.decoder.embed_tokens.weight.shape[1], dtype=d.dtype, device=dev)
        positions = torch.zeros(3, rows, width, dtype=torch.long)
        for r, (prompt, plan) in enumerate(zip(prompts, plans)):
            x[r, : lengths[r]] = self._embed(prompt, features)[plan.prefix :]
            positions[:, r, : lengths[r]] = plan.positions[:, plan.prefix :]
        starts = torch.tensor([p.prefix for p in plans], device=dev)
        lens = torch.tensor(lengths, device=dev)
        t = torch.arange(width, device=dev)[None]
        write_pos = torch.where(t < lens[:, None], starts[:, None] + t, self._scratch)
        write_rows = torch.arange(rows, device=dev)[:, None].expand(rows, width)
        keys = _round_up(max(p.length for p in plans), 16)
        cos, sin = d.rope(positions.to(dev))
        hidden = d.forward(x, cos, sin, self._k_cache[:, row0 : row0 + rows], self._v_cache[:, row0 : row0 + rows],
                           write_rows, write_pos, d.causal_mask(starts, width, keys), keys)
        logits = d.logits(hidden[torch.arange(rows, device=dev), lens - 1])
        if seen is not None:  # before EOS suppression, in generate's order of logits processors
            logits = apply_repetition_penalty(logits, seen, settings.repetition_penalty)
        if settings.min_new_tokens > 0 and settings.eos_token_ids:
            logits[:, list(settings.eos_token_ids)] = float("-inf")
        self.stats["prefill_tokens"] += sum(lengths)
        self.stats["prefill_padded_tokens"] += rows * width
        return logits.argmax(-1)

    def _decode(self, ws: DecodeWorkspace, first: Any, plans: list[_Plan], settings: GenerationSettings,
                seen: Any = None) -> list[list[int]]:
        """Greedy decoding after the first token (``seen``: each row's prompt ids and first token,
        with a penalty); returns each row's tokens (EOS and after included)."""
        import torch

        dev = self.device
        rows = len(plans)
        owner: list[Optional[int]] = list(range(rows))  # prompt row held by each workspace row
        results: list[list[int]] = [[] for _ in range(rows)]
        ws.load(first, torch.tensor([p.length for p in plans], device=dev),
                torch.tensor([p.next_position for p in plans], device=dev), 1, settings.min_new_tokens, seen)
        ws.out[:, 0] = first
        eos = torch.tensor(list(settings.eos_token_ids) or [-1], device=dev)
        step = 1
        while step < settings.max_new_tokens:
            n = min(settings.check_every, settings.max_new_tokens - step)
            ws.run(n)
            step += n
            self.stats["decode_steps"] += n
            self.stats["decode_row_steps"] += n * ws.rows
            if not settings.eos_token_ids:
                continue
            done = torch.isin(ws.out[:, :step], eos).any(1).tolist()
            live = [r for r in range(ws.rows) if owner[r] is not None and not done[r]]
            if len(live) == sum(o is not None for o in owner) and len(live) > ws.rows // 2:
                continue
            for r in range(ws.rows):
                if owner[r] is not None and done[r]:
                    results[owner[r]] = ws.out[r, :step].tolist()
                    owner[r] = None
            if not live:
                break
            if len(live) <= ws.rows // 2 and step < settings.max_new_tokens:
                ws, owner = self._compact(ws, live, owner, step, settings)
        for r, o in enumerate(owner):
            if o is not None:
                results[o] = ws.out[r, :step].tolist()
        return results

    def _compact(self, ws: DecodeWorkspace, live: list[int], owner: list[Optional[int]], step: int,
                 settings: GenerationSettings) -> tuple[DecodeWorkspace, list[Optional[int]]]:
        """Move the unfinished rows into the first rows of a smaller workspace."""
        import torch

        rows = 1 << (len(live) - 1).bit_length()  # next power of two: few distinct graphs
        small = self._workspace(rows, ws.keys, settings)
        index = torch.tensor(live + [live[-1]] * (rows - len(live)), device=self.device)
        for layer in range(self._k_cache.shape[0]):
            self._k_cache[layer, :rows] = self._k_cache[layer, index]
            self._v_cache[layer, :rows] = self._v_cache[layer, index]
        small.load(ws.tokens[index], ws.cache_pos[index], ws.rope_pos[index], step, settings.min_new_tokens,
                   None if ws.seen is None else ws.seen[index])
        small.out[:, :step] = ws.out[index, :step]
        self.stats["compactions"] += 1
        return small, [owner[r] for r in live] + [None] * (rows - len(live))

    def _now(self) -> float:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


def _length_order(plans: list[_Plan]) -> list[int]:
    """Prompt indices by length, a sharing group's members kept together (at its shortest length),
    so that decode batches hold similar lengths and a prefix is prefilled once per batch."""
    group_length: dict[Hashable, int] = {}
    for p in plans:
        if p.group is not None:
            group_length[p.group] = min(group_length.get(p.group, p.length), p.length)
    return sorted(range(len(plans)), key=lambda i: (
        group_length.get(plans[i].group, plans[i].length), plans[i].group is not None, str(plans[i].group),
        plans[i].length, i))


def _common_prefix(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _until_eos(tokens: list[int], eos: Sequence[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[:i]
    return tokens
