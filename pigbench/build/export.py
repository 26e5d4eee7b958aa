"""Stage 6, ``pigbench build export``: the dataset in the PIGBench format, plus a datasheet.

Writes, under ``--out``, what :func:`pigbench.adapters.pigbench_format.write_dataset` defines
(``instances.jsonl``, ``rankings.jsonl``, ``README.md`` card; ``docs/pigbench_format.md``) and
copies the images to ``images/<instance_id>/<index>.png``. Instances are the kept sets with at
least one ranking (``--include-unranked`` adds the others); an instance id is the set id, and
``ranks[i]`` ranks ``images[i]`` (variant order, whatever the order on the annotator's screen).
Beside them, files the format does not define:

    generation.jsonl      per image: model, scheduler, steps, guidance, size, dtype, seed, sha256
    annotation_log.jsonl  per ranking: screen order shown, ranks as given on screen, time taken
    datasheet.json        counts, category balance, review decisions, agreement per instance
    README.md             the card, with the datasheet appended in prose and tables

Agreement per instance is Kendall's W (tie-corrected) over its annotators; divergence is the mean
Kendall tau-b and the share of image pairs two users order differently, over user pairs that
ranked the same instance. Running export again rewrites the files and copies only changed images; an image
an earlier export wrote (as listed in its ``generation.jsonl``, at ``images/<instance_id>/<index>.png``) that
the new export no longer names, e.g. of a set dropped since, is removed (and reported); no other file is touched.
An image whose file does not match the sha256 recorded when it was rendered is refused, not copied, and so
is a kept set (ranked, or any with ``--include-unranked``) with an image file missing.

A ranking records the sha256 of the four files the annotation app served when it was submitted; one whose
images were rendered again since (another sha256 than the set's render records now) refers to images its
annotator never saw: it is skipped, not exported, and counted in the datasheet under ``counts.rankings_skipped``
(a set left with no ranking is then unranked). Rankings of a set the curator dropped in review after it was ranked
are left out too (they stay in ``annotate.sqlite``), counted under their own reason. A ranking stored before the app recorded these hashes (an older
``annotate.sqlite``) cannot be checked: it is exported as before and counted as ``counts.rankings_unchecked``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections import Counter, defaultdict
from pathlib import Path
from statistics import mean, median
from typing import Any, Callable, Optional, Sequence

from pigbench.build.agreement import kendall_tau_b, pairwise_disagreement, set_agreement
from pigbench.build.annotate.store import AnnotationStore
from pigbench.build.prompts import read_partiprompts
from pigbench.build.sets import ImageSet, decisions, kept_sets, rendered_sets
from pigbench.build.workspace import (VARIANT_FIELDS, BuildError, Workspace, file_sha256, read_jsonl, write_atomic,
                                      write_jsonl)

GENERATION_FIELDS = ("model", "scheduler", "scheduler_class", "steps", "guidance", "width", "height", "dtype",
                     "negative_prompt", "seed", "generator", "sha256", "diffusers_version", "torch_version")
RERENDERED = "images rendered again after the ranking"
DROPPED = "set dropped in review after the ranking"
SKIP_NOTES = {RERENDERED: "the annotator never saw these images",
              DROPPED: "they stay in annotate.sqlite for the record"}
"""Why each reason of ``counts.rankings_skipped`` leaves a ranking out, as ``export`` prints it."""
EXPORTED_IMAGE = re.compile(r"images/[A-Za-z0-9_-][A-Za-z0-9_.-]*/[0-9]+\.png")


def export_dataset(ws: Workspace, out: Path, include_unranked: bool = False,
                   log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict[str, Any]:
    """Write the dataset and its datasheet under ``out``; returns the datasheet. ``out`` must be a
    folder other than the workspace (which holds the annotation database, not for publishing).
    Images an earlier export into ``out`` wrote that this one no longer names are removed, each reported to ``log``."""
    from pigbench.adapters.pigbench_format import write_dataset

    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} is a file; a dataset folder is expected")
    if out.resolve() == ws.root:
        raise BuildError(f"--out {out} is the build workspace; export to a folder of its own (the workspace "
                         "holds annotate.sqlite, which is not for publishing)")
    store = AnnotationStore(ws.require(ws.annotate_db, "annotate init"))
    kept, decisions_now = kept_sets(ws), decisions(ws)
    current = {s.set_id: [r["sha256"] for r in s.renders] for s in kept}
    rankings, skipped = [], Counter[str]()
    for r in store.all_rankings():
        if decisions_now.get(r["set_id"], {}).get("decision") == "drop":
            skipped[DROPPED] += 1
        elif r["images_sha256"] is not None and r["set_id"] in current and r["images_sha256"] != current[r["set_id"]]:
            skipped[RERENDERED] += 1
        else:
            rankings.append(r)
    ranked_ids = {r["set_id"] for r in rankings}
    sets = [s for s in kept if include_unranked or s.set_id in ranked_ids]
    unrendered = sorted(sid for sid, d in decisions_now.items() if d["decision"] == "keep"
                        and (include_unranked or sid in ranked_ids) and sid not in {s.set_id for s in sets})
    if unrendered:
        raise BuildError(f"kept set {unrendered[0]} of {ws.root} has an image file missing (or left the selection); "
                         f"`pigbench build render --workdir {ws.root}` renders it again, or drop it with "
                         f"`pigbench build review --set {unrendered[0]} --decision drop --reason ...`")
    if not sets:
        raise BuildError(f"nothing to export: no kept set of {ws.root} has a ranking yet"
                         + "".join(f" ({n} ranking(s) skipped: {reason})" for reason, n in sorted(skipped.items())))
    exported = {s.set_id for s in sets}
    rankings = [r for r in rankings if r["set_id"] in exported]
    _check_images(ws, sets)
    out.mkdir(parents=True, exist_ok=True)
    written_before = _exported_images(out)
    instances = [_instance(ws, out, s) for s in sets]
    write_dataset(out, instances, [{"user_id": r["annotator_id"], "instance_id": r["set_id"], "ranks": r["ranks"]}
                                   for r in rankings])
    _remove_stale_images(out, written_before - {p for inst in instances for p in inst["images"]}, log)
    write_jsonl(out / "generation.jsonl", [
        {"instance_id": s.set_id, "index": i, "prompt": s.prompts[i], "image": inst["images"][i],
         **{k: s.renders[i].get(k) for k in GENERATION_FIELDS}}
        for s, inst in zip(sets, instances) for i in range(4)])
    write_jsonl(out / "annotation_log.jsonl", [
        {"user_id": r["annotator_id"], "instance_id": r["set_id"], "display_order": r["display_order"],
         "screen_ranks": r["screen_ranks"], "elapsed_ms": r["elapsed_ms"], "submitted": r["submitted"]}
        for r in rankings])
    sheet = datasheet(ws, sets, rankings, dict(sorted(skipped.items())))
    write_atomic(out / "datasheet.json", json.dumps(sheet, indent=2).encode("utf-8"))
    with (out / "README.md").open("a", encoding="utf-8") as card:
        card.write("\n" + datasheet_markdown(sheet))
    return sheet


def _check_images(ws: Workspace, sets: Sequence[ImageSet]) -> None:
    """Raise :class:`BuildError` at the first image whose file does not match the sha256 recorded at render time,
    or that was rendered from another prompt than its set's current variant."""
    for s in sets:
        for rel, record, prompt in zip(s.images, s.renders, s.prompts):
            if record.get("prompt") != prompt:
                raise BuildError(f"{ws.root / rel} was rendered from {record.get('prompt')!r}, not from its variant "
                                 f"{prompt!r} in {ws.variants}; `pigbench build render --workdir {ws.root}` "
                                 "renders it again")
            recorded, actual = record.get("sha256"), file_sha256(ws.root / rel)
            if actual != recorded:
                raise BuildError(f"{ws.root / rel}: sha256 {actual} does not match {recorded} recorded in "
                                 f"{ws.renders}; `pigbench build render --workdir {ws.root}` with the same settings "
                                 "renders it again")


