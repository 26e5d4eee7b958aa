"""PIGReward on a batch of episodes: user contexts from the reasoner (cached), then the reward model.

1. **Contexts.** Users whose context is not in the :class:`UserContextCache` get one reasoner
   prompt per reference pair, all in one backend call; each finished user is stored. A user whose
   reasoner call failed is not stored (a later run retries it) and their episodes are INVALID with
   the error.
2. **Judgements.** One reward prompt per episode, in one backend call. A backend that shares
   prefixes gets each prompt's context key, so a user's targets reuse that user's prefix. Each
   reply is parsed by :func:`~pigbench.pigreward.output_format.parse_judgement`.

Every prediction keeps the raw reply, its dimensions (name, definition, score per image), the
per-image sums as ``score_a``/``score_b``, the justifications as ``rationale``, and in ``extra``:
``context_key``, ``format_violations`` (list), ``contradicts_totals`` (bool), ``truncated`` (true
when the reply stopped at ``max_new_tokens``), ``served`` (a server's word on who answered: another
``model`` than asked for, a ``system_fingerprint``), ``reasoner_served`` (the same for the user
context's rationales, one record per rationale, stored with the context; only when a server said
anything about them), ``reasoner_empty_rationales`` (the numbers, from 1, of the user's reference
pairs whose rationale is empty because the reasoner refused or replied with nothing: the context
says "(no rationale)" there; read from the stored rationales, so a cached context gives the same;
only when there is one) and, when the reply is unparseable, ``invalid_reason`` (an unparseable reply
is an answer, not an ``error``; a truncated one says it was cut, a served refusal that the model refused).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

from pigbench.judging.backend import Backend, Generation, GenerationParams, refusal_reason
from pigbench.judging.messages import Prompt
from pigbench.pigreward.context_cache import UserContext, UserContextCache, context_key
from pigbench.pigreward.output_format import FormatRules, parse_judgement
from pigbench.pigreward.prompts import reasoner_prompt, reward_prompt, user_context
from pigbench.protocol import Episode, Label, Prediction


@dataclass(frozen=True)
class PIGRewardSettings:
    """What to ask and how long to generate. ``use_reasoner=False`` is the no-reasoner ablation
    (raw reference images in the reward prompt), ``chain_of_thought=False`` the no-CoT one."""

    rules: FormatRules
    reward_params: GenerationParams
    reasoner_params: GenerationParams
    chain_of_thought: bool = True
    use_reasoner: bool = True


class PIGRewardPipeline:
    """The two PIGReward steps over backends; see the module docstring."""

    def __init__(self, reward: Backend, reasoner: Optional[Backend], cache: UserContextCache,
                 settings: PIGRewardSettings) -> None:
        if settings.use_reasoner and reasoner is None:
            raise ValueError("use_reasoner=True needs a reasoner backend")
        self.reward, self.reasoner, self.cache, self.settings = reward, reasoner, cache, settings

    def contexts(self, episodes: Sequence[Episode]) -> dict[str, Union[UserContext, str]]:
        """Context (or the reason it failed) for every episode's user, by :func:`context_key`."""
        needed: dict[str, Episode] = {}
        for ep in episodes:
            key = context_key(ep.user_id, ep.references)
            if key not in self.cache:
                needed.setdefault(key, ep)
        prompts = [reasoner_prompt(pair) for ep in needed.values() for pair in ep.references]
        generations = self.reasoner.generate(prompts, self.settings.reasoner_params) if prompts else []  # type: ignore[union-attr]
        fresh: dict[str, UserContext] = {}
        failed: dict[str, str] = {}
        start = 0
        for key, ep in needed.items():
            gens = generations[start : start + len(ep.references)]
            start += len(ep.references)
            errors = [g.error for g in gens if g.error is not None]
            if errors:
                failed[key] = f"reasoner failed for user {ep.user_id!r}: {errors[0]}"
                continue
            rationales = tuple("" if g.refused else (g.text or "").strip() for g in gens)  # a refusal is no rationale
            served = tuple(g.served for g in gens)
            fresh[key] = UserContext(ep.user_id, rationales, user_context(ep.references, rationales),
                                     served if any(served) else ())
        self.cache.put_many(fresh)
        out: dict[str, Union[UserContext, str]] = dict(failed)
        for ep in episodes:
            key = context_key(ep.user_id, ep.references)
            out.setdefault(key, self.cache.get(key))  # type: ignore[arg-type]
        return out

    def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
        s = self.settings
        contexts = self.contexts(episodes) if s.use_reasoner else {}
        predictions: list[Optional[Prediction]] = [None] * len(episodes)
        todo: list[tuple[int, str, Prompt]] = []
        for i, ep in enumerate(episodes):
            key = context_key(ep.user_id, ep.references)
            context = contexts.get(key)
            if isinstance(context, str):
                predictions[i] = Prediction.invalid(ep.sample_id, context)
                continue
            text = context.text if context is not None else None
            todo.append((i, key, reward_prompt(ep, s.rules, s.chain_of_thought, text)))
        prompts = [p for _, _, p in todo]
        if getattr(self.reward, "shares_prefixes", False):
            gens = self.reward.generate(prompts, s.reward_params, share_keys=[k for _, k, _ in todo])  # type: ignore[call-arg]
        else:
            gens = self.reward.generate(prompts, s.reward_params)
        for (i, key, _), gen in zip(todo, gens):
            predictions[i] = prediction = self.to_prediction(episodes[i].sample_id, gen, key)
            context = contexts.get(key)
            if isinstance(context, UserContext):
                if context.served:
                    prediction.extra["reasoner_served"] = list(context.served)
                empty = [k for k, why in enumerate(context.rationales, 1) if not why.strip()]
                if empty:
                    prediction.extra["reasoner_empty_rationales"] = empty
        return predictions  # type: ignore[return-value]

    def to_prediction(self, sample_id: str, gen: Generation, key: str) -> Prediction:
        if gen.error is not None:
            return Prediction(sample_id, Label.INVALID, raw_text=gen.text, error=gen.error)
        j = parse_judgement("" if gen.refused else gen.text, self.settings.rules)  # a refusal is no answer
        extra: dict[str, object] = {"context_key": key, "format_violations": list(j.violations),
                                    "contradicts_totals": j.contradicts_totals}
        if gen.truncated:
            extra["truncated"] = True
        if gen.served:
            extra["served"] = gen.served
        if gen.refused:
            extra["invalid_reason"] = refusal_reason(gen.text)
        elif j.parse_error is not None:
            extra["invalid_reason"] = ("output cut at max_new_tokens before its JSON object was complete"
                                       if gen.truncated else j.parse_error)
        rationale = "\n".join(f"{d.name}: {d.justification}" if d.name else d.justification
                              for d in j.dimensions if d.justification) or None
        return Prediction(sample_id, j.label, score_a=j.sum_a, score_b=j.sum_b, raw_text=gen.text, rationale=rationale,
                          dimensions=[d.to_protocol() for d in j.dimensions], extra=extra)
