"""Stage 1, ``pigbench build prompts``: select N PartiPrompts prompts of one challenge, stratified by category.

The source is the PartiPrompts TSV (``Prompt, Category, Challenge, Note``), read with
``csv.QUOTE_NONE`` because one prompt starts with a double quote that default quoting strips.
The default source is the packaged Simple Detail subset (232 rows, 10 categories).

Allocation is proportional to each category's size (largest remainder), with at least one
prompt per category when N allows; within a category the prompts are drawn at random with the
seed. The same source, N, seed and challenge always give the same selection. A set id is
derived from the prompt text, so it stays stable when the selection grows; a row that repeats an
earlier one (same category and normalized prompt, hence the same set id) is dropped and reported.
The selection is written whole, after its settings, in one atomic write: a killed run leaves it complete
or absent, never part of it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import random
import re
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

from pigbench.adapter import DatasetError
from pigbench.build.workspace import BuildError, Workspace, read_jsonl, write_jsonl
from pigbench.protocol import normalize_prompt

PARTI_COLUMNS = ("Prompt", "Category", "Challenge", "Note")
SIMPLE_DETAIL = "Simple Detail"
PACKAGED_SOURCE = "partiprompts_simple_detail.tsv"


@dataclass(frozen=True)
class PartiPrompt:
    """One PartiPrompts row; ``row`` is its 1-based data row in the source file."""

    prompt: str
    category: str
    challenge: str
    note: str
    row: int


def read_partiprompts(path: Optional[Path] = None) -> list[PartiPrompt]:
    """All rows of a PartiPrompts TSV (the packaged Simple Detail subset when ``path`` is None)."""
    if path is None:
        with resources.as_file(resources.files("pigbench") / "data" / PACKAGED_SOURCE) as packaged:
            return read_partiprompts(Path(packaged))
    if not Path(path).is_file():
        raise DatasetError(f"PartiPrompts file {path} not found; get PartiPrompts.tsv from "
                           "https://github.com/google-research/parti and pass --partiprompts PATH")
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DatasetError(f"{path}: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                           "save the file as UTF-8") from None
    rows: list[PartiPrompt] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header is None or tuple(header) != PARTI_COLUMNS:
        raise DatasetError(f"{path}: header must be {'/'.join(PARTI_COLUMNS)} (tab-separated), found {header}")
    for number, fields in enumerate(reader, start=1):
        if len(fields) != len(PARTI_COLUMNS):
            raise DatasetError(f"{path}: data row {number} has {len(fields)} fields, expected 4")
        prompt, category, challenge, note = fields
        if not prompt.strip():
            raise DatasetError(f"{path}: data row {number} has an empty Prompt")
        rows.append(PartiPrompt(prompt, category, challenge, note, number))
    return rows


def set_id_for(prompt: str, category: str) -> str:
    """A stable, readable id: category slug plus a hash of the normalized prompt."""
    slug = re.sub(r"[^a-z0-9]+", "-", category.lower()).strip("-") or "uncategorized"
    return f"{slug}-{hashlib.sha256(normalize_prompt(prompt).encode('utf-8')).hexdigest()[:8]}"


def allocate(sizes: dict[str, int], n: int) -> dict[str, int]:
    """Prompts per category: proportional to ``sizes`` (largest remainder), at least one each when n allows."""
    total = sum(sizes.values())
    if n > total:
        raise DatasetError(f"asked for {n} prompts but the source has only {total} distinct prompt(s)")
    cats = sorted(sizes)
    floor_one = n >= len(cats)
    quota = {c: n * sizes[c] / total for c in cats}
    alloc = {c: min(sizes[c], max(int(quota[c]), 1 if floor_one else 0)) for c in cats}
    # Hand out what is left by largest remainder, then take back from the largest if the floor overshot.
    by_remainder = sorted(cats, key=lambda c: (-(quota[c] - int(quota[c])), -sizes[c], c))
    while sum(alloc.values()) < n:
        c = next(c for c in by_remainder if alloc[c] < sizes[c])
        alloc[c] += 1
        by_remainder.remove(c)
        by_remainder.append(c)
    while sum(alloc.values()) > n:
        reducible = [c for c in cats if alloc[c] > (1 if floor_one else 0)]
        c = max(reducible, key=lambda c: (alloc[c] - quota[c], c))
        alloc[c] -= 1
    return alloc


def challenge_pool(rows: Sequence[PartiPrompt],
                   challenge: str = SIMPLE_DETAIL) -> tuple[list[PartiPrompt], list[tuple[PartiPrompt, PartiPrompt]]]:
    """The rows of ``challenge`` with distinct set ids (the first of each), and each repeat paired with its first.

    A repeat has the same category and normalized prompt, hence the same set id, as an earlier row.
    """
    first: dict[str, PartiPrompt] = {}
    repeats: list[tuple[PartiPrompt, PartiPrompt]] = []
    for r in rows:
        if r.challenge == challenge:
            sid = set_id_for(r.prompt, r.category)
            if sid in first:
                repeats.append((r, first[sid]))
            else:
                first[sid] = r
    return list(first.values()), repeats


def select_prompts(rows: Sequence[PartiPrompt], n: int, seed: int, challenge: str = SIMPLE_DETAIL) -> list[PartiPrompt]:
    """``n`` distinct rows of ``challenge`` (:func:`challenge_pool`), stratified by category, in source-row order."""
    pool, _ = challenge_pool(rows, challenge)
    if not pool:
        raise DatasetError(f"no PartiPrompts rows with Challenge {challenge!r}")
    by_cat: dict[str, list[PartiPrompt]] = {}
    for r in pool:
        by_cat.setdefault(r.category, []).append(r)
    alloc = allocate({c: len(v) for c, v in by_cat.items()}, n)
    rng = random.Random(seed)
    chosen = [p for c in sorted(by_cat) for p in rng.sample(by_cat[c], alloc[c])]
    return sorted(chosen, key=lambda r: r.row)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--count", type=int, default=100, help="prompts to select (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--partiprompts", type=Path,
                   help="PartiPrompts.tsv (default: the packaged Simple Detail subset)")
    p.add_argument("--challenge", default=SIMPLE_DETAIL, help=f"PartiPrompts challenge (default {SIMPLE_DETAIL!r})")
    p.add_argument("--force", action="store_true", help="replace an existing selection made with other settings")


def main(args: argparse.Namespace) -> int:
    if args.count < 1:
        raise BuildError(f"-n/--count must be at least 1, not {args.count}")
    ws = Workspace.at(args.workdir)
    source = str(args.partiprompts) if args.partiprompts else f"pigbench/data/{PACKAGED_SOURCE}"
    rows = read_partiprompts(args.partiprompts)
    config = {"source": source, "count": args.count, "seed": args.seed, "challenge": args.challenge,
              "source_sha256": hashlib.sha256("\n".join(r.prompt for r in rows).encode()).hexdigest()}
    if ws.prompts.exists():
        if ws.stage_config("prompts") == config:
            print(f"{ws.prompts}: {len(read_jsonl(ws.prompts))} prompts already selected with these settings")
            return 0
        if not args.force:
            raise BuildError(f"{ws.prompts} was made with other settings ({ws.stage_config('prompts')}); "
                             "use --force to replace it or another --workdir")
        ws.prompts.unlink()
    chosen = select_prompts(rows, args.count, args.seed, args.challenge)
    records = []
    for r in chosen:
        record = {"set_id": set_id_for(r.prompt, r.category), "base_prompt": r.prompt, **asdict(r)}
        record["source_row"] = record.pop("row")
        del record["prompt"]
        records.append(record)
    # Settings first, then the whole selection in one atomic write: a killed run leaves either no
    # prompts.jsonl (the rerun selects again) or the complete one with its settings (the rerun is a no-op).
    ws.save_stage_config("prompts", config)
    write_jsonl(ws.prompts, records, sort_keys=True)
    counts = Counter(r.category for r in chosen)
    by_category = ", ".join(f"{c} {k}" for c, k in sorted(counts.items()))
    print(f"selected {len(chosen)} prompts into {ws.prompts}: {by_category}")
    _, repeats = challenge_pool(rows, args.challenge)
    if repeats:
        print(f"dropped {len(repeats)} duplicate prompt(s) of {source} (same category and prompt as an earlier row): "
              + ", ".join(f"data row {r.row} repeats data row {first.row}" for r, first in repeats), file=sys.stderr)
    return 0
