"""PIGReward's prompts: the reasoner's (one per reference pair) and the reward model's.

Reasoner, for each of a user's reference pairs::

    A user asked an image generator for: "<prompt>". ... the user preferred the first.
    Preferred image: <img>   Rejected image: <img>
    In two to four sentences, explain which qualities of the preferred image ...

The rationales, numbered, form the **user context**. Reward model, for each target::

    [system] You are a personalized image-preference reward model ...
    <task and output format (output_format.py)>          shared by every prompt
    What this user's past choices say about their taste:  shared by the user's targets
    1. Prompt: "...". <rationale>  ...
    The user now asked for: "<target prompt>"  Image A: <img>  Image B: <img>
    Reply with the JSON object only.

Everything shared comes first, so a user's targets share one prefix (see
:mod:`pigbench.fastgen`). Ablations: ``chain_of_thought=False`` asks for ``{"answer": ...}``
only; a reward prompt without a text context shows the raw reference images instead, and one
without references (K = 0) says that no past choices are known.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from pigbench.judging.messages import Part, Prompt, image, text
from pigbench.pigreward.output_format import FormatRules
from pigbench.protocol import Episode, ReferencePair

PROMPT_VERSION = "1"  # bump when the reasoner's prompt or user_context's form changes: cached user contexts
# depend on them (a change to the reward prompt alone bumps the evaluator's version, evaluators/pigreward.py)

REASONER_INSTRUCTION = (
    "In two to four sentences, explain which qualities of the preferred image most likely made this user "
    "choose it over the rejected one: content, composition, colour, lighting, style, realism, level of detail. "
    "Describe the user's taste in general terms that would help predict their future choices. "
    "Reply with the explanation only."
)

REWARD_SYSTEM = (
    "You are a personalized image-preference reward model. You predict which of two images one specific "
    "user prefers, from what is known about that user's taste."
)



def reasoner_prompt(pair: ReferencePair) -> Prompt:
    """Ask for the rationale of one past choice (preferred image shown first, labelled)."""
    return Prompt((
        text(f'A user asked an image generator for: "{pair.prompt}". It produced two images, and the user '
             "preferred the first one."),
        text("Preferred image:"), image(pair.preferred),
        text("Rejected image:"), image(pair.rejected),
        text(REASONER_INSTRUCTION),
    ))


def user_context(pairs: Sequence[ReferencePair], rationales: Sequence[str]) -> str:
    """The user context: one numbered rationale per reference pair, with its prompt."""
    return "\n".join(f'{k}. Prompt: "{pair.prompt}". {why.strip() or "(no rationale)"}'
                     for k, (pair, why) in enumerate(zip(pairs, rationales), 1))


def task_instruction(rules: FormatRules, chain_of_thought: bool) -> str:
    """The task and the output format the parser enforces (output_format.py)."""
    answers = '"A" or "B"' + (' (or "Tie" if this user would like both equally; use it rarely)' if rules.allow_tie else "")
    if not chain_of_thought:
        return (f"Task: say which of two new images this user prefers. Reply with exactly one JSON object and "
                f'nothing else: {{"answer": "A"}} or {{"answer": "B"}}. "answer" is {answers}.')
    example = json.dumps(example_reply(rules))
    lo, hi = f"{rules.score_min:g}", f"{rules.score_max:g}"
    return (
        "Task: say which of two new images this user prefers, in four steps.\n"
        f"1. From what is known about the user, derive at least {rules.min_dimensions} evaluation dimensions that "
        "matter to this specific user (for example a colour palette, a composition habit, a style, a level of "
        "detail), each with a one-sentence definition.\n"
        f"2. Score Image A and Image B on every dimension from {lo} (worst for this user) to {hi} (best), with a "
        "one-sentence justification.\n"
        "3. Sum each image's scores into total_a and total_b.\n"
        f"4. Answer with the image this user prefers: {answers}, in agreement with the totals.\n"
        f"Reply with exactly one JSON object and nothing else, in this form:\n{example}"
    )


def example_reply(rules: FormatRules) -> dict[str, Any]:
    """The reply the reward prompt shows as its output format: ``rules.min_dimensions`` dimensions with
    placeholder texts, scores within the range (whole numbers where the range allows), each image
    ahead on some dimension where there are two or more, totals that are the sums and the answer they
    favour. It passes :func:`~pigbench.pigreward.output_format.parse_judgement` under ``rules`` with no
    violation and no contradiction; which image it answers follows from the number of dimensions."""
    lo, hi = float(rules.score_min), float(rules.score_max)
    whole = lo.is_integer() and hi.is_integer() and hi - lo >= 4  # the quarter points round to distinct numbers

    def at(share: float) -> float:
        score = lo + share * (hi - lo)
        return int(round(score)) if whole else score

    # A and B ahead in turn (even sums after each two), then B ahead by at(0.75) - at(0.5): less than A's
    # lead after an odd number of turns, so the totals never tie
    turns = [(at(0.75), at(0.25)), (at(0.25), at(0.75))]
    scores = [turns[k % 2] for k in range(rules.min_dimensions - 1)] + [(at(0.5), at(0.75))]
    dimensions = [{"name": f"<dimension {k} name>", "definition": "<one-sentence definition>", "score_a": a,
                   "score_b": b, "justification": "<one-sentence justification>"}
                  for k, (a, b) in enumerate(scores, 1)]
    total_a, total_b = sum(a for a, _ in scores), sum(b for _, b in scores)
    return {"dimensions": dimensions, "total_a": total_a, "total_b": total_b,
            "answer": "A" if total_a > total_b else "B"}


def reward_prompt(episode: Episode, rules: FormatRules, chain_of_thought: bool, context: str | None) -> Prompt:
    """The reward model's prompt. ``context`` None shows the reference images themselves; an episode
    without references (K = 0) says that nothing is known about the user."""
    parts: list[Part] = [text(task_instruction(rules, chain_of_thought))]
    if not episode.references:
        parts.append(text("No past choices of this user are available."))
    elif context is not None:
        parts.append(text(f"What this user's past choices say about their taste:\n{context}"))
    else:
        parts.append(text("This user's past choices: for each prompt, the user preferred one image over the other."))
        for k, pair in enumerate(episode.references, 1):
            parts += [text(f'{k}. Prompt: "{pair.prompt}"'), text("Preferred image:"), image(pair.preferred),
                      text("Rejected image:"), image(pair.rejected)]
    target = episode.target
    parts += [
        text(f'The user now asked for: "{target.prompt}"'),
        text("Image A:"), image(target.image_a),
        text("Image B:"), image(target.image_b),
        text("Reply with the JSON object only."),
    ]
    return Prompt(tuple(parts), system=REWARD_SYSTEM)
