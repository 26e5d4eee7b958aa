"""``openai-judge``: GPT-4o (or any model behind an OpenAI-compatible server) asked which image this
user prefers, given the user's reference pairs (evaluators spec, section 4.3).

    export OPENAI_API_KEY=...            # read from the environment only, never stored
    pigbench run --evaluator openai-judge --dataset pickapic --reference-size 4
    pigbench run --evaluator openai-judge --model-path Qwen/Qwen2-VL-7B-Instruct \\
        --option base_url=http://gpu1:8000/v1,http://gpu2:8000/v1      # vLLM / SGLang servers

Images go as base64 data URLs, capped at ``max_pixels``. Responses are cached on disk, so a
resumed run pays for no request twice. ``scoring=probs`` uses the returned ``top_logprobs``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pigbench.judging.judge import ReferenceJudge, ReferenceJudgeConfig


@dataclass(frozen=True)
class OpenAIJudgeConfig(ReferenceJudgeConfig):
    model_path: str = "gpt-4o"
    backend: str = "openai"


class OpenAIJudge(ReferenceJudge):
    description = "GPT-4o (or any OpenAI-compatible server's model) judge conditioned on the user's reference pairs"
    needs = ("api-key", "network")
    Config = OpenAIJudgeConfig
