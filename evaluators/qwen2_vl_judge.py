"""``qwen2-vl-judge``: Qwen2-VL-7B-Instruct asked which image this user prefers, given the user's
reference pairs ("w/ Reference" baseline; evaluators spec, sections 4.1 and 4.3).

Loads ``Qwen/Qwen2-VL-7B-Instruct`` (or ``--model-path``: any Qwen2-VL / Qwen2.5-VL checkpoint)
with ``AutoModelForImageTextToText`` + ``AutoProcessor``; bf16 on CUDA. Each image is capped at
``max_pixels`` (default 256 visual tokens) through the processor's ``size``. Greedy, 16 new tokens
(1024 with ``reason=true``); ``scoring=probs`` gives P(A) vs P(B) and a tie threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

from pigbench.judging.judge import ReferenceJudge, ReferenceJudgeConfig


@dataclass(frozen=True)
class Qwen2VLJudgeConfig(ReferenceJudgeConfig):
    model_path: str = "Qwen/Qwen2-VL-7B-Instruct"


class Qwen2VLJudge(ReferenceJudge):
    description = "Qwen2-VL-7B-Instruct judge conditioned on the user's reference pairs (local or served)"
    Config = Qwen2VLJudgeConfig
