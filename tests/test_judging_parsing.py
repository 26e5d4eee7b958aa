"""The shared judge answer parser: examples from each judge's format, and properties (hypothesis)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pigbench.judging.parsing import ParsedAnswer, parse_answer, parse_conclusion, parse_tagged_answer
from pigbench.protocol import Label

A, B, TIE, INVALID = Label.A, Label.B, Label.TIE, Label.INVALID


@pytest.mark.parametrize("output, label, method", [
    ("<answer>A</answer>", A, "tag"),
    ("The user likes warm colours.\n<answer> b </answer>", B, "tag"),
    ("<ANSWER>Image A</ANSWER>", A, "tag"),
    ("<answer>Picture 2</answer>", B, "tag"),
    ("<answer>image 1 is better</answer>", A, "tag"),
    ("<answer>Tie</answer>", TIE, "tag"),
    ("<answer>Image A is better, though both are good</answer>", A, "tag"),  # a verdict beats tie words
    ("<answer>A</answer> on second thought <answer>B</answer>", B, "tag"),  # the last answer wins
    ("<answer>A</ans", A, "tag"),  # cut right after the answer
    ("<think>Image 1 is better lit</think>\n<answer>Image 2 is better</answer>", B, "tag"),  # UnifiedReward-Think
    ("Assistant B is better. [[B]]", B, "brackets"),  # FastChat
    ("[[C]]", TIE, "brackets"),
    ("First thought [[A]], but on reflection [[B]]", B, "brackets"),  # the last verdict wins
    ("My verdict: [[b]]", B, "brackets"),
    ("Image 1 is better.", A, "final-line"),  # UnifiedReward
    ("Image 1 is better than Image 2.", A, "final-line"),  # UnifiedReward, LLaVA wording
    ("Both images are equally good.", TIE, "final-line"),
    ("<answer>Cannot decide</answer>", TIE, "tag"),  # the protocol's explicit tie (section 3)
    ("I can't decide between them.", TIE, "final-line"),
    ("Looking at the palette...\nFinal answer: B", B, "final-line"),
    ("**A**", A, "final-line"),
    ("I prefer the second image.", B, "final-line"),
    ("Image B is worse than image A", A, "final-line"),
])
def test_understood_forms(output, label, method):
    parsed = parse_answer(output)
    assert (parsed.label, parsed.method, parsed.reason) == (label, method, None)


@pytest.mark.parametrize("output, reason", [
    ("", "empty output"),
    ("   \n ", "empty output"),
    (None, "empty output"),
    ("<think>Image 1 has better colours, so", "output cut inside its <think> reasoning"),
    ("<answer>A or B</answer>", "unrecognized answer"),
    ("<answer>Image A and Image B</answer>", "answer names both images without a verdict"),
    ("<answer>Image 1 is better, Image 2 is better</answer>", "answer asserts both images"),
    ("the answer is a cat", "unrecognized answer"),
    ("ßø∂ƒ©˙∆˚¬", "unrecognized answer"),
])
def test_invalid_forms_say_why(output, reason):
    parsed = parse_answer(output)
    assert parsed.label == INVALID
    assert parsed.reason.startswith(reason)


@pytest.mark.parametrize("output", [
    "Image 1 is better in alignment.\nImage 2 is better.",  # two conclusions on separate lines
    "Image 2 is better than Image 1 in colour.\n\nImage 1 is better.",
    "Image 1 is better.\nBoth images are equally good.",
    "Image 1 is better than Image 2 in colour.\nImage 2 is better overall.",
])
def test_unifiedreward_several_verdicts_are_invalid(output):
    """UnifiedReward's rule (evaluators spec, section 2): exactly one conclusion string gives the
    label; several are INVALID, wherever they stand (the last line does not overrule the others)."""
    parsed = parse_conclusion(output)
    assert parsed.label == INVALID and parsed.reason.startswith("output states several verdicts")
    assert parse_answer(output).label != INVALID  # the tolerant parser reads the last line


@pytest.mark.parametrize("output, label", [
    ("Image 1 shows a man in a red tie; both are equally sharp.\nImage 2 is better.", B),  # descriptions, one verdict
    ("Image 1 is better than Image 2.", A),  # its LLaVA wording holds the string
    ("Image 1 is better in alignment; both are equally sharp.\nThat is my assessment.", A),  # verdict mid-text
    ("Image 2 is better overall, the red tie is clear.\nDone.", B),
    ("Image 1 is better.\nI can't decide which has the better colour, though.", A),  # a hedge after the verdict
    ("Both images are equally good.\nThat is my assessment.", TIE),  # its tie conclusion mid-text
    # the published substring test, word for word: a qualified comparative is no conclusion
    ("Image 1 is slightly better in colour, but overall Image 2 is better.", B),
    ("Image 2 is much better in detail.\nBoth images are equally good.", TIE),
])
def test_unifiedreward_one_conclusion_anywhere_is_read(output, label):
    parsed = parse_conclusion(output)
    assert (parsed.label, parsed.method, parsed.reason) == (label, "conclusion", None)


@pytest.mark.parametrize("output", [
    "<answer>A</answer>",  # not its format: no tag, bracket or last-line fallback
    "[[B]]",
    "Overall, I prefer Image 2.",
    "Image 2 is worse than Image 1.",
    "image 1 is better.",  # the official test is case-sensitive
    "Image A is better.",
])
def test_unifiedreward_without_a_conclusion_string_is_invalid(output):
    """Outputs the tolerant parser reads but the official evaluation's substring test does not."""
    parsed = parse_conclusion(output)
    assert parsed.label == INVALID and parsed.reason.startswith("no conclusion")
    assert parse_answer(output).label != INVALID


