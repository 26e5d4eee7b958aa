"""The reward model's output format, and its strict parser and validator.

The reward model replies with exactly one JSON object (a ```json fence around it is tolerated)::

    {
      "dimensions": [
        {"name": "Warm palette",
         "definition": "How strongly the image uses the warm oranges and reds this user favours.",
         "score_a": 8, "score_b": 4,
         "justification": "A is dominated by orange light; B is mostly cold blue."},
        ... at least three dimensions, each specific to this user ...
      ],
      "total_a": 21,
      "total_b": 13,
      "answer": "A"
    }

Rules checked by :func:`parse_judgement` (``FormatRules`` holds the numbers):

* the decision comes from ``answer`` alone: ``"A"``, ``"B"`` or ``"Tie"`` (case-insensitive; a
  leading "Image " is accepted). No object, or no recognizable answer, makes the reply
  **unparseable**: the prediction is INVALID and keeps the raw text.
* ``dimensions`` has at least ``min_dimensions`` entries, each with a non-empty ``name`` and
  ``definition`` and numeric ``score_a``/``score_b`` within ``[score_min, score_max]``.
* ``total_a``/``total_b`` equal the sums of the scores.
* nothing but the object (and its fence) is in the reply; a tie is only answered when offered.

Any broken rule is a **format violation**: it is listed on the judgement and the decision still
stands. Totals that favour the other image than the answer (or differ under a Tie answer) are a
**contradiction**, recorded separately. In the no-CoT ablation (``require_dimensions=False``) the
object may hold only ``answer``. The parser never raises on any input string.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Optional

from pigbench.protocol import Dimension, Label, contradicts

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_ANSWER = re.compile(r"^\s*(?:image\s+)?(a|b|tie)\s*\.?\s*$", re.IGNORECASE)
_ANSWER_LABELS = {"a": Label.A, "b": Label.B, "tie": Label.TIE}
_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class FormatRules:
    """What a valid reply must satisfy."""

    min_dimensions: int = 3
    score_min: float = 1
    score_max: float = 10
    allow_tie: bool = False
    require_dimensions: bool = True  # False in the no-CoT ablation


@dataclass(frozen=True)
class ScoredDimension:
    """One user-specific dimension as the model wrote it (name "" when missing, scores None when missing or
    not numeric)."""

    name: str
    definition: str
    score_a: Optional[float]
    score_b: Optional[float]
    justification: str = ""

    def to_protocol(self) -> Dimension:
        return Dimension(self.name, self.definition, self.score_a, self.score_b)


@dataclass(frozen=True)
class Judgement:
    """The parsed reply. ``label`` is INVALID exactly when ``parse_error`` is set."""

    label: Label
    dimensions: tuple[ScoredDimension, ...] = ()
    total_a: Optional[float] = None  # as written by the model
    total_b: Optional[float] = None
    violations: tuple[str, ...] = ()
    contradicts_totals: bool = False
    parse_error: Optional[str] = None

    @property
    def sum_a(self) -> Optional[float]:
        return _sum(d.score_a for d in self.dimensions)

    @property
    def sum_b(self) -> Optional[float]:
        return _sum(d.score_b for d in self.dimensions)


def parse_judgement(text: Any, rules: FormatRules = FormatRules()) -> Judgement:
    """Parse and validate one reply; see the module docstring. Never raises."""
    if not isinstance(text, str) or not text.strip():
        return Judgement(Label.INVALID, parse_error="empty reply")
    found = _find_object(text)
    if found is None:
        return Judgement(Label.INVALID, parse_error="no JSON object in the reply")
    obj, outside = found
    label = _answer(obj.get("answer"))
    if label is None:
        return Judgement(Label.INVALID, parse_error=f"no valid answer (got {_short(obj.get('answer'))})")
    violations: list[str] = []
    if outside:
        violations.append("text outside the JSON object")
    if label == Label.TIE and not rules.allow_tie:
        violations.append("answered Tie, which was not offered")
    dims = _dimensions(obj.get("dimensions"), rules, violations)
    total_a = _number(obj.get("total_a"))
    total_b = _number(obj.get("total_b"))
    if rules.require_dimensions or dims:
        _check_totals(dims, total_a, total_b, obj, violations)
    contradiction = _contradicts(label, total_a, total_b, dims)
    return Judgement(label, tuple(dims), total_a, total_b, tuple(violations), contradiction)


def _find_object(text: str) -> Optional[tuple[dict, bool]]:
    """The last JSON object in ``text`` that has an ``answer`` (else the last object), and whether
    anything but whitespace and a code fence surrounds it."""
    decoder = json.JSONDecoder()
    best: Optional[tuple[dict, int, int]] = None
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict) and (best is None or "answer" in obj or "answer" not in best[0]):
            best = (obj, i, end)
        i = text.find("{", max(end, i + 1))
    if best is None:
        return None
    obj, start, end = best
    rest = (text[:start] + text[end:]).strip()
    fence = _FENCE.fullmatch(text.strip())
    outside = bool(rest) and not (fence is not None and fence.group(1).strip() == text[start:end].strip())
    return obj, outside


def _answer(value: Any) -> Optional[Label]:
    if not isinstance(value, str):
        return None
    m = _ANSWER.match(value)
    return _ANSWER_LABELS[m.group(1).lower()] if m else None


def _dimensions(raw: Any, rules: FormatRules, violations: list[str]) -> list[ScoredDimension]:
    if raw is None:
        if rules.require_dimensions:
            violations.append("no dimensions")
        return []
    if not isinstance(raw, list):
        violations.append("dimensions is not a list")
        return []
    dims: list[ScoredDimension] = []
    for k, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            violations.append(f"dimension {k} is not an object")
            continue
        name, definition = _text(item.get("name")), _text(item.get("definition"))
        if not name:
            violations.append(f"dimension {k} has no name")
        if not definition:
            violations.append(f"dimension {k} has no definition")
        scores = []
        for side in ("a", "b"):
            value = item.get(f"score_{side}")
            score = _number(value)
            if score is None:
                violations.append(f"dimension {k} score_{side} is not a number ({_short(value)})")
            elif not rules.score_min <= score <= rules.score_max:
                violations.append(
                    f"dimension {k} score_{side}={_fmt(score)} outside [{_fmt(rules.score_min)}, {_fmt(rules.score_max)}]"
                )
            scores.append(score)
        dims.append(ScoredDimension(name, definition, scores[0], scores[1], _text(item.get("justification"))))
    names = [d.name.lower() for d in dims if d.name]
    if len(set(names)) != len(names):
        violations.append("duplicate dimension names")
    if len(dims) < rules.min_dimensions and rules.require_dimensions:
        violations.append(f"{len(dims)} dimensions, at least {rules.min_dimensions} required")
    return dims


def _check_totals(
    dims: list[ScoredDimension], total_a: Optional[float], total_b: Optional[float], obj: dict, violations: list[str]
) -> None:
    for side, total in (("a", total_a), ("b", total_b)):
        if total is None:
            violations.append(f"total_{side} is missing or not a number ({_short(obj.get(f'total_{side}'))})")
            continue
        expected = _sum(getattr(d, f"score_{side}") for d in dims)
        if expected is not None and abs(total - expected) > _SUM_TOLERANCE:
            violations.append(f"total_{side}={_fmt(total)} but the scores sum to {_fmt(expected)}")


def _contradicts(
    label: Label, total_a: Optional[float], total_b: Optional[float], dims: list[ScoredDimension]
) -> bool:
    """Whether the written totals (or, without them, the sums) favour another answer than ``label``."""
    a = total_a if total_a is not None else _sum(d.score_a for d in dims)
    b = total_b if total_b is not None else _sum(d.score_b for d in dims)
    return contradicts(label, a, b)


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer literal beyond float range
        return None
    return value if math.isfinite(value) else None


def _sum(values: Any) -> Optional[float]:
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    total = float(sum(values))
    return total if math.isfinite(total) else None  # finite scores can still sum past float range


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _short(value: Any) -> str:
    return repr(value)[:40]


def _fmt(x: float) -> str:
    return f"{x:g}"
