"""The shared split for two-image records held in columns, with episodes built when read.

For a million Pick-a-Pic rows, one ``PreferenceRecord``, ``Target`` and ``Episode`` object per row
costs more time and memory than the split itself. :func:`split_pairs` takes the rows as columns
(integer codes for prompts and images) and makes exactly the decisions of
:func:`pigbench.splits.build_split` on the equivalent records: the same per-user order and local
RNG, references, leakage checks, A/B coin, skip notes and fingerprint (``tests/`` check equality).
Its episodes are a sequence that builds each :class:`Episode` on access.
"""

from __future__ import annotations

import gc
import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pigbench.protocol import Episode, ImageRef, Label, ReferencePair, Target
from pigbench.splits import SplitResult, a_first, user_rng

TIE, FIRST, SECOND = 0, 1, 2  # outcome codes: tie, image 0 preferred, image 1 preferred


@dataclass
class PairRows:
    """Two-image records as columns; row i is one record."""

    record_id: list[str]
    user_id: np.ndarray  # integer user ids (ordered as strings, like build_split)
    prompt_key: np.ndarray  # int code of the normalized prompt
    image_key: np.ndarray  # (n, 2) int codes of the images' ids
    hash_key: Optional[np.ndarray]  # (n, 2) int codes of the content hashes; None: a hash is a function of the id
    outcome: np.ndarray  # TIE, FIRST or SECOND
    make: Callable[[int], tuple[str, ImageRef, ImageRef]]  # row -> (prompt, image 0, image 1)