def test_a_cut_unifiedreward_output_is_invalid():
    """A later conclusion may have been cut off (protocol: a truncated output is INVALID)."""
    parsed = parse_conclusion("Image 1 is better in colour, while in detail", truncated=True)
    assert parsed.label == INVALID and parsed.reason.startswith("output cut at max_new_tokens")
    assert parse_conclusion("", truncated=True).reason == "empty output"


@pytest.mark.parametrize("output", [
    "<answer>Image 1 is not better</answer>",
    "<answer>Image A is not preferred</answer>",
    "<answer>Not image A</answer>",
    "The user would not prefer Image A.",
    "I don't prefer image 2",
    "Image B does not match the user's taste.",
])
def test_a_negated_statement_about_one_image_is_not_a_choice_of_it(output):
    parsed = parse_answer(output)
    assert parsed.label == INVALID and parsed.reason.startswith("answer negates the image it names")


@pytest.mark.parametrize("output, label", [
    ("<answer>Image 2 is better, not Image 1</answer>", B),
    ("It is not obvious, but I prefer image 2", B),
    ("Image A is better; Image B is not.", A),
    ("Image A, no doubt.", A),  # "no" that negates no statement about the image
])
def test_negations_beside_a_verdict_keep_it(output, label):
    assert parse_answer(output).label == label


@pytest.mark.parametrize("output, label", [
    ("Image A: can't decide on colour, B wins", INVALID),  # the image named is negated: no choice of it
    ("I can't decide: Image B.", INVALID),
    ("<answer>Cannot decide, so image 2</answer>", B),
])
def test_cannot_decide_beside_one_named_image_is_no_tie(output, label):
    """'cannot decide' is the protocol's tie only when no image is chosen: an answer naming one image
    beside it is read as one naming that image (a choice of it, unless negated)."""
    assert parse_answer(output).label == label


def test_cannot_decide_between_both_images_is_a_tie():
    assert parse_answer("I cannot decide between Image A and Image B.").label == TIE


