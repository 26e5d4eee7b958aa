"""Judge evaluators without a model: the catalogue, requirement checks, prompts per judge, and how a
backend's generation becomes a prediction (labels, scores with tau, errors, raw text)."""

import io

import pytest
from PIL import Image

from pigbench.evaluator import RequirementError
from pigbench.judging.backend import Backend, Generation
from pigbench.protocol import Episode, ImageRef, Label, ReferencePair, Target
from pigbench.registry import evaluators

JUDGES = ["qwen2-vl-judge", "llava-ov-judge", "openai-judge", "unifiedreward", "unifiedreward-think"]


class Scripted(Backend):
    """Returns the given generations in order and records what it was asked."""

    def __init__(self, *generations):
        self.generations, self.calls = list(generations), []

    def generate(self, prompts, params):
        self.calls.append((prompts, params))
        return [self.generations.pop(0) for _ in prompts]

    def provenance(self):
        return {"model": "scripted"}


def ref(name):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return ImageRef(name, buf.getvalue())


EPISODE = Episode("u", (ReferencePair("old prompt", ref("p"), ref("r")),),
                  Target("s", "new prompt", ref("a"), ref("b"), Label.INVALID))


def make(name, backend, **options):
    cls = evaluators.get(name)
    judge = cls(cls.Config.from_options(options))
    judge.backend = backend
    return judge


@pytest.mark.parametrize("name", JUDGES)
def test_catalogue_entries(name):
    cls = evaluators.get(name)
    assert cls.kind in ("judge", "reasoning") and cls.description
    assert cls.uses_references == (name not in ("unifiedreward", "unifiedreward-think"))
    assert cls.Config().model_path


@pytest.mark.parametrize("name, images", [("qwen2-vl-judge", ["p", "r", "a", "b"]), ("unifiedreward", ["a", "b"]),
                                          ("unifiedreward-think", ["a", "b"])])
def test_each_judge_prompt_holds_its_images(name, images):
    backend = Scripted(Generation("<answer>A</answer>"))
    make(name, backend).predict([EPISODE])
    prompt, params = backend.calls[0][0][0], backend.calls[0][1]
    assert [r.id for r in prompt.images] == images
    assert any("new prompt" in p.value for p in prompt.parts if p.type == "text")
    assert params.max_new_tokens == {"qwen2-vl-judge": 16, "unifiedreward": 512, "unifiedreward-think": 2048}[name]
    assert params.images.size == (512 if name == "unifiedreward-think" else 0)


def test_reasoning_raises_the_default_length():
    backend = Scripted(Generation("x"))
    make("qwen2-vl-judge", backend, reason="true").predict([EPISODE])
    assert backend.calls[0][1].max_new_tokens == 1024


def test_generation_to_prediction():
    backend = Scripted(Generation("I choose <answer>Image B</answer>"), Generation("no idea"),
                       Generation(None, error="HTTP 401 from http://x/v1: bad key"))
    ok, garbage, failed = make("qwen2-vl-judge", backend).predict([EPISODE] * 3)
    assert (ok.label, ok.raw_text, ok.extra["parse"]) == (Label.B, "I choose <answer>Image B</answer>", "tag")
    assert garbage.label == Label.INVALID and garbage.error is None and garbage.raw_text == "no idea"
    assert "unrecognized answer" in garbage.extra["invalid_reason"]
    assert failed.label == Label.INVALID and failed.error.startswith("HTTP 401")


def test_an_output_cut_at_the_token_limit_counts_only_with_an_explicit_answer():
    cut = "The user likes warm tones.\nImage A uses warm tones, while"
    backend = Scripted(Generation(cut, truncated=True), Generation("<answer>B</answer> since the user", truncated=True),
                       Generation(cut))
    lost, kept, whole = make("qwen2-vl-judge", backend, reason="true").predict([EPISODE] * 3)
    assert (lost.label, lost.raw_text, lost.error) == (Label.INVALID, cut, None)
    assert lost.extra["invalid_reason"] == "output cut at max_new_tokens before its answer" and lost.extra["truncated"]
    assert (kept.label, kept.extra["parse"], kept.extra["truncated"]) == (Label.B, "tag", True)
    assert whole.label == Label.A and "truncated" not in whole.extra  # ended on its own: the last line answers


