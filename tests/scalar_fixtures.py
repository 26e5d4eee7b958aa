"""Tiny random-weight models, tokenizers, images and episodes for the scalar/similarity evaluator tests.

Everything is written to a temporary folder and loaded through the evaluators' real loading code
(``from_pretrained`` on a local folder, checkpoint files), so no test touches the network.
"""

from __future__ import annotations

import os
import string
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from pigbench.evaluator import ScalarEvaluator, ScoreRequest
from pigbench.protocol import Episode, ImageRef, Label, ReferencePair, Target

def requests_scored(ev: ScalarEvaluator) -> list[ScoreRequest]:
    """The list of every request ``ev.score`` is passed from now on (wrapped on the instance)."""
    seen: list[ScoreRequest] = []
    score = ev.score

    def recording(requests: Sequence[ScoreRequest]) -> Sequence[float]:
        seen.extend(requests)
        return score(requests)

    ev.score = recording  # type: ignore[method-assign]
    return seen


IMAGE_SIZES = [(45, 37), (37, 46), (64, 48), (50, 50), (33, 71), (80, 41), (47, 52), (90, 35)]


def write_images(folder: Path, sizes: Sequence[tuple[int, int]] = IMAGE_SIZES, seed: int = 0) -> list[ImageRef]:
    """Smooth random RGB images of the given (width, height), PNG except every third (JPEG)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    refs = []
    for i, (w, h) in enumerate(sizes):
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
        noise = rng.integers(-20, 21, size=(h, w, 3))
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.int64) + noise, 0, 255).astype(np.uint8))
        path = folder / (f"img{i}.jpg" if i % 3 == 2 else f"img{i}.png")
        img.save(path, quality=95) if path.suffix == ".jpg" else img.save(path)
        refs.append(ImageRef(f"img{i}", path))
    return refs


def clip_tokenizer(folder: Path):
    """A character-level CLIP tokenizer (no merges) saved to ``folder``; 86 tokens, EOS = pad = 85."""
    from transformers import CLIPTokenizer

    chars = list(string.ascii_lowercase + string.digits + ".,!?'-")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    tok.save_pretrained(folder)
    return tok


def tiny_clip_config(projection_dim: int = 16, image_size: int = 32):
    from transformers import CLIPConfig

    return CLIPConfig(
        text_config=dict(vocab_size=86, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=84, eos_token_id=85,
                         pad_token_id=85),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=projection_dim,
    )


def clip_image_processor(folder: Path, resize: int = 32, crop: int = 32) -> None:
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    CLIPImageProcessorPil(size={"shortest_edge": resize}, crop_size={"height": crop, "width": crop}).save_pretrained(folder)


def tiny_clip_dir(folder: Path, seed: int = 0, projection_dim: int = 16):
    """A local HF CLIP folder (model, tokenizer, image processor); returns the model in eval mode."""
    from transformers import CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(tiny_clip_config(projection_dim)).eval()
    model.save_pretrained(folder)
    clip_tokenizer(folder)
    clip_image_processor(folder)
    return model


def bert_tokenizer(folder: Path):
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "a photo of dog cat red blue the on in tree house sky".split() + ["##s"]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizer(str(folder / "vocab.txt"))
    tok.save_pretrained(folder)
    return tok


def episode(user: str, sid: str, prompt: str, a: ImageRef, b: ImageRef,
            refs: Sequence[tuple[str, ImageRef, ImageRef]] = (), gold: Label = Label.A) -> Episode:
    return Episode(user, tuple(ReferencePair(p, pref, rej) for p, pref, rej in refs), Target(sid, prompt, a, b, gold))


PROMPTS = ["a red dog on the tree", "a blue cat", "the house in the sky", "a photo of a dog!"]


def standard_episodes(images: Sequence[ImageRef], with_refs: bool = False) -> list[Episode]:
    """Four episodes over eight images; image 0 and 1 recur across episodes and as references."""
    refs = [(PROMPTS[2], images[4], images[5]), (PROMPTS[3], images[0], images[6])] if with_refs else []
    return [
        episode("u1", "s1", PROMPTS[0], images[0], images[1], refs),
        episode("u1", "s2", PROMPTS[1], images[2], images[3], refs),
        episode("u2", "s3", PROMPTS[0], images[1], images[7], refs[:1]),
        episode("u2", "s4", PROMPTS[2], images[0], images[2], refs[:1]),
    ]


def run_predict(evaluator, episodes: Sequence[Episode]) -> list[tuple[Optional[float], Optional[float]]]:
    preds = evaluator.predict([ep.without_gold() for ep in episodes])
    return [(p.score_a, p.score_b) for p in preds]


def run_in_triton_interpreter(script: str, timeout: int = 300) -> None:
    """Run ``script`` (dedented; it prints ``ok`` once its checks pass) in a child process with
    Triton's CPU interpreter: TRITON_INTERPRET must be set before Triton is imported."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def kernel_running(monkeypatch, kernel, fn) -> None:
    """Make ``kernel`` (a :class:`pigbench.triton_kernel.TritonKernel`) usable on CPU tensors, not
    failed yet, and running ``fn`` in place of its Triton code."""
    from pigbench import triton_kernel

    monkeypatch.setattr(triton_kernel, "interpreting", lambda: True)
    monkeypatch.setattr(kernel, "kernel", fn)
    monkeypatch.setattr(kernel, "failure", None)
