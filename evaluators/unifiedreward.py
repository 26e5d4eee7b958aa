"""``unifiedreward``: UnifiedReward pairwise ranking, reference-free, with its published prompt.

Model ``CodeGoat24/UnifiedReward-qwen-7b`` (Qwen2.5-VL-7B; the 3b/32b/72b and 2.0 variants load the
same way). One user turn: image 1, image 2, then the published instruction ending with
``Text Caption: [prompt]``; greedy, 512 new tokens; images at the processor's own budget
(``max_pixels=0``), as published. The answer is one of "Image 1 is better.", "Image 2 is better.",
"Both images are equally good."; read by the published rule
(:func:`~pigbench.judging.parsing.parse_conclusion`, the official evaluation's substring test):
exactly one of these conclusions present gives A, B or TIE; none, two different ones, or an output
cut at ``max_new_tokens`` is INVALID.
The LLaVA-based ``CodeGoat24/UnifiedReward-7b`` needs the original LLaVA code and is not supported.

Source of the prompt: CodeGoat24/UnifiedReward ``inference_qwen/image_generation/qwen_pair_rank_image_generation.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pigbench.judging.backend import Generation
from pigbench.judging.judge import Judge, JudgeConfig
from pigbench.judging.messages import Prompt, image, text
from pigbench.judging.parsing import ParsedAnswer, parse_conclusion
from pigbench.protocol import Episode

INSTRUCTION = (
    "You are given a text caption and two generated images based on that caption. Your task is to evaluate and "
    "compare these images based on two key criteria:\n"
    "1. Alignment with the Caption: Assess how well each image aligns with the provided caption. Consider the "
    "accuracy of depicted objects, their relationships, and attributes as described in the caption.\n"
    "2. Overall Image Quality: Examine the visual quality of each image, including clarity, detail preservation, "
    "color accuracy, and overall aesthetic appeal.\n"
    "Compare both images using the above criteria and select the one that better aligns with the caption while "
    "exhibiting superior visual quality.\n"
    'Provide a clear conclusion such as "Image 1 is better.", "Image 2 is better." and "Both images are equally good."\n'
    "Your task is provided as follows:\n"
    "Text Caption: [{prompt}]"
)


@dataclass(frozen=True)
class UnifiedRewardConfig(JudgeConfig):
    model_path: str = "CodeGoat24/UnifiedReward-qwen-7b"
    max_pixels: int = 0


class UnifiedReward(Judge):
    description = "UnifiedReward (Qwen2.5-VL-7B) pairwise rank with its published prompt; reference-free"
    Config = UnifiedRewardConfig
    # 7: read by its published rule only (parse_conclusion: exactly one of its conclusion strings, as
    # written, anywhere); the shared tolerant parser read tags, brackets, the last line and loose
    # comparatives ("Image 1 is slightly better", "I prefer Image 2") too, and a truncated output was
    # read from explicit tags; 6: Judge version 5 ("cannot decide" then one claim for one side, "A is better");
    # 5: its one conclusion beats a loose tie word on the last line, "cannot decide" beside one named
    # image is no tie; 4: "cannot decide" is a tie;
    # 3: a loose tie word ("equally sharp") no longer voids a verdict stated mid-text
    version = "7"
    default_max_new_tokens = 512

    def build_prompt(self, episode: Episode) -> Prompt:
        t = episode.target
        return Prompt((image(t.image_a), image(t.image_b), text(INSTRUCTION.format(prompt=t.prompt))))

    def parse(self, gen: Generation) -> ParsedAnswer:
        return parse_conclusion(gen.text, truncated=gen.truncated)
