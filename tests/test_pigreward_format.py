"""PIGReward's output format: strict parsing, violations, contradictions; the parser never raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pigbench.judging.backend import Generation
from pigbench.pigreward.config import PIGRewardConfig
from pigbench.pigreward.context_cache import UserContextCache
from pigbench.pigreward.output_format import FormatRules, parse_judgement
from pigbench.pigreward.pipeline import PIGRewardPipeline
from pigbench.pigreward.prompts import task_instruction
from pigbench.protocol import Label, Prediction


def reply(dims=((7, 4), (6, 5), (8, 2)), answer="A", totals=None, **extra):
    """A reply object with one dimension per (score_a, score_b); totals default to the sums."""
    obj = {
        "dimensions": [{"name": f"dim{k}", "definition": f"what dim{k} means", "score_a": a, "score_b": b,
                        "justification": f"why {k}"} for k, (a, b) in enumerate(dims)],
        "total_a": sum(a for a, _ in dims) if totals is None else totals[0],
        "total_b": sum(b for _, b in dims) if totals is None else totals[1],
        "answer": answer,
    }
    obj.update(extra)
    return json.dumps(obj)


def test_valid_reply_has_no_violations_and_keeps_dimensions():
    j = parse_judgement(reply())
    assert j.label == Label.A and j.violations == () and not j.contradicts_totals and j.parse_error is None
    assert [d.name for d in j.dimensions] == ["dim0", "dim1", "dim2"]
    assert (j.sum_a, j.sum_b, j.total_a, j.total_b) == (21, 11, 21, 11)
    assert j.dimensions[0].to_protocol().definition == "what dim0 means"


def test_fenced_reply_is_clean_but_surrounding_prose_is_a_violation():
    assert parse_judgement("```json\n" + reply() + "\n```").violations == ()
    j = parse_judgement("Here is my evaluation:\n" + reply() + "\nDone.")
    assert j.label == Label.A and j.violations == ("text outside the JSON object",)


def test_decision_comes_from_the_answer_and_contradiction_is_flagged():
    j = parse_judgement(reply(answer="B"))  # totals favour A
    assert j.label == Label.B and j.contradicts_totals and j.violations == ()
    assert not parse_judgement(reply(dims=((5, 5), (5, 5), (5, 5)), answer="B")).contradicts_totals
    written = parse_judgement(reply(answer="A", totals=(11, 21)))  # the written totals count, not the sums (21, 11)
    assert written.contradicts_totals and not parse_judgement(reply(answer="B", totals=(11, 21))).contradicts_totals


def test_rule_violations_are_listed_and_the_answer_stands():
    few = parse_judgement(reply(dims=((7, 4), (6, 5))))
    assert few.label == Label.A and "2 dimensions, at least 3 required" in few.violations
    out_of_range = parse_judgement(reply(dims=((11, 4), (6, 5), (8, 0))))
    assert "dimension 1 score_a=11 outside [1, 10]" in out_of_range.violations
    assert "dimension 3 score_b=0 outside [1, 10]" in out_of_range.violations
    bad_total = parse_judgement(reply(totals=(20, 11)))
    assert bad_total.violations == ("total_a=20 but the scores sum to 21",)
    not_number = parse_judgement(reply(dims=(("seven", 4), (6, 5), (8, 2)), totals=(14, 11)))
    assert "dimension 1 score_a is not a number ('seven')" in not_number.violations
    assert not_number.sum_a is None and not_number.label == Label.A
    boolean = parse_judgement(reply(dims=((True, 4), (6, 5), (8, 2)), totals=(15, 11)))  # JSON true is no score 1
    assert "dimension 1 score_a is not a number (True)" in boolean.violations and boolean.sum_a is None
    missing = parse_judgement(json.dumps({"answer": "A", "dimensions": [{"name": "x"}] * 3, "total_a": 1, "total_b": 1}))
    assert "dimension 1 has no definition" in missing.violations and "duplicate dimension names" in missing.violations


def test_a_nameless_dimension_keeps_no_name():
    """A placeholder such as "dimension 1" would count as a dimension name in the report's analysis."""
    dims = [{"definition": "d", "score_a": 5, "score_b": 3, "justification": "j"},
            {"name": " ", "definition": "d", "score_a": 5, "score_b": 3},
            {"name": "Warm palette", "definition": "d", "score_a": 5, "score_b": 3}]
    j = parse_judgement(json.dumps({"dimensions": dims, "total_a": 15, "total_b": 9, "answer": "A"}))
    assert [d.to_protocol().name for d in j.dimensions] == ["", "", "Warm palette"]
    assert j.violations == ("dimension 1 has no name", "dimension 2 has no name")  # two nameless: not duplicates
    pipeline = PIGRewardPipeline(None, None, UserContextCache(None, "f"), PIGRewardConfig(use_reasoner=False).settings())
    pred = pipeline.to_prediction("s", Generation(json.dumps({"dimensions": dims, "answer": "A"})), "k")
    assert [d.name for d in pred.dimensions] == ["", "", "Warm palette"] and pred.rationale == "j"


