"""Stage 2, ``pigbench build expand``: four concrete variants per prompt, validated.

The expander (:mod:`pigbench.build.expanders`: an OpenAI-compatible chat API or a local
transformers causal LM) is asked for ``{"variants": [four strings]}``. A reply is valid when it
holds exactly four distinct (ignoring case and spacing), non-empty strings of at most
``max_chars`` characters. An invalid reply is sent back to the model with the reason, up to
``attempts`` times in all; a set still invalid then is written to ``expand_failures.jsonl`` with
every reply, and the stage exits non-zero. A set is never filled with placeholders or partial
variants. Resuming skips the sets already in ``variants.jsonl`` and retries the failed ones.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from pigbench.build.expanders import RequestFailed, add_expander_arguments, expander_from_args
from pigbench.build.workspace import (PROMPT_FIELDS, VARIANT_FIELDS, Workspace, append_jsonl, read_jsonl,
                                      require_at_least_one)
from pigbench.protocol import normalize_prompt

VARIANTS = 4
DEFAULT_MAX_CHARS = 300  # SDXL's CLIP encoders read 77 tokens, roughly 300 characters

INSTRUCTION = """\
You write prompts for a text-to-image model. Expand the base prompt below into four concrete prompts \
that keep its subject but differ clearly from one another in visual style (for example photograph, \
oil painting, watercolor, 3D render, anime, pixel art) and in semantic context (setting, time of day, \
mood, surrounding objects), so that different people would prefer different images.

Base prompt: {prompt}

Answer with JSON only, exactly in this form: {{"variants": ["...", "...", "...", "..."]}}
Rules: exactly four strings; all different; none empty; each at most {max_chars} characters."""

RETRY = "Your answer was not accepted: {error}. Answer again with the JSON object only."


class InvalidReply(ValueError):
    """A reply that is not four valid variants; the message says what is wrong."""


class Expander(Protocol):
    """A chat model: ``complete`` answers a list of ``{"role", "content"}`` messages with text."""

    def complete(self, messages: list[dict[str, str]]) -> str: ...

    def provenance(self) -> dict[str, Any]: ...


def parse_variants(reply: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """The four variants in ``reply`` (JSON, possibly fenced or surrounded by prose), or :class:`InvalidReply`."""
    fenced = re.search(r"```(?:json)?\s*(.*?)```", reply, flags=re.DOTALL)
    text = fenced.group(1) if fenced else reply
    decoder = json.JSONDecoder()
    value: Any = None
    for start in re.finditer(r"[{\[]", text):
        try:
            value, _ = decoder.raw_decode(text, start.start())
            break
        except json.JSONDecodeError:
            continue
    else:
        raise InvalidReply("the reply holds no JSON object")
    if isinstance(value, dict):
        if "variants" not in value:
            raise InvalidReply(f'the JSON object has no "variants" key (keys: {sorted(value)})')
        value = value["variants"]
    if not isinstance(value, list):
        raise InvalidReply(f'"variants" must be a list, found {type(value).__name__}')
    if len(value) != VARIANTS:
        raise InvalidReply(f"expected exactly {VARIANTS} variants, found {len(value)}")
    variants = []
    for i, v in enumerate(value, start=1):
        if not isinstance(v, str):
            raise InvalidReply(f"variant {i} is a {type(v).__name__}, not a string")
        v = " ".join(v.split())
        if not v:
            raise InvalidReply(f"variant {i} is empty")
        if len(v) > max_chars:
            raise InvalidReply(f"variant {i} has {len(v)} characters, more than {max_chars}")
        variants.append(v)
    if len({normalize_prompt(v) for v in variants}) != VARIANTS:
        raise InvalidReply("the variants are not all different")
    return variants


@dataclass
class Expansion:
    """The outcome for one prompt: ``variants`` when valid, else None; every reply and its error."""

    variants: Optional[list[str]]
    replies: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def expand_prompt(expander: Expander, prompt: str, attempts: int = 3, max_chars: int = DEFAULT_MAX_CHARS) -> Expansion:
    """Ask for four variants of ``prompt``, feeding each rejection back, at most ``attempts`` times."""
    messages = [{"role": "user", "content": INSTRUCTION.format(prompt=prompt, max_chars=max_chars)}]
    result = Expansion(variants=None)
    for _ in range(attempts):
        try:
            reply = expander.complete(messages)
        except RequestFailed as exc:
            result.replies.append("")
            result.errors.append(f"request failed: {exc}")
            continue
        result.replies.append(reply)
        try:
            result.variants = parse_variants(reply, max_chars)
            return result
        except InvalidReply as exc:
            result.errors.append(str(exc))
            messages += [{"role": "assistant", "content": reply},
                         {"role": "user", "content": RETRY.format(error=exc)}]
    return result


def expand_workspace(ws: Workspace, expander: Expander, attempts: int, max_chars: int,
                     limit: Optional[int] = None) -> tuple[int, list[str]]:
    """Expand every selected prompt not yet in ``variants.jsonl``; returns (written, failed set ids)."""
    prompts = read_jsonl(ws.require(ws.prompts, "prompts"), PROMPT_FIELDS)
    done = {r["set_id"] for r in read_jsonl(ws.variants, VARIANT_FIELDS)}
    pending = [p for p in prompts if p["set_id"] not in done][:limit]
    written, failed = 0, []
    for number, p in enumerate(pending, start=1):
        out = expand_prompt(expander, p["base_prompt"], attempts, max_chars)
        record = {"set_id": p["set_id"], "base_prompt": p["base_prompt"], "attempts": len(out.replies),
                  "expander": expander.provenance(), "max_chars": max_chars}
        if out.variants is None:
            failed.append(p["set_id"])
            append_jsonl(ws.expand_failures, {**record, "replies": out.replies, "errors": out.errors})
            print(f"[{number}/{len(pending)}] {p['set_id']}: INVALID after {len(out.replies)} attempts: "
                  f"{out.errors[-1]}", file=sys.stderr)
        else:
            written += 1
            append_jsonl(ws.variants, {**record, "variants": out.variants})
            print(f"[{number}/{len(pending)}] {p['set_id']}: ok ({len(out.replies)} attempt(s))")
    return written, failed


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_expander_arguments(p)
    p.add_argument("--attempts", type=int, default=3, help="tries per prompt before it is reported (default 3)")
    p.add_argument("--max-chars", type=int, default=DEFAULT_MAX_CHARS, help="longest allowed variant")
    p.add_argument("--limit", type=int, help="expand at most N pending prompts")


def main(args: argparse.Namespace) -> int:
    require_at_least_one(("--attempts", args.attempts), ("--max-chars", args.max_chars), ("--limit", args.limit))
    ws = Workspace.at(args.workdir)
    written, failed = expand_workspace(ws, expander_from_args(args), args.attempts, args.max_chars, args.limit)
    total = len(read_jsonl(ws.variants))
    print(f"expanded {written} prompt(s); {total} sets have variants in {ws.variants}")
    if failed:
        print(f"{len(failed)} prompt(s) stayed invalid (see {ws.expand_failures}); run again to retry them: "
              + ", ".join(failed), file=sys.stderr)
        return 1
    return 0
