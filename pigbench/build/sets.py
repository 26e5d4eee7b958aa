"""The four-image sets of a workspace: prompts, variants, renders and review decisions joined.

A set is *rendered* when all four of its images are recorded in ``renders.jsonl`` and on disk,
and *kept* when the last review decision for it is ``keep``. Review decisions are appended to
``review.jsonl``; the last one per set wins, so a curator can change their mind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

from pigbench.build.workspace import (PROMPT_FIELDS, RENDER_FIELDS, REVIEW_FIELDS, VARIANT_FIELDS, BuildError,
                                      Workspace, append_jsonl, read_jsonl)

DECISIONS = ("keep", "drop")


@dataclass(frozen=True)
class ImageSet:
    set_id: str
    base_prompt: str
    category: str
    challenge: str
    prompts: tuple[str, ...]  # the four variants, by variant index
    images: tuple[str, ...]  # paths relative to the workspace root, by variant index
    renders: tuple[dict[str, Any], ...]  # the render record of each image

    def to_json(self) -> dict[str, Any]:
        return {"set_id": self.set_id, "base_prompt": self.base_prompt, "category": self.category,
                "challenge": self.challenge, "prompts": list(self.prompts), "images": list(self.images)}


def rendered_sets(ws: Workspace) -> list[ImageSet]:
    """Every set whose four images are rendered, in prompt-selection order."""
    prompts = read_jsonl(ws.require(ws.prompts, "prompts"), PROMPT_FIELDS)
    variants = {v["set_id"]: v["variants"] for v in read_jsonl(ws.variants, VARIANT_FIELDS)}
    renders: dict[tuple[str, int], dict[str, Any]] = {}
    for r in read_jsonl(ws.renders, RENDER_FIELDS):
        if (ws.root / r["path"]).is_file():
            renders[(r["set_id"], r["index"])] = r
    out = []
    for p in prompts:
        sid = p["set_id"]
        records = [renders.get((sid, i)) for i in range(4)]
        if sid in variants and all(records):
            out.append(ImageSet(sid, p["base_prompt"], p["category"], p["challenge"], tuple(variants[sid]),
                                tuple(r["path"] for r in records), tuple(records)))  # type: ignore[index]
    return out


def decisions(ws: Workspace) -> dict[str, dict[str, Any]]:
    """The latest review decision per set id."""
    return {d["set_id"]: d for d in read_jsonl(ws.review, REVIEW_FIELDS)}


def kept_sets(ws: Workspace) -> list[ImageSet]:
    latest = decisions(ws)
    return [s for s in rendered_sets(ws) if latest.get(s.set_id, {}).get("decision") == "keep"]


def record_decision(ws: Workspace, set_id: str, decision: str, reason: str,
                    known: Optional[set[str]] = None) -> dict[str, Any]:
    """Append a curator decision; a drop needs a reason. Raises ValueError with the reason to show."""
    decision, reason = decision.strip().lower(), " ".join(reason.split())
    if decision not in DECISIONS:
        raise ValueError(f"decision must be keep or drop, not {decision!r}")
    if decision == "drop" and not reason:
        raise ValueError("say why the set is dropped")
    if len(reason) > 500:
        raise ValueError("the reason is longer than 500 characters")
    if known is None:
        known = {s.set_id for s in rendered_sets(ws)}
    if set_id not in known:
        raise BuildError(f"no rendered set {set_id!r} in {ws.root}")
    entry = {"set_id": set_id, "decision": decision, "reason": reason, "time": time.time()}
    append_jsonl(ws.review, entry)
    return entry