class LazyEpisodes(Sequence[Episode]):
    """The split's episodes in order, each built from the columns when read."""

    def __init__(self, rows: PairRows, users: list[str], refs: list[tuple[ReferencePair, ...]],
                 target_row: np.ndarray, target_user: np.ndarray, shown_first: np.ndarray) -> None:
        self.rows, self.users, self.refs = rows, users, refs
        self.target_row, self.target_user, self.shown_first = target_row, target_user, shown_first

    def __len__(self) -> int:
        return len(self.target_row)

    @overload
    def __getitem__(self, i: int) -> Episode: ...
    @overload
    def __getitem__(self, i: slice) -> list[Episode]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[Episode, list[Episode]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        r, u = int(self.target_row[i]), int(self.target_user[i])
        prompt, x, y = self.rows.make(r)
        rid, user = self.rows.record_id[r], self.users[u]
        gold = _gold(int(self.rows.outcome[r]))
        if self.shown_first[i]:
            target = Target(f"{user}/{rid}/0-1", prompt, x, y, gold, rid)
        else:
            target = Target(f"{user}/{rid}/0-1", prompt, y, x, gold.swapped(), rid)
        return Episode(user, self.refs[u], target)


def _gold(outcome: int) -> Label:
    return Label.TIE if outcome == TIE else (Label.A if outcome == FIRST else Label.B)


_SHOWN = {o: {True: _gold(o).value, False: _gold(o).swapped().value} for o in (TIE, FIRST, SECOND)}  # gold as shown


def split_pairs(rows: PairRows, dataset: str, seed: int, reference_size: Optional[int],
                max_targets_per_user: Optional[int] = None) -> SplitResult:
    """What ``build_split`` returns for these rows as records; see the module docstring."""
    enabled = gc.isenabled()
    gc.disable()  # the split allocates many long-lived objects; collection passes would find no garbage
    try:
        return _split_pairs(rows, dataset, seed, reference_size, max_targets_per_user)
    finally:
        if enabled:
            gc.enable()


def _split_pairs(rows: PairRows, dataset: str, seed: int, k: Optional[int], max_targets: Optional[int]) -> SplitResult:
    if k is not None and k < 0:
        raise ValueError(f"reference size must be >= 0, got {k}")
    result = SplitResult([], dataset, seed, k)
    n = len(rows.record_id)
    # 1. users in string order; each user's rows by record id, then shuffled by the user's local RNG
    keys = pa.table({"user": pa.array(rows.user_id).cast(pa.string()), "record": pa.array(rows.record_id, pa.string())})
    order = pc.sort_indices(keys, sort_keys=[("user", "ascending"), ("record", "ascending")]).to_numpy()
    by_user = rows.user_id[order]
    bounds = np.flatnonzero(np.r_[True, by_user[1:] != by_user[:-1], True]) if n else np.zeros(1, np.int64)
    users, rows_at = [], np.empty(n, np.int64)  # rows_at[p]: the row at position p of the shuffled order
    for g in range(len(bounds) - 1):
        members = order[bounds[g]:bounds[g + 1]].tolist()
        users.append(str(by_user[bounds[g]]))
        user_rng(dataset, users[-1], seed).shuffle(members)
        rows_at[bounds[g]:bounds[g + 1]] = members
    sizes = np.diff(bounds)
    group = np.repeat(np.arange(len(users)), sizes)
    pos = np.arange(n) - bounds[:-1][group]  # position within the user's shuffled rows

    def within(mask: np.ndarray) -> np.ndarray:  # running count of ``mask`` within each user, inclusive
        total = np.cumsum(mask)
        return total - (total - mask)[bounds[:-1]][group]

    # 2. references: the first k decisive rows (dynamic: every decisive row but the held-out first one,
    #    and users with none are skipped)
    decisive = rows.outcome[rows_at] != TIE
    if k is None:
        is_ref, is_target = decisive & (pos > 0), pos == 0
        too_few, reason = sizes < 2, "fewer than 2 ranked sets"
    else:
        is_ref = decisive & (within(decisive) <= k)
        is_target = ~is_ref
        too_few = (np.bincount(group[is_ref], minlength=len(users)) < k) | (np.bincount(group[is_target], minlength=len(users)) == 0)
        reason = f"fewer than {k} decisive reference records plus 1 target record"
    _note(result, result.skipped_users, reason, [f"user {users[g]}" for g in np.flatnonzero(too_few)[:5]], int(too_few.sum()))
    if k is None:  # a user needs a decisive reference set; the tied sets of the others are counted
        no_ref = ~too_few & (np.bincount(group[is_ref], minlength=len(users)) == 0)
        _note(result, result.skipped_users, "no decisive ranked set besides the held-out one",
              [f"user {users[g]}" for g in np.flatnonzero(no_ref)[:5]], int(no_ref.sum()))
        too_few |= no_ref
        tied = np.flatnonzero(~decisive & (pos > 0) & ~too_few[group])
        _note(result, result.skipped_records, "tied ranked set: no reference pair",
              [rows.record_id[rows_at[p]] for p in tied[:5]], len(tied))
    is_ref &= ~too_few[group]
    is_target &= ~too_few[group]
    # 3. leakage, checked in build_split's order: prompt, then images, then identical images
    ids = rows.image_key[rows_at]
    hashes = rows.hash_key[rows_at] if rows.hash_key is not None else ids

    def keyed(codes: np.ndarray) -> np.ndarray:  # (user, code) as one int64
        return (group if codes.ndim == 1 else group[:, None]) * np.int64(int(codes.max(initial=0)) + 1) + codes

    prompt = keyed(rows.prompt_key[rows_at])
    leak_prompt = is_target & np.isin(prompt, prompt[is_ref])
    leak_image = np.zeros(n, bool)
    for codes in (ids, hashes):
        both = keyed(codes)
        leak_image |= np.isin(both, both[is_ref].ravel()).any(axis=1)
    leak_image &= is_target & ~leak_prompt
    same = ((ids[:, 0] == ids[:, 1]) | (hashes[:, 0] == hashes[:, 1])) & is_target & ~leak_prompt & ~leak_image
    ok = is_target & ~(leak_prompt | leak_image | same)
    # 4. the cap: build_split returns at the first target over it, checking no later target
    full = np.zeros(len(users), bool)
    if max_targets is not None:
        over = ok & (within(ok) > max_targets)
        first_over = np.full(len(users), n, np.int64)
        np.minimum.at(first_over, group[over], pos[over])
        full = first_over < n
        seen = pos < first_over[group]
        ok, leak_prompt, leak_image, same = ok & seen, leak_prompt & seen, leak_image & seen, same & seen
    rid = rows.record_id
    for mask, why, where in ((leak_prompt, "target prompt appears in the user's references", "{r}"),
                             (leak_image, "target image appears in the user's references", "{r}"),
                             (same, "identical images in a target pair", "{u}/{r}/0-1")):
        at = np.flatnonzero(mask)
        _note(result, result.skipped_records, why, [where.format(u=users[group[p]], r=rid[rows_at[p]]) for p in at[:5]], len(at))
    has_target = np.bincount(group[ok], minlength=len(users)) > 0
    empty = np.flatnonzero(~too_few & ~has_target & ~full)
    _note(result, result.skipped_users, "no target left after leakage checks", [f"user {users[g]}" for g in empty[:5]], len(empty))
    # 5. episodes: A/B coin and fingerprint lines, user by user
    kept = np.flatnonzero(ok)
    with_targets = np.flatnonzero(has_target)
    slot = np.cumsum(has_target) - 1  # index of each user among the users with targets
    refs_at = np.flatnonzero(is_ref)
    refs_of = np.split(refs_at, np.searchsorted(group[refs_at], np.arange(1, len(users))))  # per user, in order
    ref_lines = {g: ",".join(rid[r] for r in rows_at[refs_of[g]].tolist()) for g in with_targets.tolist()}
    fp = hashlib.sha256()
    shown_first, lines = [], []
    for p, g, o in zip(kept.tolist(), group[kept].tolist(), rows.outcome[rows_at[kept]].tolist()):
        sample_id = f"{users[g]}/{rid[rows_at[p]]}/0-1"
        first = a_first(sample_id, seed)
        shown_first.append(first)
        lines.append(f"{sample_id}\t{ref_lines[g]}\t{_SHOWN[o][first]}\n")
    fp.update("".join(lines).encode())  # the same bytes as one update per episode
    refs = [tuple(_reference(rows, r) for r in rows_at[refs_of[g]].tolist()) for g in with_targets.tolist()]
    result.episodes = LazyEpisodes(rows, [users[g] for g in with_targets.tolist()], refs, rows_at[kept],
                                   slot[group[kept]], np.array(shown_first, bool))  # type: ignore[assignment]
    result.users = len(with_targets)
    result.fingerprint = fp.hexdigest()[:16]
    return result


def _note(result: SplitResult, counter: Counter, reason: str, examples: list[str], count: int) -> None:
    """``count`` notes of ``reason`` at once, keeping at most 5 examples like :meth:`SplitResult.note`."""
    if count:
        counter[reason] += count
        kept = result.skip_examples.setdefault(reason, [])
        kept.extend(examples[: 5 - len(kept)])


def _reference(rows: PairRows, r: int) -> ReferencePair:
    prompt, x, y = rows.make(r)
    best, worst = (x, y) if rows.outcome[r] == FIRST else (y, x)
    return ReferencePair(prompt, best, worst, rows.record_id[r])
