"""Built-in evaluators, registered lazily: importing this package imports no evaluator module.

Add a built-in by writing ``evaluators/<module>.py`` with a :class:`pigbench.evaluator.Evaluator`
subclass (heavy imports such as torch inside functions) and one line below. Third-party
evaluators use the ``pigbench.evaluators`` entry point group instead.
"""

from pigbench.registry import evaluators

for _name, _target in {
    "random": "pigbench.evaluators.random_choice:RandomChoice",
    "colorfulness": "pigbench.evaluators.colorfulness:Colorfulness",
    "color-reference": "pigbench.evaluators.color_reference:ColorReference",
    "ssim-reference": "pigbench.evaluators.ssim_reference:SSIMReference",
    "clipscore": "pigbench.evaluators.clipscore:CLIPScore",
    "aesthetics": "pigbench.evaluators.aesthetics:Aesthetics",
    "pickscore": "pigbench.evaluators.pickscore:PickScore",
    "hps-v2": "pigbench.evaluators.hps:HPSv2",
    "hps-v2.1": "pigbench.evaluators.hps:HPSv21",
    "imagereward": "pigbench.evaluators.imagereward:ImageReward",
    "mps": "pigbench.evaluators.mps:MPS",
    "clip-i": "pigbench.evaluators.clip_similarity:ClipI",
    "text-align": "pigbench.evaluators.clip_similarity:TextAlign",
    "dinoscore": "pigbench.evaluators.dinoscore:DINOScore",
    "qwen2-vl-judge": "pigbench.evaluators.qwen2_vl_judge:Qwen2VLJudge",
    "llava-ov-judge": "pigbench.evaluators.llava_ov_judge:LlavaOVJudge",
    "openai-judge": "pigbench.evaluators.openai_judge:OpenAIJudge",
    "unifiedreward": "pigbench.evaluators.unifiedreward:UnifiedReward",
    "unifiedreward-think": "pigbench.evaluators.unifiedreward_think:UnifiedRewardThink",
    "pigreward": "pigbench.evaluators.pigreward:PIGReward",
}.items():
    evaluators.register_lazy(_name, _target)