def _exported_images(out: Path) -> set[str]:
    """The image paths an earlier export wrote under ``out``, as its ``generation.jsonl`` lists them (only paths of
    the ``images/<instance_id>/<index>.png`` layout export writes); empty when there was none."""
    return {g["image"] for g in read_jsonl(out / "generation.jsonl")
            if isinstance(g.get("image"), str) and EXPORTED_IMAGE.fullmatch(g["image"])
            and g["image"] == f"images/{g.get('instance_id')}/{g.get('index')}.png"}


def _remove_stale_images(out: Path, stale: set[str], log: Callable[[str], None]) -> None:
    """Delete these images of an earlier export (and their folder once empty), reporting each one removed.
    Called after the new ``instances.jsonl`` is written and before the new ``generation.jsonl``, so an
    interrupted export still finds them listed on the next run."""
    for rel in sorted(stale):
        path = out / rel
        if path.is_file():
            path.unlink()
            log(f"removed {path}: an earlier export wrote it, and no exported instance names it now")
        if path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()


def _instance(ws: Workspace, out: Path, s: ImageSet) -> dict[str, Any]:
    images = []
    for i, rel in enumerate(s.images):
        target_rel = f"images/{s.set_id}/{i}.png"
        src, dst = ws.root / rel, out / target_rel
        if not dst.is_file() or file_sha256(dst) != s.renders[i]["sha256"]:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        images.append(target_rel)
    return {"instance_id": s.set_id, "base_prompt": s.base_prompt, "category": s.category, "challenge": s.challenge,
            "prompts": list(s.prompts), "images": images, "generator": s.renders[0]["model"],
            "seeds": [r["seed"] for r in s.renders]}


