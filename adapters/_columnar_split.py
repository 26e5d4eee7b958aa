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
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union, overload

import numpy as np

from pigbench.protocol import Episode, ImageRef, Label, ReferencePair, Target
from pigbench.splits import SplitResult, a_first, user_rng

TIE, FIRST, SECOND = 0, 1, 2  # outcome codes: tie, image 0 preferred, image 1 preferred


@dataclass
class PairRows:
    """Two-image records as columns; row i is one record."""

    record_id: list[str]
    user_id: np.ndarray  # int64 user ids (compared and ordered as strings, like build_split)
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


def _split_pairs(rows: PairRows, dataset: str, seed: int, k: Optional[int], max_targets_per_user: Optional[int]) -> SplitResult:
    if k is not None and k < 0:
        raise ValueError(f"reference size must be >= 0, got {k}")
    result = SplitResult([], dataset, seed, k)
    user_str = rows.user_id.astype(str)
    rid_rank = np.empty(len(rows.record_id), np.int64)
    rid_rank[np.argsort(np.array(rows.record_id, dtype=object), kind="stable")] = np.arange(len(rows.record_id))
    order = np.lexsort((rid_rank, user_str))  # by user (as a string), then record id (as a string)
    bounds = np.flatnonzero(np.r_[True, user_str[order][1:] != user_str[order][:-1], True]) if len(order) else np.array([0])
    outcome, prompt, img, hashes = rows.outcome, rows.prompt_key, rows.image_key, rows.hash_key
    if hashes is None:
        hashes = img
    users: list[str] = []
    refs_of_user: list[tuple[ReferencePair, ...]] = []
    t_row: list[np.ndarray] = []
    t_first: list[bool] = []
    t_user: list[int] = []
    fp = hashlib.sha256()
    for g in range(len(bounds) - 1):
        members = order[bounds[g]:bounds[g + 1]].tolist()
        user = str(user_str[members[0]])
        user_rng(dataset, user, seed).shuffle(members)
        m = np.array(members, np.int64)
        decisive = outcome[m] != TIE
        if k is None:
            if len(m) < 2:
                result.note(result.skipped_users, "fewer than 2 ranked sets", f"user {user}")
                continue
            refs, targets = m[1:][decisive[1:]], m[:1]
        else:
            is_ref = decisive & (np.cumsum(decisive) <= k)  # the first k decisive records, in order
            refs, targets = m[is_ref], m[~is_ref]
            if len(refs) < k or not len(targets):
                result.note(result.skipped_users, f"fewer than {k} decisive reference records plus 1 target record", f"user {user}")
                continue
        # the first failing check names each dropped target, as build_split notes them
        leak_prompt = np.isin(prompt[targets], prompt[refs])
        leak_image = (np.isin(img[targets], img[refs]) | np.isin(hashes[targets], hashes[refs])).any(axis=1)
        same = (img[targets, 0] == img[targets, 1]) | (hashes[targets, 0] == hashes[targets, 1])
        ok = np.flatnonzero(~(leak_prompt | leak_image | same))
        full = max_targets_per_user is not None and len(ok) > max_targets_per_user
        noted = int(ok[max_targets_per_user]) if full else len(targets)  # build_split stops at the first target over the cap
        for t in np.flatnonzero(~np.isin(np.arange(noted), ok)).tolist():
            rid = rows.record_id[int(targets[t])]
            if leak_prompt[t]:
                result.note(result.skipped_records, "target prompt appears in the user's references", rid)
            elif leak_image[t]:
                result.note(result.skipped_records, "target image appears in the user's references", rid)
            else:
                result.note(result.skipped_records, "identical images in a target pair", f"{user}/{rid}/0-1")
        kept = targets[ok[:max_targets_per_user] if full else ok]
        if not len(kept):
            if not full:
                result.note(result.skipped_users, "no target left after leakage checks", f"user {user}")
            continue
        ref_line = ",".join(rows.record_id[r] for r in refs.tolist())
        lines = []
        for r, o in zip(kept.tolist(), outcome[kept].tolist()):
            sample_id = f"{user}/{rows.record_id[r]}/0-1"
            first = a_first(sample_id, seed)
            t_first.append(first)
            lines.append(f"{sample_id}\t{ref_line}\t{_SHOWN[o][first]}\n")
        fp.update("".join(lines).encode())  # the same bytes as one update per episode
        t_row.append(kept)
        t_user.extend([len(users)] * len(kept))
        users.append(user)
        refs_of_user.append(tuple(_reference(rows, r) for r in refs.tolist()))
    target_row = np.concatenate(t_row) if t_row else np.zeros(0, np.int64)
    result.episodes = LazyEpisodes(rows, users, refs_of_user, target_row, np.array(t_user, np.int64),
                                   np.array(t_first, bool))  # type: ignore[assignment]
    result.users = len(users)
    result.fingerprint = fp.hexdigest()[:16]
    return result


def _reference(rows: PairRows, r: int) -> ReferencePair:
    prompt, x, y = rows.make(r)
    best, worst = (x, y) if rows.outcome[r] == FIRST else (y, x)
    return ReferencePair(prompt, best, worst, rows.record_id[r])