@pytest.mark.parametrize("output, label", [
    ("I cannot decide between A and B, but A is better.", A),
    ("I cannot decide between Image A and Image B, but I'd go with Image 2.", B),
    ("I can't decide between Image 1 and Image 2; still, I lean towards Image 1.", A),
    ("Cannot decide. However, image B is preferred.", B),
    ("I can't decide, though B is much better", B),
    ("I cannot decide between Image 1 and Image 2, but Image 2.", B),  # the image alone, after a contrast
    ("I cannot decide between the two. The first image is better.", A),  # a final sentence
    ("Hard to say, but I'd go with Image 2.", B),  # a looser hedge: the one image it names
])
def test_cannot_decide_then_one_claim_for_one_side_is_that_side(output, label):
    """The answer ends with a single decisive claim: it used to be read as a tie because "cannot
    decide" won (a bare "A is better" was not read at all)."""
    assert parse_answer(output).label == label
    assert parse_tagged_answer(f"<answer>{output}</answer>").label == label


@pytest.mark.parametrize("output", [
    "I cannot decide between A and B.",
    "A is better on colour but B on detail, so I cannot decide",  # the undecided clause concludes
    "Image A is better on colour but Image B on detail, so I cannot decide",
    "I cannot decide between Image A and Image B, but Image A is not better.",  # a negated claim chooses nothing
    "I cannot decide between Image 1 and Image 2, but I would not choose Image 2.",
    "I cannot decide between Image A and Image B, but Image A has a red hat.",  # a description, no choice
    "I cannot decide between Image A and Image B, but both are good.",
    "I cannot decide, but a better image would be sharper.",  # "a" is an article, not image A
    "I can't decide at first glance; Image 1 is better. Still, I can't decide overall.",  # the last one concludes
    # verdicts that explain the indecision, before any contrast (were read as B and A)
    "I cannot decide: Image A is better in colour but Image B is better in detail.",
    "I cannot decide: Image A is better on colour, Image B on detail.",
])
def test_cannot_decide_stays_a_tie_without_one_decisive_claim_after_it(output):
    assert parse_answer(output).label == TIE


@pytest.mark.parametrize("output", [
    "I cannot decide between A and B, but A is better and B is better.",
    "I cannot decide between Image A and Image B, but Image A is better while Image B is better.",
])
def test_a_claim_after_cannot_decide_choosing_both_sides_asserts_both(output):
    """A claim after "cannot decide" that chooses both images is not decisive for either, and the
    verdicts it states are not concluded by the earlier "cannot decide": the answer asserts both."""
    parsed = parse_answer(output)
    assert parsed.label == INVALID and parsed.reason.startswith("answer asserts both images")


@pytest.mark.parametrize("output, label, reason", [
    ("A is better.", A, None),
    ("B is preferred", B, None),
    ("B is much worse than A", A, None),
    ("A is better, B is better", INVALID, "answer asserts both images"),
    ("This is a better image.", INVALID, "unrecognized answer"),  # the article never counts
    ("a is better", INVALID, "unrecognized answer"),  # lower case: not a side
    ("A better image is one with warm tones.", INVALID, "unrecognized answer"),
    ("Plan: A is not better", INVALID, "unrecognized answer"),  # no negated verdict either
])
def test_a_bare_letter_counts_only_in_the_comparative_form(output, label, reason):
    parsed = parse_answer(output)
    assert parsed.label == label and (parsed.reason or "").startswith(reason or "")


CUT = "The user likes warm tones.\nImage A uses warm tones, while"  # reasoning cut mid-sentence


def test_an_output_cut_at_the_token_limit_is_not_read_from_its_last_line():
    """Evaluators spec 4.3: truncation before the answer is INVALID. The same text ending on its own
    is read from its last line."""
    assert parse_answer(CUT).label == A
    parsed = parse_answer(CUT, truncated=True)
    assert (parsed.label, parsed.reason) == (INVALID, "output cut at max_new_tokens before its answer")