def datasheet(ws: Workspace, sets: Sequence[ImageSet], rankings: Sequence[dict[str, Any]],
              skipped: Optional[dict[str, int]] = None) -> dict[str, Any]:
    """Counts, category balance, review outcome, agreement per instance and divergence on shared instances;
    ``skipped``: rankings left out, per reason."""
    by_set: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for r in rankings:
        by_set[r["set_id"]][r["annotator_id"]] = r["ranks"]
    per_user = Counter(r["annotator_id"] for r in rankings)
    categories = Counter(s.category for s in sets)
    source = Counter(p.category for p in read_partiprompts() if p.challenge == "Simple Detail")
    agreement = []
    for s in sets:
        ranks = list(by_set.get(s.set_id, {}).values())
        agreement.append({"instance_id": s.set_id, "category": s.category, **set_agreement(ranks)})
    shared = [(a, b) for users in by_set.values() for a, b in _pairs(list(users.values()))]
    taus = [t for t in (kendall_tau_b(a, b) for a, b in shared) if t is not None]
    ws_values = [a["kendalls_w"] for a in agreement if a["kendalls_w"] is not None]
    review = Counter(d["decision"] for d in decisions(ws).values())
    drop_reasons = Counter(d["reason"] for d in decisions(ws).values() if d["decision"] == "drop")
    return {
        "counts": {"instances": len(sets), "users": len(per_user), "rankings": len(rankings), "images": 4 * len(sets),
                   "rankings_with_ties": sum(len(set(r["ranks"])) < 4 for r in rankings),
                   "rankings_skipped": dict(skipped or {}),
                   "rankings_unchecked": sum(r.get("images_sha256") is None for r in rankings),
                   "users_with_at_least_2_sets": sum(n >= 2 for n in per_user.values()),
                   "sets_per_user": _summary(list(per_user.values())),
                   "annotators_per_instance": _summary([len(by_set.get(s.set_id, {})) for s in sets])},
        "category_balance": [{"category": c, "instances": n, "share": n / len(sets),
                              "simple_detail_share": source[c] / sum(source.values()) if source else None}
                             for c, n in sorted(categories.items())],
        "review": {"rendered_sets": len(rendered_sets(ws)), "kept": review["keep"], "dropped": review["drop"],
                   "drop_reasons": dict(drop_reasons.most_common())},
        "generation": _generation_summary(sets),
        "expander": _expander_summary(ws, sets),
        "agreement": {"kendalls_w": _summary(ws_values), "per_instance": agreement},
        "divergence": {"user_pairs_on_shared_instances": len(shared),
                       "mean_tau_b": mean(taus) if taus else None,
                       "mean_pairwise_disagreement": (mean(pairwise_disagreement(a, b) for a, b in shared)
                                                      if shared else None),
                       "same_top_choice": mean(_tops(a) == _tops(b) for a, b in shared) if shared else None},
    }


