"""Deterministic per-user reference/target splits with no leakage (protocol section 2).

For each user, records are ordered by id and shuffled by a local RNG seeded from
``(dataset, user_id, seed)``; global random state is never touched, so a user's split does not
depend on which other users are present.

* Fixed reference size K: the first K records (in that order) with a decisive ranking become
  reference pairs; every other record is a target record. Users with fewer than K decisive
  records plus one target record are skipped.
* Dynamic (K = None, PIGBench): the first record is the held-out target set; all the user's
  other decisive records are references (an all-tied set has no reference pair: it is counted
  as skipped). Users with fewer than 2 records or no decisive reference record are skipped.

A target record is dropped (and counted) when its normalized prompt or any of its images (by id
or content hash) appears in that user's references. A record of n images gives n(n-1)/2 target
pairs; which image is "A" is decided by a seeded hash of the sample id.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Optional

from pigbench.protocol import Episode, ImageRef, Label, PreferenceRecord, ReferencePair, Target, normalize_prompt


@dataclass
class SplitResult:
    """Episodes in a fixed order, the split fingerprint, and counts of what was left out and why."""

    episodes: list[Episode]
    dataset: str
    seed: int
    reference_size: Optional[int]  # None = dynamic
    fingerprint: str = ""
    users: int = 0
    skipped_users: Counter = field(default_factory=Counter)  # reason -> users
    skipped_records: Counter = field(default_factory=Counter)  # reason -> records or target pairs
    skip_examples: dict[str, list[str]] = field(default_factory=dict)
    targets_before_limit: Optional[int] = None  # set by :meth:`limit`
    uncut: Optional[list[Episode]] = None  # the episodes before :meth:`limit` or :meth:`keep` first cut them
    uncut_fingerprint: str = ""  # and their fingerprint

    def limit(self, n: Optional[int]) -> None:
        """Keep only the first ``n`` targets (in split order); fingerprint and user count follow."""
        if n is None or n >= len(self.episodes):
            return
        self.targets_before_limit = len(self.episodes)
        self.keep(self.episodes[:n])

    def keep(self, episodes: list[Episode]) -> None:
        """Keep only ``episodes``, a subset of this split's in split order; fingerprint and user count
        follow. The first cut remembers the whole split (``uncut``, ``uncut_fingerprint``)."""
        if self.uncut is None:
            self.uncut, self.uncut_fingerprint = self.episodes, self.fingerprint
        self.episodes = episodes
        self.fingerprint = fingerprint(self.episodes)
        self.users = len({e.user_id for e in self.episodes})

    def note(self, counter: Counter, reason: str, where: str) -> None:
        counter[reason] += 1
        examples = self.skip_examples.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(where)

    def summary(self) -> dict:
        return {
            "dataset": self.dataset,
            "seed": self.seed,
            "reference_size": self.reference_size if self.reference_size is not None else "dynamic",
            "fingerprint": self.fingerprint,
            "users": self.users,
            "targets": len(self.episodes),
            "targets_before_limit": self.targets_before_limit or len(self.episodes),
            "skipped_users": dict(self.skipped_users),
            "skipped_records": dict(self.skipped_records),
            "skip_examples": self.skip_examples,
        }


def user_rng(dataset: str, user_id: str, seed: int) -> random.Random:
    """The local RNG of one user's split."""
    digest = hashlib.sha256(f"{dataset}\x00{user_id}\x00{seed}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def a_first(sample_id: str, seed: int) -> bool:
    """Seeded coin deciding whether the record's first image of the pair is shown as A."""
    return hashlib.sha256(f"{seed}\x00{sample_id}".encode()).digest()[0] & 1 == 0


def reference_pair(record: PreferenceRecord) -> Optional[ReferencePair]:
    """Best vs worst image of a record, or None when every image is tied."""
    best = min(range(len(record.ranks)), key=lambda i: (record.ranks[i], i))
    worst = max(range(len(record.ranks)), key=lambda i: (record.ranks[i], -i))
    if record.ranks[best] == record.ranks[worst]:
        return None
    ranking = tuple(zip(record.images, record.ranks)) if len(record.images) > 2 else ()
    return ReferencePair(record.prompt, record.images[best], record.images[worst], record.record_id, ranking)


class ReferenceIndex:
    """What a user's references show, as the leakage rule compares it: their normalized prompts, and
    the id and content hash of every image they show (the rest of a ranking included)."""

    def __init__(self, references: Iterable[ReferencePair]) -> None:
        refs = list(references)
        self.prompts = {normalize_prompt(r.prompt) for r in refs}
        self.images = {key for r in refs for img in r.images()
                       for key in (img.id, img.content_hash)}

    def leak(self, prompt: str, images: Iterable[ImageRef], compare_prompts: bool = True) -> Optional[str]:
        """Why a target of ``prompt`` and ``images`` leaks from these references (the reason the
        split counts it under), or None when it does not. Without ``compare_prompts``, images only
        (an adapter declaring ``shares_prompts``)."""
        if compare_prompts and normalize_prompt(prompt) in self.prompts:
            return "target prompt appears in the user's references"
        if any(img.id in self.images or img.content_hash in self.images for img in images):
            return "target image appears in the user's references"
        return None


def build_split(
    records: Iterable[PreferenceRecord],
    dataset: str,
    seed: int,
    reference_size: Optional[int],
    max_targets_per_user: Optional[int] = None,
) -> SplitResult:
    """Split every user's records into references and targets; see the module docstring."""
    if reference_size is not None and reference_size < 0:
        raise ValueError(f"reference size must be >= 0, got {reference_size}")
    by_user: dict[str, list[PreferenceRecord]] = defaultdict(list)
    for rec in records:
        by_user[rec.user_id].append(rec)
    result = SplitResult([], dataset, seed, reference_size)
    for user_id in sorted(by_user):
        episodes = _split_user(by_user[user_id], user_id, result, max_targets_per_user)
        if episodes:
            result.users += 1
            result.episodes.extend(episodes)
    result.fingerprint = fingerprint(result.episodes)
    return result


def _split_user(
    recs: list[PreferenceRecord], user_id: str, result: SplitResult, max_targets: Optional[int]
) -> list[Episode]:
    order = sorted(recs, key=lambda r: r.record_id)
    user_rng(result.dataset, user_id, result.seed).shuffle(order)
    k = result.reference_size
    refs: list[ReferencePair] = []
    target_recs: list[PreferenceRecord] = []
    if k is None:
        if len(order) < 2:
            result.note(result.skipped_users, "fewer than 2 ranked sets", f"user {user_id}")
            return []
        target_recs = [order[0]]
        pairs = [(rec, reference_pair(rec)) for rec in order[1:]]
        refs = [p for _, p in pairs if p is not None]
        if not refs:
            result.note(result.skipped_users, "no decisive ranked set besides the held-out one", f"user {user_id}")
            return []
        for rec, pair in pairs:
            if pair is None:
                result.note(result.skipped_records, "tied ranked set: no reference pair", rec.record_id)
    else:
        for rec in order:
            pair = reference_pair(rec) if len(refs) < k else None
            if pair is not None:
                refs.append(pair)
            else:
                target_recs.append(rec)
        if len(refs) < k or not target_recs:
            result.note(
                result.skipped_users, f"fewer than {k} decisive reference records plus 1 target record", f"user {user_id}"
            )
            return []
    shown = ReferenceIndex(refs)
    episodes: list[Episode] = []
    references = tuple(refs)
    for rec in target_recs:
        leak = shown.leak(rec.prompt, rec.images)
        if leak is not None:
            result.note(result.skipped_records, leak, rec.record_id)
            continue
        for target in _targets(rec, user_id, result.seed, result):
            if max_targets is not None and len(episodes) >= max_targets:
                return episodes
            episodes.append(Episode(user_id, references, target))
    if not episodes:
        result.note(result.skipped_users, "no target left after leakage checks", f"user {user_id}")
    return episodes


def _targets(rec: PreferenceRecord, user_id: str, seed: int, result: SplitResult) -> Iterable[Target]:
    n = len(rec.images)
    for i in range(n):
        for j in range(i + 1, n):
            x, y = rec.images[i], rec.images[j]
            sample_id = f"{user_id}/{rec.record_id}/{i}-{j}"
            if x.id == y.id or x.content_hash == y.content_hash:
                result.note(result.skipped_records, "identical images in a target pair", sample_id)
                continue
            ri, rj = rec.ranks[i], rec.ranks[j]
            gold = Label.TIE if ri == rj else (Label.A if ri < rj else Label.B)
            if a_first(sample_id, seed):
                yield Target(sample_id, rec.prompt, x, y, gold, rec.record_id)
            else:
                yield Target(sample_id, rec.prompt, y, x, gold.swapped(), rec.record_id)


def fingerprint(episodes: Iterable[Episode]) -> str:
    """Hash of the ordered sample ids, their reference record ids and golds."""
    h = hashlib.sha256()
    for ep in episodes:
        refs = ",".join(r.record_id or f"{r.preferred.id}>{r.rejected.id}" for r in ep.references)
        h.update(f"{ep.sample_id}\t{refs}\t{ep.target.gold.value}\n".encode())
    return h.hexdigest()[:16]