@pytest.mark.parametrize("output, label, method", [
    ("<answer>B</answer>\nThe user clearly prefers", B, "tag"),  # cut after a closed answer
    ("<answer>A</answer> on second thought <answer>B", A, "tag"),  # the cut answer does not count
    ("Assistant B is better. [[B]] The reason is", B, "brackets"),
    ("<think>Image 1: 9/10</think><answer>Image 2 is better</answer>", B, "tag"),
])
def test_a_cut_output_keeps_an_explicit_answer_given_before_the_cut(output, label, method):
    parsed = parse_answer(output, truncated=True)
    assert (parsed.label, parsed.method, parsed.reason) == (label, method, None)


@pytest.mark.parametrize("output, reason", [
    ("<answer>A", "output cut at max_new_tokens before its answer"),  # cut before </answer>
    ("Image 1 is better. It is sharper and", "output cut at max_new_tokens before its answer"),
    ("<think>Image 1 has better colours, so", "output cut inside its <think> reasoning"),
])
def test_a_cut_output_without_an_explicit_answer_is_invalid(output, reason):
    assert parse_answer(output, truncated=True) == ParsedAnswer(INVALID, reason=reason)


@pytest.mark.parametrize("output, label", [
    ("<think>Image 1: 9+8=17\nImage 2: 7+8=15</think>\n<answer>Image 1 is better</answer>", A),
    ("<think>totals</think><answer>Image 2 is better</answer>", B),
    ("<answer>Image 2 is better</answer> then <answer>Image 1 is better</answer>", A),  # the last block decides
    ("<think><answer>Image 2 is better</answer></think><answer>Image 1 is better</answer>", A),  # never in <think>
])
def test_unifiedreward_think_reads_its_last_answer_block(output, label):
    parsed = parse_tagged_answer(output)
    assert (parsed.label, parsed.method, parsed.reason) == (label, "tag", None)


@pytest.mark.parametrize("output, truncated, reason", [
    ("<think>Image 1: 31, Image 2: 28</think>\nImage 1 is better", False, "no <answer> block"),  # no last-line fallback
    ("<think>totals</think> [[A]]", False, "no <answer> block"),  # nor FastChat brackets
    ("<think>totals</think><answer>Both images are equally good</answer>", False, "tie is not an answer option"),
    ("<answer>Tie</answer>", False, "tie is not an answer option"),
    ("<think>Image 1 has better colours, so", True, "output cut inside its <think> reasoning"),
    ("<think>totals</think><answer>Image 1 is", True, "output cut at max_new_tokens before its answer"),
    ("", False, "empty output"),
])
def test_unifiedreward_think_without_an_a_or_b_answer_block_is_invalid(output, truncated, reason):
    """Its published rule (evaluators spec, section 2): the last <answer> block decides, A or B;
    missing is INVALID and there is no tie option."""
    parsed = parse_tagged_answer(output, truncated=truncated)
    assert parsed.label == INVALID and parsed.reason.startswith(reason)


# ---- properties -------------------------------------------------------------------------------

FORMS = {
    A: ["A", "a", "Image A", "image a", "Picture 1", "picture 1", "Image 1 is better", "IMAGE 1 IS BETTER."],
    B: ["B", "b", "Image B", "Picture 2", "Image 2 is better", "image b"],
    TIE: ["Tie", "tie", "TIE"],
}
free_text = st.text(alphabet=st.characters(blacklist_characters="<>[]"), max_size=200)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_never_raises_on_arbitrary_text(output):
    parsed = parse_answer(output)
    assert isinstance(parsed.label, Label)
    assert (parsed.label == INVALID) == (parsed.reason is not None)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="<>/[]answerthinkABC12 \n", max_size=120))
def test_never_raises_on_markup_soup(output):
    assert isinstance(parse_answer(output).label, Label)
    parsed = parse_conclusion(output)
    assert (parsed.label == INVALID) == (parsed.reason is not None)


