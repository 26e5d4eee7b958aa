"""Judge prompts (interleaved parts), image sizing for upload, and answer-token probabilities."""

import io
import math

import pytest
from PIL import Image

from pigbench.judging.answer_probs import option_probs_after_marker, option_spellings, options_from_top_logprobs
from pigbench.judging.messages import ROLE_LINE, ImagePolicy, encode_image, load_image, reference_prompt
from pigbench.protocol import Episode, ImageError, ImageRef, Label, ReferencePair, Target


def png(name: str, size=(40, 30), color=(200, 10, 10)) -> ImageRef:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return ImageRef(name, buf.getvalue())


def episode(k: int = 2) -> Episode:
    refs = tuple(ReferencePair(f"ref prompt {i}", png(f"p{i}"), png(f"r{i}")) for i in range(k))
    return Episode("u1", refs, Target("s1", "a red fox", png("a"), png("b"), Label.INVALID))


def rendered(prompt) -> list[str]:
    return [p.value if p.type == "text" else f"<{p.value.id}>" for p in prompt.parts]


def test_reference_prompt_reads_in_order():
    parts = rendered(reference_prompt(episode(2)))
    assert parts[0] == ROLE_LINE
    i = parts.index("Past choice 1. Prompt: ref prompt 0")
    assert parts[i : i + 5] == ["Past choice 1. Prompt: ref prompt 0", "Preferred image:", "<p0>", "Rejected image:", "<r0>"]
    j = parts.index("Prompt: a red fox")
    assert j > parts.index("<r1>")
    assert parts[j : j + 5] == ["Prompt: a red fox", "Image A:", "<a>", "Image B:", "<b>"]
    assert parts[-1].endswith("exactly one of <answer>A</answer> or <answer>B</answer>.")
    assert [r.id for r in reference_prompt(episode(2)).images] == ["p0", "r0", "p1", "r1", "a", "b"]


def test_every_reference_is_shown_in_order():
    """All K references reach the judge, each with its own preferred and rejected image (no cap)."""
    parts = rendered(reference_prompt(episode(9)))
    assert "Here are 9 of this user's past choices." in parts[1]
    assert [p for p in parts if p.startswith("Past choice")] == [f"Past choice {i + 1}. Prompt: ref prompt {i}" for i in range(9)]
    assert [r.id for r in reference_prompt(episode(9)).images] == [f"{s}{i}" for i in range(9) for s in "pr"] + ["a", "b"]


def test_tie_and_reasoning_variants():
    tie = rendered(reference_prompt(episode(1), offer_tie=True, reason=True))[-1]
    assert "<answer>Tie</answer>" in tie and tie.startswith("Which") and "First explain briefly" in tie
    assert "<answer>Tie</answer>" not in rendered(reference_prompt(episode(1)))[-1]


def test_no_references_still_gives_the_target():
    prompt = reference_prompt(episode(0))
    assert [r.id for r in prompt.images] == ["a", "b"]
    assert not any("Past choice" in p for p in rendered(prompt))


@pytest.mark.parametrize("policy, expected", [
    (ImagePolicy(), (400, 300)),
    (ImagePolicy(max_pixels=400 * 300), (400, 300)),
    (ImagePolicy(max_pixels=100 * 75), (100, 75)),
    (ImagePolicy(max_pixels=10, size=64), (64, 64)),
])
def test_image_policy_sizes(policy, expected):
    assert policy.target_size(400, 300) == expected
    assert policy.apply(Image.new("RGB", (400, 300))).size == expected


def test_encode_image_keeps_original_bytes_unless_resized():
    buf = io.BytesIO()
    Image.new("RGB", (80, 60), (1, 2, 3)).save(buf, format="JPEG")
    ref = ImageRef("j", buf.getvalue())
    assert encode_image(ref, ImagePolicy()) == ("image/jpeg", buf.getvalue())
    mime, data = encode_image(ref, ImagePolicy(max_pixels=40 * 30))
    assert mime == "image/png" and Image.open(io.BytesIO(data)).size == (40, 30)


@pytest.mark.parametrize("policy", [ImagePolicy(max_pixels=40 * 30), ImagePolicy(size=8)])
def test_encode_image_decodes_an_image_it_resizes_once(monkeypatch, policy):
    """It used to decode the file to probe it, then again (load_image) to resize it."""
    buf = io.BytesIO()
    Image.effect_noise((80, 60), 60).convert("RGB").save(buf, format="JPEG")
    ref = ImageRef("j", buf.getvalue())
    expected = io.BytesIO()
    load_image(ref, policy).save(expected, format="PNG")
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **kw: opened.append(1) or real_open(*a, **kw))
    assert encode_image(ref, policy) == ("image/png", expected.getvalue()) and len(opened) == 1


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF"])
def test_encode_image_refuses_a_truncated_file_whose_header_opens(fmt):
    """Half a file opens (Pillow reads headers only), so it used to be uploaded as it was: the local
    judges and every other evaluator fail that image, a served judge answered on the broken bytes
    (or got an HTTP 400 naming no image)."""
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buf, format=fmt)
    ref = ImageRef("half-" + fmt, buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match=f"half-{fmt}.*truncated"):
        encode_image(ref, ImagePolicy())