@pytest.mark.parametrize("output, tolerant, reason", [
    ("<think>Image 1: 31, Image 2: 28</think>\nImage 1 is better", Label.A, "no <answer> block"),
    ("<think>totals</think><answer>Both images are equally good</answer>", Label.TIE, "tie is not an answer option"),
])
def test_unifiedreward_think_follows_its_published_parse_rule(output, tolerant, reason):
    """unifiedreward-think: no <answer> block, or a tie, is INVALID; the generic judges stay tolerant."""
    think, generic = (make(name, Scripted(Generation(output))).predict([EPISODE])[0]
                      for name in ("unifiedreward-think", "qwen2-vl-judge"))
    assert (think.label, think.raw_text) == (Label.INVALID, output)
    assert think.extra["invalid_reason"].startswith(reason)
    assert generic.label == tolerant


@pytest.mark.parametrize("output, official, tolerant", [
    ("Image 1 is better in alignment.\nImage 2 is better.", Label.INVALID, Label.B),
    ("Image 2 is better overall.\nThat is my assessment.", Label.B, Label.INVALID),
    ("Image 1 is slightly better in colour.\nImage 2 is better.", Label.B, Label.B),
    ("The user would pick it.\n<answer>A</answer>", Label.INVALID, Label.A),
    ("Image 2 is worse than Image 1.", Label.INVALID, Label.A),
])
def test_unifiedreward_reads_its_published_conclusions_only(output, official, tolerant):
    """unifiedreward: exactly one of its conclusion strings anywhere gives the label, none or two are
    INVALID (evaluators spec, UnifiedReward parse; the official substring test); the generic judges
    read tags and the last line."""
    ur, generic = (make(name, Scripted(Generation(output))).predict([EPISODE])[0]
                   for name in ("unifiedreward", "qwen2-vl-judge"))
    assert (ur.label, generic.label) == (official, tolerant)
    assert ur.raw_text == output and (ur.label == Label.INVALID) == ("invalid_reason" in ur.extra)


def test_probability_scoring_uses_tau_and_falls_back_to_the_text():
    backend = Scripted(Generation("<answer>A</answer>", {"A": 0.55, "B": 0.45}),
                       Generation("<answer>B</answer>", {"A": 0.9, "B": 0.1}),
                       Generation("<answer>B</answer>", None))
    close, clear, missing = make("qwen2-vl-judge", backend, scoring="probs", tie_threshold="0.2").predict([EPISODE] * 3)
    assert backend.calls[0][1].options == ("A", "B")
    assert (close.label, close.score_a, close.score_b) == (Label.TIE, 0.55, 0.45)
    assert clear.label == Label.A  # the probabilities decide, not the text
    assert missing.label == Label.B and missing.score_a is None and "probs_missing" in missing.extra




def test_an_answer_read_from_probabilities_is_not_counted_unparseable():
    """With scoring=probs an answer token after <answer> gives the label even when the text does not
    parse (cut before </answer>); answer_quality still counted it as an unparseable answer."""
    from pigbench.results import answer_quality

    backend = Scripted(Generation("<answer>A", {"A": 0.8, "B": 0.2}, truncated=True),
                       Generation("no verdict", None))
    read, unread = make("qwen2-vl-judge", backend, scoring="probs").predict([EPISODE] * 2)
    assert read.label == Label.A and "invalid_reason" not in read.extra
    assert unread.label == Label.INVALID and unread.extra["invalid_reason"]
    quality = answer_quality([{"prediction": p.to_json()} for p in (read, unread)])
    assert quality["unparseable"] == 1 and list(quality["unparseable_reasons"]) == [unread.extra["invalid_reason"]]