@settings(max_examples=200, deadline=None)
@given(prefix=free_text, label=st.sampled_from([A, B, TIE]), data=st.data(),
       left=st.sampled_from(["", " ", "\n", "  \t"]), right=st.sampled_from(["", " ", "\n"]))
def test_tagged_answer_after_any_text(prefix, label, data, left, right):
    form = data.draw(st.sampled_from(FORMS[label]))
    parsed = parse_answer(f"{prefix}<answer>{left}{form}{right}</answer>")
    assert parsed.label == label and parsed.method == "tag"


@settings(max_examples=200, deadline=None)
@given(first=st.sampled_from([A, B, TIE]), last=st.sampled_from([A, B, TIE]), middle=free_text)
def test_last_tagged_answer_wins(first, last, middle):
    output = f"<answer>{FORMS[first][0]}</answer>{middle}<answer>{FORMS[last][0]}</answer>"
    assert parse_answer(output).label == last


@settings(max_examples=200, deadline=None)
@given(think=free_text, label=st.sampled_from([A, B]))
def test_think_block_never_answers(think, label):
    """An answer inside <think> is ignored: only the answer after it counts."""
    other = B if label == A else A
    output = f"<think>{think}<answer>{FORMS[other][0]}</answer></think><answer>{FORMS[label][0]}</answer>"
    assert parse_answer(output).label == label


@settings(max_examples=200, deadline=None)
@given(text=free_text, label=st.sampled_from([A, B, TIE]))
def test_a_cut_output_counts_only_with_a_closed_answer(text, label):
    assert parse_answer(text, truncated=True).label == INVALID
    assert parse_answer(f"{text}<answer>{FORMS[label][0]}", truncated=True).label == INVALID
    assert parse_answer(f"{text}<answer>{FORMS[label][0]}</answer>{text}", truncated=True).label == label


HEDGES = ["I cannot decide between Image A and Image B", "I can't decide between A and B", "Cannot decide",
          "i can not decide which one the user likes"]
TURNS = [", but ", "; however, ", ". Still, ", ", though ", ". ", "; "]
CLAIMS = {A: ["A is better", "Image 1 is better", "I'd go with Image A", "I prefer the first image", "image a"],
          B: ["B is preferred", "Image 2 is better", "I lean towards Picture 2", "the answer is B", "Image B"]}
VERDICTS = {A: ["Image A is better on colour", "A is better in lighting", "I prefer image 1 for its palette"],
            B: ["Image B is better on detail", "B is superior in composition", "Image 1 is worse in focus"]}


@settings(max_examples=200, deadline=None)
@given(hedge=st.sampled_from(HEDGES), turn=st.sampled_from(TURNS), side=st.sampled_from([A, B]), data=st.data(),
       end=st.sampled_from(["", ".", "!"]))
def test_a_hedge_then_one_claim_is_that_side(hedge, turn, side, data, end):
    claim = data.draw(st.sampled_from(CLAIMS[side]))
    assert parse_answer(f"{hedge}{turn}{claim}{end}").label == side


@settings(max_examples=200, deadline=None)
@given(first=st.sampled_from([A, B]), second=st.sampled_from([A, B]), data=st.data(),
       hedge=st.sampled_from(["so I cannot decide", "so I can't decide.", "therefore I cannot decide which is better"]))
def test_verdicts_concluded_by_cannot_decide_are_a_tie(first, second, data, hedge):
    one, other = data.draw(st.sampled_from(VERDICTS[first])), data.draw(st.sampled_from(VERDICTS[second]))
    assert parse_answer(f"{one} but {other}, {hedge}").label == TIE


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="<>/[]answerthinkABC12 \n", max_size=120))
def test_unifiedreward_think_never_raises_nor_ties(output):
    parsed = parse_tagged_answer(output)
    assert parsed.label in (A, B, INVALID) and (parsed.label == INVALID) == (parsed.reason is not None)