def test_an_animated_image_is_uploaded_as_its_first_frame():
    """Local judges see an animation's first frame; hosted APIs take only still GIFs, so the file
    itself is not sent. A still GIF keeps its bytes."""
    buf = io.BytesIO()
    red, blue = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    red.save(buf, format="GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    mime, sent = encode_image(ImageRef("anim", buf.getvalue()), ImagePolicy())
    assert mime == "image/png" and Image.open(io.BytesIO(sent)).convert("RGB").getpixel((8, 8)) == (255, 0, 0)
    still = io.BytesIO()
    red.save(still, format="GIF")
    assert encode_image(ImageRef("still", still.getvalue()), ImagePolicy()) == ("image/gif", still.getvalue())


def test_judges_see_rgba_images_over_white_as_qwen_vl_utils_lays_them():
    """Transparent pixels hold red: qwen-vl-utils (and transformers 5's processors) show white there;
    the scalar rewards' recipes (Pillow's convert) keep the red."""
    img = Image.new("RGBA", (4, 2), (255, 0, 0, 0))
    img.putpixel((0, 0), (0, 0, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    ref = ImageRef("t", buf.getvalue())
    seen = load_image(ref, ImagePolicy())
    assert seen.mode == "RGB" and seen.getpixel((0, 0)) == (0, 0, 255) and seen.getpixel((1, 0)) == (255, 255, 255)
    assert ref.open().getpixel((1, 0)) == (255, 0, 0)
    _, sent = encode_image(ref, ImagePolicy(size=8))  # resized for upload: what the judge sees
    assert Image.open(io.BytesIO(sent)).convert("RGB").getpixel((7, 1)) == (255, 255, 255)
    mime, sent = encode_image(ref, ImagePolicy())  # not resized (unifiedreward's max_pixels=0): still over white
    assert mime == "image/png" and Image.open(io.BytesIO(sent)).convert("RGB").getpixel((1, 0)) == (255, 255, 255)


def lp(**probs):
    return {k: math.log(v) for k, v in probs.items()}


def test_option_probs_at_the_token_after_the_last_marker():
    tokens = ["Maybe", " <", "answer", ">", "B", "</answer>", " no:", "<answer>", " ", "A", "</answer>"]
    steps = [lp(A=0.5, B=0.5)] * 9 + [lp(A=0.6, B=0.2), lp(A=0.01)]
    probs = option_probs_after_marker(tokens, steps, "<answer>", ("A", "B"))
    assert probs == pytest.approx({"A": 0.75, "B": 0.25})


def test_option_probs_marker_spelling_and_a_whitespace_tail():
    """The marker matches in any case and with inner whitespace ("< Answer >"); a token that ends the
    marker with only whitespace after it (">\n") is not the answer step."""
    tokens = ["< ", "Answer", " >\n", "B", "</answer>"]
    steps = [lp(A=0.5, B=0.5), lp(A=0.5, B=0.5), lp(A=0.9, B=0.1), lp(A=0.2, B=0.6), lp(A=0.5, B=0.5)]
    assert option_probs_after_marker(tokens, steps, "<answer>", ("A", "B")) == pytest.approx({"A": 0.25, "B": 0.75})


def test_option_probs_missing_cases():
    assert option_probs_after_marker(["A"], [lp(A=1.0)], "<answer>", ("A", "B")) is None  # no marker
    assert option_probs_after_marker(["<answer>"], [lp(A=1.0)], "<answer>", ("A", "B")) is None  # nothing after
    assert option_probs_after_marker(["<answer>", "C"], [{}, {}], "<answer>", ("A", "B")) is None  # zero mass


def test_top_logprobs_variants_are_summed_and_others_ignored():
    top = [{"token": "A", "logprob": math.log(0.5)}, {"token": " A", "logprob": math.log(0.2)},
           {"token": "B", "logprob": math.log(0.1)}, {"token": "C", "logprob": 0.0}, {"bad": 1}]
    got = options_from_top_logprobs(top, ("A", "B"), "<answer>")
    assert {k: math.exp(v) for k, v in got.items()} == pytest.approx({"A": 0.7, "B": 0.1})


def test_an_option_is_spelled_bare_spaced_and_merged_with_every_end_of_the_marker():
    """Down to the whole marker: a tokenizer with "<answer>A" as one token answers with it."""
    assert option_spellings("A", "<answer>") == ["A", " A", ">A", "r>A", "er>A", "wer>A", "swer>A", "nswer>A",
                                                 "answer>A", "<answer>A"]


def test_an_answer_token_merged_with_the_markers_end_counts_for_its_option():
    """A server's tokenizer may emit "<answer" then ">A": the answer step's candidates are ">A" and
    ">B"; reading only "A" and "B" there gave P(A) = 1 from a stray 0.01."""
    steps = [[{"token": "<answer", "logprob": 0.0}],
             [{"token": ">A", "logprob": math.log(0.6)}, {"token": ">B", "logprob": math.log(0.3)},
              {"token": "A", "logprob": math.log(0.01)}, {"token": ">", "logprob": math.log(0.05)}],
             [{"token": "</answer>", "logprob": 0.0}]]
    per_step = [options_from_top_logprobs(top, ("A", "B"), "<answer>") for top in steps]
    probs = option_probs_after_marker(["<answer", ">A", "</answer>"], per_step, "<answer>", ("A", "B"))
    assert probs == pytest.approx({"A": 0.61 / 0.91, "B": 0.3 / 0.91})
