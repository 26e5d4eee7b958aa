"""``unifiedreward-think``: UnifiedReward-Think, reference-free, with its published prompt.

Model ``CodeGoat24/UnifiedReward-Think-qwen-7b`` (Qwen2.5-VL-7B). One user turn: image 1, image 2,
then the published instruction: score dimensions 1-10 for both images inside ``<think>...</think>``,
then exactly "Image 1 is better" or "Image 2 is better" inside ``<answer>...</answer>`` (no tie
option). Images are resized to 512x512 as in the official GenAI-Bench evaluation; greedy decoding
with 2048 new tokens (the published 512 truncates long reasoning). Parsed by the published rule
(:func:`~pigbench.judging.parsing.parse_tagged_answer`): the last ``<answer>`` block outside
``<think>`` gives A or B; an output without one (no last-line fallback), one whose answer says tie,
or one cut inside its reasoning is INVALID.

Source of the prompt: CodeGoat24/UnifiedReward
``UnifiedReward-Think/inference_qwen/image_generation/qwen_infer_cot_image_generation.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pigbench.judging.backend import Generation
from pigbench.judging.judge import Judge, JudgeConfig
from pigbench.judging.messages import Prompt, image, text
from pigbench.judging.parsing import ParsedAnswer, parse_tagged_answer
from pigbench.protocol import Episode

INSTRUCTION = (
    "Given a caption and two images generated based on this caption, please analyze in detail the two provided "
    "images. Evaluate them on various dimensions such as semantic consistency (how closely the image content aligns "
    "with the caption), aesthetics (composition, color usage, artistic expression), authenticity (realism and "
    "attention to detail), and any other factors you deem relevant. For each evaluation dimension, provide a score "
    "between 1-10 for both images (e.g., Image 1: 8/10, Image 2: 6/10) and provide a concise rationale for the "
    "score. Calculate the total score for each image by summing all dimension scores. Use a chain-of-thought process "
    "to detail your reasoning steps, and enclose all your detailed reasoning within <think> and </think> tags. Then, "
    "in the <answer> tag, output exactly one of the following strings: 'Image 1 is better' or 'Image 2 is better' "
    "based on the total scores. No additional text is allowed in the <answer> section.\n\n"
    "Example output format:\n<think>\n"
    "1. Semantic consistency: Image 1 (9/10) - ...; Image 2 (7/10) - ...\n"
    "2. Aesthetics: Image 2 (8/10) - ...; Image 1 (8/10) - ...\n"
    "3. Authenticity: Image 1 (8/10) - ...; Image 2 (5/10) - ...\n"
    "[Additional dimensions if any]: Image 2 (8/10) - ...; Image 1 (6/10) - ...\n"
    "Total score:\nImage 1: 9+8+8+6=31\nImage 2: 7+8+5+8=28\n</think>\n"
    "<answer>Image 1 is better</answer>\n"
    "**Note: In the example above, scores and the final answer are placeholders meant only to demonstrate the "
    "format. Your actual evaluation should be based on the quality of two given images.**\n\n"
    "Your task is provided as follows:\nText Caption: [{prompt}]"
)


@dataclass(frozen=True)
class UnifiedRewardThinkConfig(JudgeConfig):
    model_path: str = "CodeGoat24/UnifiedReward-Think-qwen-7b"
    max_pixels: int = 0
    image_size: int = 512


class UnifiedRewardThink(Judge):
    kind = "reasoning"
    description = "UnifiedReward-Think (Qwen2.5-VL-7B) with its published reasoning prompt; reference-free"
    Config = UnifiedRewardThinkConfig
    default_max_new_tokens = 2048
    # 3: an answer block with "cannot decide" then one claim for one side, or "A is better", is that side
    # (was a tie, INVALID here), and one whose verdicts "cannot decide" concludes is a tie (INVALID here);
    # its parse rule offers no tie, so Judge versions 3 and 4 ("cannot decide") changed nothing here
    version = "3"

    def build_prompt(self, episode: Episode) -> Prompt:
        t = episode.target
        return Prompt((image(t.image_a), image(t.image_b), text(INSTRUCTION.format(prompt=t.prompt))))

    def parse(self, gen: Generation) -> ParsedAnswer:
        return parse_tagged_answer(gen.text, truncated=gen.truncated)