@pytest.mark.parametrize("tau", ["0.5", "0.7", "inf"])
def test_probability_scoring_refuses_a_tau_that_ties_every_answer(tau):
    """|P(A) - 0.5| is at most 0.5, so tau >= 0.5 labelled every sample TIE; it was accepted."""
    qwen = evaluators.get("qwen2-vl-judge")
    config = qwen.Config.from_options({"scoring": "probs", "tie_threshold": tau, "backend": "openai", "base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(ValueError, match=r"^qwen2-vl-judge: option tie_threshold must be >= 0 and < 0.5 with scoring=probs"
                                         rf".*, got {tau}$"):
        qwen.check_requirements(config)
    qwen.check_requirements(qwen.Config.from_options({"scoring": "probs", "tie_threshold": "0.49", "backend": "openai",
                                                 "base_url": "http://127.0.0.1:9/v1"}))

def test_requirement_checks(tmp_path):
    qwen = evaluators.get("qwen2-vl-judge")
    with pytest.raises(ValueError, match="backend must be one of"):
        qwen.check_requirements(qwen.Config(backend="vllm"))
    with pytest.raises(ValueError, match="scoring must be one of"):
        qwen.check_requirements(qwen.Config(scoring="logits"))
    with pytest.raises(ValueError, match="option dtype must be one of auto, bfloat16, float16, float32, got 'bf16'"):
        qwen.check_requirements(qwen.Config(dtype="bf16"))  # was getattr(torch, "bf16") in setup: a traceback
    with pytest.raises(RequirementError, match="--model-path"):
        qwen.check_requirements(qwen.Config(model_path=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match=r"offer_tie=true with scoring=probs: .* --tie-threshold on P\(A\) - 0.5"):
        qwen.check_requirements(qwen.Config(scoring="probs", offer_tie=True))
    think = evaluators.get("unifiedreward-think")
    with pytest.raises(ValueError, match="single-token answers"):
        think.check_requirements(think.Config(scoring="probs"))


BAD_OPTIONS = [("max_retries", "-1", ">= 0"), ("timeout_s", "0", "> 0"), ("timeout_s", "-2.5", "> 0"),
               ("timeout_s", "nan", "> 0"), ("timeout_s", "inf", "> 0"), ("concurrency", "0", ">= 1"),
               ("concurrency", "-3", ">= 1"), ("max_new_tokens", "-1", ">= 0"), ("min_new_tokens", "-1", ">= 0"),
               ("temperature", "-0.5", ">= 0"), ("max_pixels", "-1", ">= 0"), ("image_size", "-512", ">= 0"),
               ("tie_threshold", "-0.1", ">= 0"), ("request_deadline_s", "0", "> 0"), ("request_deadline_s", "nan", "> 0")]


@pytest.mark.parametrize("name", JUDGES)
@pytest.mark.parametrize("option, value, rule", BAD_OPTIONS)
def test_out_of_range_options_are_refused_up_front(name, option, value, rule):
    cls = evaluators.get(name)
    config = cls.Config.from_options({option: value, "base_url": "http://127.0.0.1:9/v1"})
    with pytest.raises(ValueError, match=rf"^{name}: option {option} must be {rule}.*, got ") as info:
        cls.check_requirements(config)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["openai-judge", "unifiedreward"])
def test_edge_values_are_accepted(name):
    cls = evaluators.get(name)
    cls.check_requirements(cls.Config.from_options({
        "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "max_retries": "0", "timeout_s": "0.01",
        "concurrency": "1", "max_new_tokens": "0", "min_new_tokens": "16", "temperature": "0", "max_pixels": "0",
        "image_size": "0", "tie_threshold": "0"}))


def test_min_new_tokens_cannot_exceed_the_generation_length():
    cls = evaluators.get("openai-judge")
    local = {"base_url": "http://127.0.0.1:9/v1"}
    with pytest.raises(ValueError, match="min_new_tokens must be <= the generation length 16 .*, got 17"):
        cls.check_requirements(cls.Config(min_new_tokens=17, **local))
    with pytest.raises(ValueError, match="generation length 8 .*, got 9"):
        cls.check_requirements(cls.Config(min_new_tokens=9, max_new_tokens=8, **local))
    cls.check_requirements(cls.Config(min_new_tokens=1024, reason=True, **local))  # reasoning's default is 1024


def test_the_command_line_refuses_a_bad_option_before_running(tmp_path, monkeypatch, capsys):
    from pigbench.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", "x")
    code = main(["run", "--evaluator", "openai-judge", "--dataset", "demo", "--limit", "1", "--no-progress",
                 "--option", "base_url=http://127.0.0.1:9/v1", "--option", "max_retries=-1",
                 "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: openai-judge: option max_retries must be >= 0, got -1\n"
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no results, no request cache


def test_provenance_before_and_after_setup():
    cls = evaluators.get("llava-ov-judge")
    judge = cls()
    assert judge.provenance() == {"model": "llava-hf/llava-onevision-qwen2-7b-ov-hf", "backend": "local"}
    judge.backend = Scripted()
    assert judge.provenance() == {"model": "scripted"}


def test_probs_predictions_are_keyed_by_how_answer_probabilities_are_read():
    """Reading answer probabilities changed (a merged ">A" token counts): stored probs predictions
    must be made again, text ones not, and the served requests stay cached."""
    from pigbench.evaluator import Runtime
    from pigbench.judging.answer_probs import READING_VERSION

    cls = evaluators.get("qwen2-vl-judge")
    text, probs = (cls(cls.Config(scoring=s), Runtime(device="cpu")) for s in ("text", "probs"))
    for ev in (text, probs):
        ev.name = "qwen2-vl-judge"
    assert text.config_hash == text.config.hash("qwen2-vl-judge", cls.version)
    assert probs.config_hash == probs.config.hash("qwen2-vl-judge", f"{cls.version}+probs{READING_VERSION}")
    assert probs.config_hash != probs.config.hash("qwen2-vl-judge", cls.version)


# The published instructions, copied from CodeGoat24/UnifiedReward @ff6f5202 (evaluators spec,
# section 2): inference_qwen/image_generation/qwen_pair_rank_image_generation.py and
# UnifiedReward-Think/inference_qwen/image_generation/qwen_infer_cot_image_generation.py, with the
# caption "new prompt".
PUBLISHED = {
    "unifiedreward": (
        "You are given a text caption and two generated images based on that caption. Your task is to evaluate and "
        "compare these images based on two key criteria:\n1. Alignment with the Caption: Assess how well each image "
        "aligns with the provided caption. Consider the accuracy of depicted objects, their relationships, and "
        "attributes as described in the caption.\n2. Overall Image Quality: Examine the visual quality of each image, "
        "including clarity, detail preservation, color accuracy, and overall aesthetic appeal.\nCompare both images "
        "using the above criteria and select the one that better aligns with the caption while exhibiting superior "
        "visual quality.\nProvide a clear conclusion such as \"Image 1 is better.\", \"Image 2 is better.\" and "
        "\"Both images are equally good.\"\nYour task is provided as follows:\nText Caption: [new prompt]"
    ),
    "unifiedreward-think": (
        "Given a caption and two images generated based on this caption, please analyze in detail the two provided "
        "images. Evaluate them on various dimensions such as semantic consistency (how closely the image content "
        "aligns with the caption), aesthetics (composition, color usage, artistic expression), authenticity (realism "
        "and attention to detail), and any other factors you deem relevant. For each evaluation dimension, provide a "
        "score between 1-10 for both images (e.g., Image 1: 8/10, Image 2: 6/10) and provide a concise rationale for "
        "the score. Calculate the total score for each image by summing all dimension scores. Use a chain-of-thought "
        "process to detail your reasoning steps, and enclose all your detailed reasoning within <think> and </think> "
        "tags. Then, in the <answer> tag, output exactly one of the following strings: 'Image 1 is better' or "
        "'Image 2 is better' based on the total scores. No additional text is allowed in the <answer> section.\n\n"
        "Example output format:\n<think>\n1. Semantic consistency: Image 1 (9/10) - ...; Image 2 (7/10) - ...\n"
        "2. Aesthetics: Image 2 (8/10) - ...; Image 1 (8/10) - ...\n3. Authenticity: Image 1 (8/10) - ...; Image 2 "
        "(5/10) - ...\n[Additional dimensions if any]: Image 2 (8/10) - ...; Image 1 (6/10) - ...\nTotal score:\n"
        "Image 1: 9+8+8+6=31\nImage 2: 7+8+5+8=28\n</think>\n<answer>Image 1 is better</answer>\n**Note: In the "
        "example above, scores and the final answer are placeholders meant only to demonstrate the format. Your "
        "actual evaluation should be based on the quality of two given images.**\n\nYour task is provided as "
        "follows:\nText Caption: [new prompt]"
    ),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_unifiedreward_prompts_are_the_published_ones_word_for_word(name):
    """One user turn: image 1 (A), image 2 (B), then the published text; no system message."""
    backend = Scripted(Generation("Image 1 is better"))
    make(name, backend).predict([EPISODE])
    prompt = backend.calls[0][0][0]
    assert prompt.system is None
    assert [(p.type, p.value if p.type == "text" else p.value.id) for p in prompt.parts] == [
        ("image", "a"), ("image", "b"), ("text", PUBLISHED[name])]