def test_a_reply_cut_at_max_new_tokens_says_so():
    """Cut inside the object, its last complete dimension parses: the reason is the cut, not 'no valid answer'."""
    pipeline = PIGRewardPipeline(None, None, UserContextCache(None, "f"), PIGRewardConfig(use_reasoner=False).settings())
    cut = pipeline.to_prediction("s", Generation(reply()[:-40], truncated=True), "k")
    assert cut.label == Label.INVALID and cut.error is None and cut.extra["truncated"] is True
    assert cut.extra["invalid_reason"] == "output cut at max_new_tokens before its JSON object was complete"
    assert "truncated" not in pipeline.to_prediction("s", Generation(reply()), "k").extra


def test_a_server_answering_with_another_model_says_so():
    """A served reward whose proxy routed to another checkpoint: the prediction records it."""
    pipeline = PIGRewardPipeline(None, None, UserContextCache(None, "f"), PIGRewardConfig(use_reasoner=False).settings())
    served = {"model": "other-ckpt", "system_fingerprint": "fp_1"}
    assert pipeline.to_prediction("s", Generation(reply(), served=served), "k").extra["served"] == served
    assert "served" not in pipeline.to_prediction("s", Generation(reply()), "k").extra


def test_numbers_beyond_float_range_are_violations_not_crashes():
    huge = "9" * 400  # a degenerate reply's integer literal: float() raises OverflowError on it
    text = reply().replace('"score_a": 7', f'"score_a": {huge}').replace('"total_a": 21', f'"total_a": {huge}')
    j = parse_judgement(text)
    assert j.label == Label.A and j.sum_a is None and j.total_a is None and j.sum_b == 11
    assert f"dimension 1 score_a is not a number ({huge[:40]})" in j.violations
    big = parse_judgement(reply(dims=((1e308, 4), (1e308, 5), (1e308, 2)), totals=(1, 11)))
    assert big.sum_a is None and big.sum_b == 11  # the sum would be inf, which no results file can hold


def test_tie_answers():
    assert parse_judgement(reply(answer="Tie")).violations == ("answered Tie, which was not offered",)
    j = parse_judgement(reply(answer="tie"), FormatRules(allow_tie=True))
    assert j.label == Label.TIE and j.violations == () and j.contradicts_totals  # totals differ


def test_answer_spellings():
    assert parse_judgement(reply(answer=" image b. ")).label == Label.B
    for bad in ("A or B", "C", "", 1, None, ["A"]):
        j = parse_judgement(reply(answer=bad))
        assert j.label == Label.INVALID and j.parse_error.startswith("no valid answer")


def test_unparseable_replies_are_invalid_with_a_reason():
    assert parse_judgement("").parse_error == "empty reply"
    assert parse_judgement(None).parse_error == "empty reply"  # type: ignore[arg-type]
    assert parse_judgement("I prefer A.").parse_error == "no JSON object in the reply"
    truncated = reply()[:-20]
    assert parse_judgement(truncated).label == Label.INVALID


def test_last_object_with_an_answer_wins():
    j = parse_judgement(reply(answer="B") + "\n" + reply(answer="A") + '\n{"note": 1}')
    assert j.label == Label.A


def test_no_cot_format():
    rules = FormatRules(require_dimensions=False)
    j = parse_judgement('{"answer": "B"}', rules)
    assert j.label == Label.B and j.violations == () and j.dimensions == ()
    assert parse_judgement('{"answer": "B"}').violations == ("no dimensions", "total_a is missing or not a number (None)",
                                                             "total_b is missing or not a number (None)")


