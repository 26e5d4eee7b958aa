"""Random-weight vision-language models with offline processors, for tests and benchmarks.

Nothing is downloaded. A byte-level BPE tokenizer is trained in memory on pigbench's bundled
PartiPrompts rows and the judge's own prompt text, plus the chat special tokens; image processors
come from their code defaults; the chat templates here are written for these stand-ins (real
checkpoints ship their own). The Qwen2-VL stand-in's template keeps images in place, the
LLaVA-OneVision one renders all images first, as the llava-hf templates do, so both of
:class:`~pigbench.judging.local_backend.LocalBackend`'s paths are exercised.

Speed does not depend on weight values, so the ``QWEN2_VL_7B`` shape times like the real model.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources
from typing import Any, Iterator

import torch

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>")
LLAVA_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")

QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAVA_TEMPLATE = (  # images first, then text: the layout of the llava-hf templates
    "{% for message in messages %}<|im_start|>{{ message['role'] }} "
    "{% for c in message['content'] | selectattr('type', 'equalto', 'image') %}<image>{% endfor %}"
    "{% for c in message['content'] | selectattr('type', 'equalto', 'text') %}\n{{ c['text'] }}{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen/Qwen2-VL-7B-Instruct's config.json dimensions (8.29B parameters).
QWEN2_VL_7B: dict[str, dict[str, Any]] = {
    "text": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rms_norm_eps=1e-6,
                 rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6}),
    "vision": dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4),
}
QWEN2_VL_TINY: dict[str, dict[str, Any]] = {
    "text": dict(vocab_size=0, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                                         "rope_theta": 10000.0}),
    "vision": dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2),
}


def _corpus() -> Iterator[str]:
    from pigbench.judging import messages

    with resources.files("pigbench").joinpath("data/partiprompts_simple_detail.tsv").open(encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            yield row["Prompt"]
    for tie in (False, True):
        for reason in (False, True):
            yield messages.answer_instruction(tie, reason)
    yield messages.ROLE_LINE
    yield "Preferred image: Rejected image: Image A: Image B: Past choice Prompt: <answer>A</answer> <answer>B</answer>"


@lru_cache(maxsize=8)
def tokenizer(specials: tuple[str, ...], vocab_size: int = 1024) -> Any:
    """A fast tokenizer: byte-level BPE trained on the corpus above, ``specials`` added, eos
    ``<|im_end|>``, pad ``<|endoftext|>``. Cached; callers must not mutate it beyond padding side."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def _build(model_cls: Any, config: Any, device: str, dtype: torch.dtype, seed: int) -> Any:
    torch.manual_seed(seed)
    with torch.device(device):
        return model_cls._from_config(config, dtype=dtype).eval()


def qwen2_vl(shape: dict[str, dict[str, Any]] = QWEN2_VL_TINY, device: str = "cpu", dtype: torch.dtype = torch.float32,
             vocab_size: int = 1024, seed: int = 0) -> tuple[Any, Any]:
    """(model, processor): a random Qwen2-VL of ``shape`` and an offline Qwen2-VL processor."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor
    from transformers import Qwen2VLVideoProcessor

    tok = tokenizer(QWEN_SPECIALS, vocab_size)
    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    text = {**shape["text"], "vocab_size": max(shape["text"]["vocab_size"], len(tok)),
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]}
    config = Qwen2VLConfig(text_config=text, vision_config=shape["vision"], image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"])
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
                                 tokenizer=tok, chat_template=QWEN_TEMPLATE)
    return _build(Qwen2VLForConditionalGeneration, config, device, dtype, seed), processor


def llava_onevision_tiny(device: str = "cpu", dtype: torch.dtype = torch.float32, image_size: int = 28,
                         seed: int = 0) -> tuple[Any, Any]:
    """(model, processor): a tiny random LLaVA-OneVision (SigLIP 14-px patches on ``image_size``
    crops, Qwen2 text) and its offline processor."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessor, LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    tok = tokenizer(LLAVA_SPECIALS)
    ids = {s: tok.convert_tokens_to_ids(s) for s in LLAVA_SPECIALS}
    s = image_size
    pinpoints = [[s, s], [s, 2 * s], [2 * s, s], [2 * s, 2 * s]]
    config = LlavaOnevisionConfig(
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=s, patch_size=14),
        image_token_index=ids["<image>"], video_token_index=ids["<video>"], vision_feature_select_strategy="full",
        image_grid_pinpoints=pinpoints,
    )
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size={"height": s, "width": s}, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size={"height": s, "width": s}),
        tokenizer=tok, chat_template=LLAVA_TEMPLATE, num_image_tokens=(s // 14) ** 2, vision_feature_select_strategy="full",
    )
    return _build(LlavaOnevisionForConditionalGeneration, config, device, dtype, seed), processor
