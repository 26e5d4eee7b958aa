"""``pasta``: PASTA (Nabati et al., ICML 2025), sequential choices among four 4-image slates.

**The file schema below is ASSUMED, not verified**: the Kaggle release (googleai/pasta-data)
could not be read when this adapter was written. Files are validated on load; a mismatch fails
with the expected and the found fields. Assumed layout: ``--dataset-path DIR`` (or
``PIGBENCH_PASTA_PATH``) holds ``*.jsonl`` files, one JSON object per turn::

    trajectory_id     str        one rater's session on one prompt (the "user")
    rater_id          str
    turn              int        1, 2, ... within the trajectory
    prompt            str        the user's prompt for the turn
    expanded_prompts  [4 str]    the prompt expansion behind each slate
    images            [[4 str]]  4 slates of 4 image paths, relative to DIR (no ``..``, not absolute)
    chosen            int        0-3: the slate the rater picked

A slate is one image: the 2x2 grid of its four images, composed when an evaluator opens it
(its content hash is the SHA-256 of its files' hashes; nothing is decoded to build a split).

Split (source-fixed, sequential): per trajectory, the last turn is the target and the K turns
before it are the references (K = 4 by default; each as chosen vs first non-chosen slate,
carrying the full ranking: chosen 1, others 2). Targets are the chosen slate against each of the
3 others (no ties: the order among non-chosen slates is unobserved); a pair of two slates with
the same content is dropped and counted, as in the shared splitter. Trajectories with fewer
than K + 1 turns are skipped. **Deviation from the protocol, as in PIGReward's 4-reference
setting**: the turns of a trajectory answer the same user prompt, so the prompt rule of the
leakage check is not applied; the image rule (id or content hash) is. The seed only sets the
A/B order.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from PIL import Image

from pigbench.adapter import DatasetAdapter, DatasetError
from pigbench.adapter_files import iter_jsonl, require_inside
from pigbench.adapter_options import check_options
from pigbench.hub import resolve_root
from pigbench.protocol import Episode, ImageError, ImageRef, Label, PreferenceRecord, ReferencePair, Target, open_image
from pigbench.splits import ReferenceIndex, SplitResult, a_first, fingerprint

SCHEMA = {"trajectory_id": str, "rater_id": str, "turn": int, "prompt": str, "expanded_prompts": list, "images": list, "chosen": int}
UNVERIFIED = "the PASTA file schema is ASSUMED and unverified (adapters/pasta.py); update the adapter to the real release"


@dataclass(frozen=True, eq=False)
class SlateRef(ImageRef):
    """A slate of images shown as one 2x2 grid; its content hash hashes the member files lazily."""

    files: tuple[Path, ...] = ()

    @property
    def content_hash(self) -> str:
        if self.known_hash is None:
            try:
                digests = b"".join(hashlib.sha256(f.read_bytes()).digest() for f in self.files)
            except OSError as exc:
                raise ImageError(f"slate {self.id!r}: cannot read {exc.filename}: {exc.strerror}") from exc
            object.__setattr__(self, "known_hash", hashlib.sha256(digests).hexdigest())
        return self.known_hash  # type: ignore[return-value]


def _grid(slate: str, files: tuple[Path, ...]) -> Image.Image:
    tiles = []
    for f in files:
        try:
            with open_image(f) as im:
                tiles.append(im.convert("RGB"))
        except Exception as exc:  # PIL raises many types for corrupt files
            raise ImageError(f"slate {slate!r}: cannot decode {f}: {exc}") from exc
    w, h = min(min(t.size[0] for t in tiles), 512), min(min(t.size[1] for t in tiles), 512)
    grid = Image.new("RGB", (2 * w, 2 * h))
    for i, tile in enumerate(tiles):
        grid.paste(tile.resize((w, h)), ((i % 2) * w, (i // 2) * h))
    return grid


class PASTA(DatasetAdapter):
    """Per-turn choice of one of four slates; see the module docstring (schema ASSUMED)."""

    name = "pasta"
    description = "PASTA: sequential choice of one of four 4-image slates per turn (file schema assumed, unverified)"
    license = "unknown (Kaggle googleai/pasta-data)"
    homepage = "https://www.kaggle.com/datasets/googleai/pasta-data"
    default_reference_size = 4
    env_var = "PIGBENCH_PASTA_PATH"
    OPTIONS: dict[str, str] = {}
    shares_prompts = True  # the deviation in the module docstring

    def records(self) -> Iterator[PreferenceRecord]:
        """One record per turn: 4 slates, the chosen one ranked 1, the others 2."""
        check_options(self.name, self.options, self.OPTIONS)
        self.skipped.clear()
        self.skip_examples.clear()
        root = resolve_root(what="PASTA (assumed schema, see adapters/pasta.py)", path=self.path, env_var=self.env_var,
                            source=f"download the release from {self.homepage} into a folder")
        files = sorted(root.glob("*.jsonl"))
        if not files:
            raise DatasetError(f"{root}: no *.jsonl files; {UNVERIFIED}")
        seen: set[tuple[str, int]] = set()
        for path in files:
            for lineno, obj in iter_jsonl(path, self.skip):
                where = f"{path.name}:{lineno}"
                _validate(obj, where)
                key = (obj["trajectory_id"], obj["turn"])
                slates = tuple(tuple(root / p for p in s) for s in obj["images"])
                missing = next((f for s in slates for f in s if not f.is_file()), None)
                if key in seen:
                    self.skip("repeated (trajectory_id, turn)", where)
                elif missing is not None:
                    self.skip("image file missing", f"{where}: {missing.name}")
                else:
                    seen.add(key)
                    rid = f"t{obj['turn']}"
                    refs = tuple(SlateRef(f"{key[0]}/{rid}/s{k}", functools.partial(_grid, f"{key[0]}/{rid}/s{k}", s), files=s)
                                 for k, s in enumerate(slates))
                    ranks = tuple(1 if k == obj["chosen"] else 2 for k in range(4))
                    yield PreferenceRecord(rid, key[0], obj["prompt"], refs, ranks, "pasta", where)

    def split(self, seed: int, reference_size: Optional[int] = None, max_targets_per_user: Optional[int] = None) -> SplitResult:
        k = self.default_reference_size if reference_size is None else reference_size
        if k is None or k < 0:
            raise DatasetError(f"{self.name}: the reference size must be a number >= 0 (turns before the target)")
        result = SplitResult([], self.name, seed, k)
        by_user: dict[str, list[PreferenceRecord]] = {}
        for rec in self.records():
            by_user.setdefault(rec.user_id, []).append(rec)
        for user in sorted(by_user):
            turns = sorted(by_user[user], key=lambda r: int(r.record_id[1:]))
            if len(turns) < k + 1:
                result.note(result.skipped_users, f"fewer than {k} reference turns plus 1 target turn", f"user {user}")
                continue
            refs = tuple(_reference(r) for r in turns[len(turns) - 1 - k:-1])
            episodes = [Episode(user, refs, t) for t in _targets(turns[-1], user, seed, ReferenceIndex(refs), result)]
            if not episodes:
                result.note(result.skipped_users, "no target left after leakage checks", f"user {user}")
                continue
            result.episodes.extend(episodes[:max_targets_per_user] if max_targets_per_user is not None else episodes)
            result.users += 1
        result.fingerprint = fingerprint(result.episodes)
        result.skipped_records.update(self.skipped)
        for reason, examples in self.skip_examples.items():
            result.skip_examples.setdefault(reason, []).extend(examples)
        return result

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "schema": "assumed, unverified", "leakage_rule": "images only (turns share the prompt)"}


def _validate(obj: Any, where: str) -> None:
    found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
    problem = None
    if not isinstance(obj, dict) or set(SCHEMA) - set(obj):
        problem = "missing fields"
    elif wrong := [f"field {f!r} is {type(obj[f]).__name__}, expected {t.__name__}" for f, t in SCHEMA.items()
                   if not isinstance(obj[f], t) or (t is int and isinstance(obj[f], bool))]:
        problem = "; ".join(wrong)
    elif len(obj["expanded_prompts"]) != 4 or len(obj["images"]) != 4 or any(
            not isinstance(s, list) or len(s) != 4 or not all(isinstance(p, str) for p in s) for s in obj["images"]):
        problem = "'expanded_prompts' must hold 4 prompts and 'images' 4 slates of 4 paths"
    elif not 0 <= obj["chosen"] <= 3:
        problem = "'chosen' must be 0-3"
    if problem:
        expected = ", ".join(f"{f} ({t.__name__})" for f, t in SCHEMA.items())
        raise DatasetError(f"{where}: does not match the assumed PASTA schema ({problem}). Expected fields: {expected}; "
                           f"found: {found}. Note: {UNVERIFIED}")
    require_inside((p for slate in obj["images"] for p in slate), where)


def _reference(rec: PreferenceRecord) -> ReferencePair:
    chosen = rec.ranks.index(1)
    rejected = next(i for i in range(4) if i != chosen)
    return ReferencePair(rec.prompt, rec.images[chosen], rec.images[rejected], f"{rec.user_id}/{rec.record_id}",
                         tuple(zip(rec.images, rec.ranks)))


def _targets(rec: PreferenceRecord, user: str, seed: int, shown: ReferenceIndex, result: SplitResult) -> Iterator[Target]:
    chosen = rec.ranks.index(1)
    for other in (i for i in range(4) if i != chosen):
        i, j = sorted((chosen, other))
        sample_id = f"{user}/{rec.record_id}/{i}-{j}"
        x, y = rec.images[i], rec.images[j]
        leak = shown.leak(rec.prompt, (x, y), compare_prompts=not PASTA.shares_prompts)
        if leak:
            result.note(result.skipped_records, leak, sample_id)
            continue
        if x.content_hash == y.content_hash:
            result.note(result.skipped_records, "identical images in a target pair", sample_id)
            continue
        gold = Label.A if i == chosen else Label.B
        yield Target(sample_id, rec.prompt, x, y, gold, rec.record_id) if a_first(sample_id, seed) else \
            Target(sample_id, rec.prompt, y, x, gold.swapped(), rec.record_id)