# -- properties ---------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-20, 20) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["dimensions", "answer", "total_a", "total_b", "name", "definition", "score_a", "score_b"])
        | st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_parser_never_raises_on_any_text(text):
    j = parse_judgement(text)
    assert (j.label == Label.INVALID) == (j.parse_error is not None)


@settings(max_examples=300, deadline=None)
@given(json_values, st.text(max_size=20), st.text(max_size=20))
def test_parser_never_raises_on_json_like_replies(value, before, after):
    j = parse_judgement(before + json.dumps(value) + after)
    assert (j.label == Label.INVALID) == (j.parse_error is not None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10), st.integers(1, 10)), min_size=3, max_size=6), st.sampled_from(["A", "B"]))
def test_well_formed_replies_parse_without_violations(dims, answer):
    j = parse_judgement(reply(dims=tuple(dims), answer=answer))
    assert j.label == Label(answer) and j.violations == ()
    total_a, total_b = sum(a for a, _ in dims), sum(b for _, b in dims)
    assert j.contradicts_totals == ((total_a < total_b) if answer == "A" else (total_b < total_a))


def test_the_options_set_the_format_rules():
    """min_dimensions, score_min/score_max, allow_tie and chain_of_thought reach the parser: without
    chain of thought an answer-only reply is clean (no 'no dimensions' in answer_quality)."""
    def predict(text: str, **options) -> Prediction:
        settings = PIGRewardConfig(use_reasoner=False, **options).settings()
        return PIGRewardPipeline(None, None, UserContextCache(None, "f"), settings).to_prediction("s", Generation(text), "k")

    no_cot = predict('{"answer": "A"}', chain_of_thought=False)
    assert no_cot.label == Label.A and no_cot.extra["format_violations"] == []
    assert predict('{"answer": "A"}').extra["format_violations"][0] == "no dimensions"
    wide = reply(dims=((0, 100), (50, 50)), answer="Tie")
    loose = predict(wide, min_dimensions=2, score_min=0, score_max=100, allow_tie=True)
    assert loose.label == Label.TIE and loose.extra["format_violations"] == []
    assert len(predict(wide).extra["format_violations"]) == 6  # 4 scores out of [1, 10], 2 dimensions, the tie


@pytest.mark.parametrize("rules", [
    FormatRules(),
    FormatRules(min_dimensions=1),
    FormatRules(min_dimensions=2, allow_tie=True),
    FormatRules(min_dimensions=5, score_min=1, score_max=5),
    FormatRules(score_min=0, score_max=1),
    FormatRules(min_dimensions=4, score_min=1, score_max=2),
    FormatRules(min_dimensions=1, score_min=1, score_max=2),  # too narrow for whole numbers: 1.5 and 2 would tie
    FormatRules(score_min=-3, score_max=3),
    FormatRules(min_dimensions=6, score_min=0.1, score_max=0.9),
])
def test_the_reward_prompts_example_reply_passes_the_strict_parser(rules):
    """The example reply the reward prompt shows once had totals of 0 beside non-zero scores, breaking
    the rule "totals equal the sums" it teaches; it now passes the parser under the prompt's own rules,
    and with two or more dimensions each image is ahead on one (the totals, not a letter, decide)."""
    instruction = task_instruction(rules, chain_of_thought=True)
    head, example = instruction.rsplit("in this form:\n", 1)
    j = parse_judgement(example, rules)
    assert j.parse_error is None and j.violations == () and not j.contradicts_totals
    assert (j.total_a, j.total_b) == (j.sum_a, j.sum_b) and j.total_a != j.total_b
    assert j.label == (Label.A if j.total_a > j.total_b else Label.B)
    assert len(j.dimensions) == rules.min_dimensions and f"at least {rules.min_dimensions} evaluation" in head
    if rules.min_dimensions >= 2:
        assert any(d.score_a > d.score_b for d in j.dimensions) and any(d.score_b > d.score_a for d in j.dimensions)
    scores = [d[side] for d in json.loads(example)["dimensions"] for side in ("score_a", "score_b")]
    whole = float(rules.score_min).is_integer() and float(rules.score_max).is_integer() and rules.score_max - rules.score_min >= 4
    assert all(isinstance(score, int) for score in scores) == whole  # whole numbers where the range allows
