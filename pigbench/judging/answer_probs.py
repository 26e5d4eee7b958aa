"""Answer-token probabilities: P(A) vs P(B) at the token right after the last answer marker.

Both backends give, for each generated token, its text and the log-probabilities of the answer
options at that step (the local backend records them from the logits; an OpenAI-compatible server
returns ``top_logprobs``). :func:`option_probs_after_marker` finds the step that answers — the first
non-whitespace token after the last ``<answer>`` in the generated text — and renormalises the
options' probabilities over the options. This works with or without reasoning before the answer.

A BPE tokenizer may merge the marker's end with the answer (Qwen2's pre-tokenizer makes ``">A"``
one piece of ``"<answer>A"``): the answering token is then ``">A"``, not ``"A"``, so each option is
counted in all its :func:`option_spellings`.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Optional, Sequence

# Part of a probs-scoring judge's config hash (hence its run key), not of its request cache key:
# a change here rereads the same answers. 2: a token merging the marker's end with the answer counts.
# 3: the local backend reads the raw logits, before generate's repetition penalty.
READING_VERSION = "3"


def option_probs_after_marker(
    tokens: Sequence[str],
    step_logprobs: Sequence[Mapping[str, float]],
    marker: str,
    options: Sequence[str],
) -> Optional[dict[str, float]]:
    """``{option: probability}`` (summing to 1) at the answer step, or None.

    ``tokens[i]`` is the decoded text of generated token ``i``; ``step_logprobs[i]`` maps an
    option to its log-probability at step ``i`` (a missing option counts as probability 0).
    None when the marker (matched case-insensitively, inner whitespace allowed) is absent, no
    token follows it, or every option has probability 0 there.
    """
    text = "".join(tokens)
    pattern = r"\s*".join(re.escape(c) for c in marker if not c.isspace())
    matches = list(re.finditer(pattern, text, re.IGNORECASE))
    if not matches or len(step_logprobs) < len(tokens):
        return None
    marker_end = matches[-1].end()
    pos = 0
    for tok, lps in zip(tokens, step_logprobs):
        start, pos = pos, pos + len(tok)
        if pos <= marker_end or (start < marker_end and not tok[marker_end - start :].strip()) or not tok.strip():
            continue
        probs = {o: math.exp(lps[o]) if o in lps else 0.0 for o in options}
        total = sum(probs.values())
        return {o: p / total for o, p in probs.items()} if total > 0 else None
    return None


def option_spellings(option: str, marker: str) -> list[str]:
    """The texts of a token that answers ``option`` right after ``marker``: bare, after a space, and
    merged with an end of the marker (``">A"``, ``"r>A"``, ... for ``"<answer>"``)."""
    return [option, f" {option}", *(marker[-k:] + option for k in range(1, len(marker) + 1))]


def options_from_top_logprobs(
    top: Sequence[Mapping[str, object]], options: Sequence[str], marker: str
) -> dict[str, float]:
    """Option log-probabilities from one step's ``top_logprobs`` (OpenAI format: ``token``, ``logprob``).

    Tokens are compared after stripping whitespace with each option's :func:`option_spellings`;
    the variants of an option (``"A"``, ``" A"``, ``">A"``) are summed. Options absent from the top
    list are left out (probability below the cut).
    """
    spelled = {sp.strip(): o for o in options for sp in option_spellings(o, marker)}
    mass: dict[str, float] = {}
    for entry in top:
        tok, lp = entry.get("token"), entry.get("logprob")
        if isinstance(tok, str) and isinstance(lp, (int, float)) and tok.strip() in spelled:
            key = spelled[tok.strip()]
            mass[key] = mass.get(key, 0.0) + math.exp(lp)
    return {o: math.log(p) for o, p in mass.items() if p > 0}
