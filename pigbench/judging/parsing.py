"""The judges' answer parsers. They never raise.

:func:`parse_answer` is the tolerant parser of the reference judges. Order of evidence (evaluators
spec, section 4.3), after removing ``<think>...</think>`` reasoning
(an unclosed ``<think>`` means the output was cut inside its reasoning, so nothing after it counts):

1. the **last** ``<answer>...</answer>`` block (an unclosed final ``<answer>`` counts up to its
   line end, for outputs cut right after the answer);
2. the last FastChat verdict ``[[A]]``, ``[[B]]`` or ``[[C]]`` (C = tie);
3. the last non-empty line, read as a conclusion.

An output cut at ``max_new_tokens`` (``truncated=True``) is read from explicit answers only: the
last *closed* ``<answer>...</answer>`` block, else the last ``[[A]]``/``[[B]]``/``[[C]]``; without
one it is INVALID ("output cut at max_new_tokens before its answer"), since its last line is
wherever the cut fell.

A snippet is read tolerantly: case and whitespace do not matter; "A", "Image A", "Picture 1",
"image 1 is better", "Image 1 is better than Image 2", "A is better", "the first image", "Answer: B", "Tie",
"Both images are equally good.", "Cannot decide" are all understood (1 = A, 2 = B; the last three are ties;
"cannot decide" only in a snippet that names no single image). A bare letter counts only as the whole
snippet, after "Answer:", or as the subject of a comparative ("A is better", "B is preferred"; upper
case, so the article of "a better image" never counts).

"Cannot decide" is read with what follows its last occurrence: one claim choosing one side after a
contrast or the end of its clause ("..., but A is better", "...; still, I'd go with Image 2", "... .
Image B is preferred": a verdict, a verb of choice, or the image alone, none negated) is that side;
verdicts stated only before it are concluded by it, a tie ("A is better on colour but B on detail,
so I cannot decide"), and so are verdicts that explain it before any contrast ("I cannot decide:
Image A is better in colour but Image B in detail"). Otherwise the rules above apply ("I cannot decide between A and B." is a tie;
"I cannot decide between Image A and Image B, but Image A is not better." states no choice and
stays a tie). A snippet naming both sides
without saying which is better is ambiguous; one that names a single side in a negated statement
("Image 1 is not better", "I would not prefer Image A") states no choice. Anything else, empty output, or an output cut before
its answer is INVALID, with the reason kept; callers always keep the raw text.

:func:`parse_tagged_answer` is UnifiedReward-Think's published rule (evaluators spec, section 2):
only the last ``<answer>`` block outside ``<think>`` counts, read as above but A or B only; no
block (no fallback to brackets or the last line), or a block that says tie, is INVALID.

:func:`parse_conclusion` is UnifiedReward's published rule (evaluators spec, section 2; the official
evaluation tests ``conclusion in output``): exactly one of its conclusion strings "Image 1 is
better", "Image 2 is better", "Both images are equally good" present anywhere, as written (case
matters), gives A, B or TIE; none or several different ones, or an output cut at
``max_new_tokens`` (a later conclusion may be missing), is INVALID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from pigbench.protocol import Label

_SIDE = {"a": Label.A, "1": Label.A, "first": Label.A, "b": Label.B, "2": Label.B, "second": Label.B}

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_ANSWER_OPEN = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
_ANSWER_BODY = re.compile(r"(.*?)<\s*/\s*answer\s*>", re.IGNORECASE | re.DOTALL)
_FIRST_LINE = re.compile(r"\s*[^\r\n<]*")
_NONEMPTY_LINE = re.compile(r"[^\r\n]*\S[^\r\n]*")
_BRACKETS = re.compile(r"\[\[\s*([ABC])\s*\]\]", re.IGNORECASE)

# A side named as an image: "Image A", "picture 2", "option #1", "the first image".
_NAMED = r"(?:(?:image|picture|pic|img|option|candidate)\s*#?\s*(?P<{0}>[ab12])\b|\b(?P<{0}o>first|second)\s+(?:image|picture|one|option)\b)"
_NAMED_SIDE = re.compile(_NAMED.format("s"), re.IGNORECASE)
# What follows the subject of a comparative verdict: "... is (much) better", "... would be preferred".
_COMPARATIVE = r"\s+(?:is|seems|looks|would\s+be|was)\s+(?:(?!not\b)\w+\s+)?(?P<cmp>better|preferred|superior|worse|inferior)\b"
_BETTER = re.compile(_NAMED.format("s") + _COMPARATIVE, re.IGNORECASE)
# "neg": a negation just before the verb ("would not prefer", "don't really prefer"): no verdict.
_PREFER = re.compile(r"(?P<neg>(?:\bnot|\bnever|n't)\s+(?:\w+\s+)?)?\bprefer(?:s|red)?\s+(?:the\s+)?" + _NAMED.format("s"),
                     re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:not|never)\b|n't\b", re.IGNORECASE)  # "no doubt" negates nothing
# The whole snippet is one choice: "A", "**b**", "Answer: 2", "Final answer - Tie".
_BARE = re.compile(
    r"^[\W_]*(?:(?:final\s+)?(?:answer|verdict|choice)\s*(?:is\s*)?[:=\-]?\s*)?(?P<s>[ab12]|tie|c)[\W_]*$",
    re.IGNORECASE,
)
_ANSWER_IS = re.compile(r"\b(?:final\s+)?(?:answer|verdict|choice)\s*(?:is|:|=)\s*\W*(?P<s>(?-i:[AB])|[12])\b", re.IGNORECASE)
_TIE = re.compile(
    r"\b(?:tie|tied|no\s+(?:clear\s+)?preference|equally\s+\w+|(?:are|is)\s+equal|both\s+(?:are\s+)?(?:good|bad|fine))\b",
    re.IGNORECASE,
)
# A bare letter in the comparative form only ("A is better", "B is much worse"); upper case, so
# the article in "a better image" never counts.
_BARE_BETTER = re.compile(r"\b(?-i:(?P<s>[AB]))" + _COMPARATIVE, re.IGNORECASE)
# The protocol's explicit tie, read only where no single image is named ("I can't decide: Image B" is no tie).
_UNDECIDED = re.compile(r"\b(?:cannot|can\s*not|can't|can’t)\s+decide\b", re.IGNORECASE)
# A claim choosing the one image it names: "I'd go with Image 2", "I lean towards Image 1", "Image B".
_CHOICE = re.compile(r"\b(?:go(?:ing)?\s+with|choose|pick|opt\s+for|lean(?:ing)?\s+towards?|select|vote\s+for)\b",
                     re.IGNORECASE)
_ONLY_NAMED = re.compile(r"^[\W_]*" + _NAMED.format("s") + r"[\W_]*$", re.IGNORECASE)
# Where a claim after "cannot decide" starts: a contrast ("but", "however", "still", "though", ...)
# or the end of its clause or sentence (";", ".", "!", "?"; not ":", which names what is undecided),
# taken whole ("; however," and ". Still," are one turn).
_TURN_WORD = r"(?:\b(?:but|however|still|though|yet|nevertheless|nonetheless)\b|[;.!?](?=\s|$))"
_TURN = re.compile(_TURN_WORD + r"(?:[\s,]*" + _TURN_WORD + r")*", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedAnswer:
    """A parsed answer: ``label``; ``method`` says where it was found ("tag", "brackets", "final-line");
    ``reason`` says why it is INVALID; ``answer`` is the snippet that was read."""

    label: Label
    method: Optional[str] = None
    reason: Optional[str] = None
    answer: Optional[str] = None


def parse_answer(output: Optional[str], truncated: bool = False) -> ParsedAnswer:
    """Read a judge's verdict from its raw output (see the module docstring); ``truncated``: the
    output was cut at ``max_new_tokens``. Never raises."""
    return _guarded(_parse, output, truncated)


def parse_tagged_answer(output: Optional[str], truncated: bool = False) -> ParsedAnswer:
    """UnifiedReward-Think's verdict: A or B from the last ``<answer>`` block outside ``<think>``;
    else INVALID (see the module docstring). Never raises."""
    return _guarded(_parse_tagged, output, truncated)


# UnifiedReward's conclusion strings, as its official evaluation matches them (no final period).
CONCLUSIONS: dict[str, Label] = {"Image 1 is better": Label.A, "Image 2 is better": Label.B,
                                 "Both images are equally good": Label.TIE}


def parse_conclusion(output: Optional[str], truncated: bool = False) -> ParsedAnswer:
    """UnifiedReward's verdict: the one conclusion string (:data:`CONCLUSIONS`) the output holds;
    else INVALID (see the module docstring). Never raises."""
    return _guarded(_parse_conclusion, output, truncated)


def _guarded(parse: Callable[..., ParsedAnswer], *args: Any) -> ParsedAnswer:
    try:
        return parse(*args)
    except Exception as exc:  # a parser bug must not kill a run; keep the reason
        return ParsedAnswer(Label.INVALID, reason=f"parser error: {type(exc).__name__}: {exc}")


def _parse(output: Optional[str], truncated: bool) -> ParsedAnswer:
    if output is None or not output.strip():
        return ParsedAnswer(Label.INVALID, reason="empty output")
    visible, unclosed = _visible(output)
    snippet = _last_answer(visible, truncated)
    if snippet is not None:
        return _verdict(snippet, "tag")
    brackets = _BRACKETS.findall(visible)
    if brackets:
        return _verdict(brackets[-1], "brackets")
    if truncated:
        where = "inside its <think> reasoning" if unclosed else "at max_new_tokens before its answer"
        return ParsedAnswer(Label.INVALID, reason=f"output cut {where}")
    lines = _NONEMPTY_LINE.findall(visible)
    if not lines:
        reason = "output cut inside its <think> reasoning" if unclosed else "empty output"
        return ParsedAnswer(Label.INVALID, reason=reason)
    parsed = _verdict(lines[-1], "final-line")
    if parsed.label == Label.INVALID and unclosed:
        return ParsedAnswer(Label.INVALID, reason="output cut inside its <think> reasoning")
    return parsed


def _parse_tagged(output: Optional[str], truncated: bool) -> ParsedAnswer:
    if output is None or not output.strip():
        return ParsedAnswer(Label.INVALID, reason="empty output")
    visible, unclosed = _visible(output)
    snippet = _last_answer(visible, truncated)
    if snippet is None:
        if unclosed:
            return ParsedAnswer(Label.INVALID, reason="output cut inside its <think> reasoning")
        reason = "output cut at max_new_tokens before its answer" if truncated else "no <answer> block"
        return ParsedAnswer(Label.INVALID, reason=reason)
    parsed = _verdict(snippet, "tag")
    if parsed.label == Label.TIE:
        return ParsedAnswer(Label.INVALID, "tag", f"tie is not an answer option: {parsed.answer!r}", parsed.answer)
    return parsed


def _parse_conclusion(output: Optional[str], truncated: bool) -> ParsedAnswer:
    if output is None or not output.strip():
        return ParsedAnswer(Label.INVALID, reason="empty output")
    if truncated:
        return ParsedAnswer(Label.INVALID, reason="output cut at max_new_tokens (a later conclusion may be missing)")
    stated = {phrase: label for phrase, label in CONCLUSIONS.items() if phrase in output}
    if len(stated) > 1:
        return ParsedAnswer(Label.INVALID, "conclusion", f"output states several verdicts: {', '.join(map(repr, stated))}")
    if not stated:
        return ParsedAnswer(Label.INVALID, reason="no conclusion ('Image 1 is better', 'Image 2 is better' or "
                                                  "'Both images are equally good')")
    [(phrase, label)] = stated.items()
    return ParsedAnswer(label, "conclusion", None, phrase)


def _visible(output: str) -> tuple[str, bool]:
    """The output outside ``<think>`` blocks, cut at an unclosed ``<think>``; and whether it was cut."""
    visible = _THINK_BLOCK.sub(" ", output)
    unclosed = _THINK_OPEN.search(visible)
    return (visible[: unclosed.start()], True) if unclosed else (visible, False)


def _last_answer(visible: str, truncated: bool) -> Optional[str]:
    """The text of the last ``<answer>`` block up to its ``</answer>`` (an unclosed final one: up to
    its line end, unless the output was cut at ``max_new_tokens``); None without one."""
    opens = list(_ANSWER_OPEN.finditer(visible))
    if truncated:  # an <answer> cut before its </answer> is no answer
        opens = [o for o in opens if _ANSWER_BODY.match(visible, o.end())]
    if not opens:
        return None
    rest = visible[opens[-1].end() :]
    closed = _ANSWER_BODY.match(rest)
    return closed.group(1) if closed else _FIRST_LINE.match(rest).group(0)


def _verdict(snippet: str, method: str) -> ParsedAnswer:
    label, why = classify(snippet)
    shown = snippet.strip()[:200]
    if label is None:
        return ParsedAnswer(Label.INVALID, method, f"{why}: {shown!r}", shown)
    return ParsedAnswer(label, method, None, shown)


def classify(snippet: str) -> tuple[Optional[Label], str]:
    """(label, "") for a snippet that states one choice, else (None, why it does not)."""
    s = snippet.strip()
    if not s:
        return None, "empty answer"
    bare = _BARE.match(s)
    if bare:
        key = bare.group("s").lower()
        return (Label.TIE if key in ("tie", "c") else _SIDE[key]), ""
    verdicts = _verdicts(s)
    undecided = None
    for undecided in _UNDECIDED.finditer(s):
        pass  # the last one
    if undecided is not None:
        after = s[undecided.end() :]
        turn = _TURN.search(after)
        if _verdicts(after[: turn.start()] if turn else after):
            return Label.TIE, ""  # "I cannot decide: Image A is better in colour but Image B in detail": what is undecided
        side = _decisive(after[turn.end() :]) if turn else None
        if side is not None:  # "I cannot decide between A and B, but A is better."
            return side, ""
        if verdicts and not _verdicts(after):  # "A is better on colour but B on detail, so I cannot decide."
            return Label.TIE, ""
    if len(verdicts) == 1:
        return verdicts.pop(), ""
    if len(verdicts) > 1:
        return None, "answer asserts both images"
    if _TIE.search(s):
        return Label.TIE, ""
    named = {_side(m) for m in _NAMED_SIDE.finditer(s)}
    if len(named) != 1 and undecided is not None:
        return Label.TIE, ""
    if len(named) == 1:
        if _NEGATION.search(s):  # "Image 1 is not better", "Image B does not fit": not a choice of it
            return None, "answer negates the image it names"
        return named.pop(), ""
    if len(named) > 1:
        return None, "answer names both images without a verdict"
    return None, "unrecognized answer"


def _verdicts(text: str) -> set[Label]:
    """The sides ``text`` states a verdict for: an image (or a bare upper-case letter) said to be
    better, worse or preferred, "answer: B", and a preference not negated."""
    found = {_comparative(m) for m in (*_BETTER.finditer(text), *_BARE_BETTER.finditer(text))} | _preferred(text)
    return found | {_SIDE[m.group("s").lower()] for m in _ANSWER_IS.finditer(text)}


def _decisive(claim: str) -> Optional[Label]:
    """The one side a claim made after "cannot decide" chooses: its one verdict or, stating none, the
    one image it names with a verb of choice ("I'd go with Image 2") or alone ("but Image 2"); None
    when it negates anything, describes ("but Image A has a hat"), or chooses no side or both."""
    if _NEGATION.search(claim):
        return None
    sides = _verdicts(claim)
    if not sides and (_CHOICE.search(claim) or _ONLY_NAMED.match(claim.strip())):
        sides = {_side(m) for m in _NAMED_SIDE.finditer(claim)}
    return sides.pop() if len(sides) == 1 else None


def _preferred(text: str) -> set[Label]:
    """The images ``text`` says are preferred, leaving out negated statements ("would not prefer Image A")."""
    return {_side(m) for m in _PREFER.finditer(text) if not m.group("neg")}


def _side(m: re.Match) -> Label:
    return _SIDE[(m.group("s") or m.group("so")).lower()]


def _comparative(m: re.Match) -> Label:
    side = _side(m)
    return side.swapped() if m.group("cmp").lower() in ("worse", "inferior") else side
