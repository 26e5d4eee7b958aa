"""The swap check's probe backends answer by their documented rules (pigbench.judging.probe_backends)."""

import pytest

from pigbench.judging.backend import GenerationParams
from pigbench.judging.messages import Prompt, image, text
from pigbench.judging.probe_backends import FirstImageProbe, SameImageProbe
from pigbench.protocol import ImageRef


def prompt(*ids):
    return Prompt((text("which is better?"), *(image(ImageRef(i, b"")) for i in ids)))


def test_the_first_image_probe_answers_a_and_counts_every_prompt():
    probe = FirstImageProbe()
    gens = probe.generate([prompt("r1", "x", "y"), prompt("y", "x")], GenerationParams())
    assert [g.text for g in gens] == ["Image 1 is better.\n<answer>A</answer>"] * 2 and gens[0].option_probs is None
    assert probe.answered == 2


@pytest.mark.parametrize("options, probs", [(("A", "B"), {"A": 0.9, "B": 0.1}),
                                            (("A", "B", "C"), {"A": 0.9, "B": 0.05, "C": 0.05})])
def test_with_answer_options_asked_the_answered_option_gets_probability_0_9(options, probs):
    (gen,) = FirstImageProbe().generate([prompt("x", "y")], GenerationParams(options=options))
    assert gen.option_probs == pytest.approx(probs)


def test_the_same_image_probe_prefers_the_image_whose_id_sorts_first_in_either_position():
    probe = SameImageProbe([("img-b", "img-a"), ("p", "q")])
    gens = probe.generate([prompt("ref", "img-b", "img-a"), prompt("ref", "img-a", "img-b"),
                           prompt("q", "p"), prompt("p", "q")], GenerationParams(options=("A", "B")))
    a, b = "Image 1 is better.\n<answer>A</answer>", "Image 2 is better.\n<answer>B</answer>"
    assert [g.text for g in gens] == [b, a, b, a]
    assert gens[0].option_probs == pytest.approx({"B": 0.9, "A": 0.1})
    assert probe.answered == 4
    (gen,) = probe.generate([prompt("img-a", "img-b", "img-a")], GenerationParams())  # also shown as a reference
    assert gen.text == b  # the targets' positions are their last ones


def test_the_same_image_probe_gives_no_answer_to_a_prompt_without_exactly_one_episodes_targets():
    probe = SameImageProbe([("a", "b"), ("c", "d")])
    gens = probe.generate([prompt("a", "x"), prompt("a", "b", "c", "d")], GenerationParams())
    assert [g.text for g in gens] == ["", ""] and probe.answered == 2


@pytest.mark.parametrize("name", ["qwen2-vl-judge", "unifiedreward", "unifiedreward-think"])
def test_every_built_in_parse_rule_reads_the_probe_answers(name):
    """UnifiedReward reads only its conclusion strings: a bare <answer>A</answer> left it unprobed."""
    from pigbench.protocol import Label
    from pigbench.registry import evaluators

    cls = evaluators.get(name)
    judge = cls(cls.Config())
    probe = SameImageProbe([("a", "b")])
    labels = [judge.parse(g).label for g in probe.generate([prompt("a", "b"), prompt("b", "a")], GenerationParams())]
    assert labels == [Label.A, Label.B]