def datasheet_markdown(sheet: dict[str, Any]) -> str:
    c, d, w = sheet["counts"], sheet["divergence"], sheet["agreement"]["kendalls_w"]
    lines = ["## Datasheet", "",
             f"{c['instances']} instances ({c['images']} images), {c['users']} users, {c['rankings']} rankings "
             f"({c['rankings_with_ties']} with ties); {c['users_with_at_least_2_sets']} users ranked at least 2 sets "
             f"(fewer cannot be split into references and a target).",
             *(f"Rankings skipped, not exported: {n} ({reason})." for reason, n in c["rankings_skipped"].items()),
             *([f"{c['rankings_unchecked']} rankings carry no record of the images ranked (stored by an older "
                "version): exported without checking them against the images as rendered now."]
               if c["rankings_unchecked"] else []),
             f"Sets per user: {_fmt_summary(c['sets_per_user'])}. Annotators per instance: "
             f"{_fmt_summary(c['annotators_per_instance'])}.", "",
             f"Review: {sheet['review']['kept']} of {sheet['review']['rendered_sets']} rendered sets kept, "
             f"{sheet['review']['dropped']} dropped.", "",
             "Generation: " + ", ".join(f"{k} {v}" for k, v in sheet["generation"].items()) + ".", "",
             "### Category balance", "",
             "| category | instances | share | share in Simple Detail |", "|---|---|---|---|"]
    lines += [f"| {r['category']} | {r['instances']} | {r['share']:.1%} | "
              f"{'' if r['simple_detail_share'] is None else format(r['simple_detail_share'], '.1%')} |"
              for r in sheet["category_balance"]]
    lines += ["", "### Agreement and divergence", "",
              f"Kendall's W per instance (annotators agreeing on the order of the four images; 1 = identical, "
              f"0 = none): {_fmt_summary(w)}.",
              f"Over {d['user_pairs_on_shared_instances']} pairs of users who ranked the same instance: mean "
              f"Kendall tau-b {_fmt(d['mean_tau_b'])}, share of image pairs ordered differently "
              f"{_fmt(d['mean_pairwise_disagreement'])}, same best image {_fmt(d['same_top_choice'])}.", "",
              "| instance | category | annotators | Kendall's W | mean tau-b | pairs ordered differently |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {a['instance_id']} | {a['category']} | {a['annotators']} | {_fmt(a['kendalls_w'])} | "
              f"{_fmt(a['mean_tau_b'])} | {_fmt(a['mean_pairwise_disagreement'])} |"
              for a in sheet["agreement"]["per_instance"]]
    return "\n".join(lines) + "\n"


def _generation_summary(sets: Sequence[ImageSet]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("model", "scheduler_class", "steps", "guidance", "width", "height", "dtype"):
        values = sorted({str(r.get(key)) for s in sets for r in s.renders})
        out[key] = values[0] if len(values) == 1 else values
    return out


def _expander_summary(ws: Workspace, sets: Sequence[ImageSet]) -> list[dict[str, Any]]:
    ids = {s.set_id for s in sets}
    seen = {json.dumps(v["expander"], sort_keys=True) for v in read_jsonl(ws.variants, VARIANT_FIELDS)
            if v["set_id"] in ids}
    return [json.loads(e) for e in sorted(seen)]


def _pairs(items: list) -> list[tuple]:
    return [(items[i], items[j]) for i in range(len(items)) for j in range(i + 1, len(items))]


def _tops(ranks: Sequence[int]) -> frozenset[int]:
    return frozenset(i for i, r in enumerate(ranks) if r == 1)


def _summary(values: Sequence[float]) -> dict[str, Optional[float]]:
    if not values:
        return {"n": 0, "min": None, "median": None, "mean": None, "max": None}
    return {"n": len(values), "min": min(values), "median": median(values), "mean": mean(values), "max": max(values)}


def _fmt_summary(s: dict[str, Optional[float]]) -> str:
    if not s["n"]:
        return "none"
    return (f"min {_fmt(s['min'])}, median {_fmt(s['median'])}, mean {_fmt(s['mean'])}, max {_fmt(s['max'])} "
            f"(n={s['n']})")


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else (str(x) if isinstance(x, int) else f"{x:.3f}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", "--output", required=True, type=Path, help="dataset folder to write")
    p.add_argument("--include-unranked", action="store_true", help="also export kept sets nobody ranked yet")


def main(args: argparse.Namespace) -> int:
    sheet = export_dataset(Workspace.at(args.workdir), args.out, args.include_unranked)
    c = sheet["counts"]
    print(f"wrote {args.out}: {c['instances']} instances, {c['users']} users, {c['rankings']} rankings; "
          f"datasheet in {args.out / 'README.md'} and datasheet.json")
    for reason, n in c["rankings_skipped"].items():
        print(f"skipped {n} ranking(s): {reason} ({SKIP_NOTES.get(reason, 'not exported')})")
    print(f"check it: pigbench data info pigbench --path {args.out}")
    return 0
