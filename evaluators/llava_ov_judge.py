"""``llava-ov-judge``: LLaVA-OneVision-7B ("ov", the multi-image checkpoint) asked which image this
user prefers, given the user's reference pairs (evaluators spec, sections 4.2 and 4.3).

Loads ``llava-hf/llava-onevision-qwen2-7b-ov-hf`` with ``AutoModelForImageTextToText`` +
``AutoProcessor``. Its shipped chat template renders all images before the text; the local
backend detects this and inlines the ``<image>`` tokens so references stay interleaved. A server
(``backend=openai``) applies the template itself, so there every image comes before the text:
serve it with a chat template that interleaves (vLLM's ``--chat-template``) to match. With
several images per sample each image costs the base 729 tokens (no anyres tiling).
"""

from __future__ import annotations

from dataclasses import dataclass

from pigbench.judging.judge import ReferenceJudge, ReferenceJudgeConfig


@dataclass(frozen=True)
class LlavaOVJudgeConfig(ReferenceJudgeConfig):
    model_path: str = "llava-hf/llava-onevision-qwen2-7b-ov-hf"


class LlavaOVJudge(ReferenceJudge):
    description = "LLaVA-OneVision-7B (ov) judge conditioned on the user's reference pairs (local or served)"
    Config = LlavaOVJudgeConfig
