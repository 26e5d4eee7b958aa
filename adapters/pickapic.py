"""``pickapic`` / ``pickapic-v1``: per-user Pick-a-Pic splits built from the ``train`` split.

Sources. ``--dataset-path DIR`` (or ``PIGBENCH_PICKAPIC_PATH``): a folder holding parquet shards
of ``yuvalkirstain/pickapic_v2_no_images`` and/or ``yuvalkirstain/pickapic_v2`` under their hub
names (``data/train-00000-of-00002-<hex>.parquet``, any depth; a metadata shard missing from such a
set is an error, not a smaller split). Without a path, the metadata
(``_no_images``, ~292 MB) comes from the hub cache or is downloaded. Image bytes come from
with-images shards under the path or ``--dataset-option images_path=DIR``, else are read in place
from the hub, fetching only the row groups needed. ``images=none`` builds the split from metadata
alone (image hashes are then the uids, and no image can be opened: for ``data info`` only).

Pipeline; skipped rows and users are counted by reason:

1. Metadata: 9 projected columns of every ``train`` shard, read with pyarrow (never pandas).
2. Rows: drop missing fields (``ranking_id`` included), identical image uids (``are_different``
   is about *models*, not pixels), labels other than (1, 0) / (0, 1) / (0.5, 0.5), ``has_label``
   False with a decisive label, ``best_image_uid`` disagreeing with the labels, repeated ``ranking_id``. A tie is
   ``label_0 == label_1 == 0.5`` (``has_label`` False, ``best_image_uid == "none"``): ranks (1, 1). Captions are stripped and their
   whitespace collapsed (leakage checks also lower-case them).
3. Users: keep those with >= K + 1 decisive (non-tie) rows (K = reference size, default 8: 9 rows;
   the datasets spec's rule, so that every user has a decisive target besides K references; a dynamic
   size needs 2 rows). The official val/test splits hold at most one prompt per user, hence ``train``.
   ``users=N`` keeps a seeded sample of N of them, drawn before step 4: a sampled user losing rows there
   is counted as a skipped user (all rows: ``every row dropped by the image checks``; too many decisive
   rows: the step's reason, ``after the image checks``), so the split may hold fewer than N users; when
   it does (or fewer than N users qualify), a one-line warning says how many were asked for and found,
   and why.
4. Images of the kept rows only: rows are found in the with-images shards by ``ranking_id``
   (reading only that column); only the row groups holding them are read, both images hashed
   (SHA-256) and their uids checked; pairs with byte-identical images are dropped.
5. The shared splitter (:mod:`pigbench.splits`): prompt- and image-level leakage checks.

A row group of either kind of shard that fails to read or decode
(:class:`~pigbench.adapters._parquet.UnreadableRowGroup`) is skipped with a one-line warning naming
the file, the group, its rows and why; its rows are counted (:data:`UNREADABLE_META`, or
:data:`UNREADABLE_IMAGES` for the split's rows in it; rows of a group whose ``ranking_id`` column
fails count as not found) and recorded in no image store index, so a repaired shard is read again.

Images stay lazy: an :class:`ImageRef` reads its row (:class:`RowCache`) when an evaluator opens
it. The kept rows' values read when hashing stay in memory up to 1 GiB (least recently used let go
first); a row let go is read again with the other kept rows of its row group.

Image store (``--dataset-option images_cache=DIR|none``): the hashing pass also writes each kept
image's bytes to ``DIR/<sha[:2]>/<sha>`` (:class:`ImageStore`; disk use: the kept images' bytes;
clear it by deleting DIR), and an image opens from its file, so a run reads no row group again (and
the pass's rows are not kept in memory). The
default is ``$PIGBENCH_CACHE/images`` (else ``.pigbench_cache/images``) for images read from the
hub, ``none`` (memory only) for local with-images shards. A stored file is used only when its
bytes have the SHA-256 the split recorded (else the row is read again and the file rewritten).
``DIR/index-<key>.json``, one per shard set, maps each ranking id the pass has gone over (any split:
it grows with each) to its row's position, its metadata image uids and the pass's outcome (both
hashes and sizes, or the skip reason). A split reuses the entry of each of its rows at the same
position with the same uids whose files are in the store at their recorded sizes, runs the pass only
for its other rows (reading only their row groups: none when every row was seen, as for another
evaluator, K, ``users=N`` or seed over the same users) and adds their entries to the index
(:class:`~pigbench.append_index.AppendIndex`): appended as lines of ``index-<key>.jsonl`` under a lock
on ``index-<key>.lock``, so that ranks or runs adding at once lose nothing and a run adding a few rows
does not rewrite the whole file; the log is folded into the ``.json`` file once it would outgrow it. The
key hashes the pass's rules and the index format (``_INDEX_VERSION``) and the shards' names and
footers (rows, row group sizes): the index trusts that shards of the same names and footers hold the
same bytes. This option and ``images_path`` name locations, not content (every image is keyed by its
SHA-256): they are left out of the run key (``location_options``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pigbench.adapter import DatasetAdapter, DatasetError
from pigbench.append_index import AppendIndex, file_size
from pigbench.atomic_file import remove_stale_temps, write_atomic
from pigbench.adapters._columnar_split import FIRST, SECOND, TIE, PairRows, split_pairs
from pigbench.adapter_options import check_options, get_int
from pigbench.adapters._parquet import (BINARY, BOOL, FLOAT, INTEGER, STRING, Location, RowCache, ShardSet, UnreadableRowGroup,
                                        check_schema, find_shards, missing_shards, parquet_errors, read_schema,
                                        readable_row_groups)
from pigbench.hub import download_hint, remote_files, resolve_root
from pigbench.protocol import ImageError, ImageRef, PreferenceRecord, normalize_prompt
from pigbench.splits import SplitResult
from pigbench.store import default_cache_dir

SCHEMA = pa.schema([  # the 19 columns of the with-images shards, in order; _no_images lacks jpg_0/jpg_1
    ("are_different", pa.bool_()), ("best_image_uid", pa.string()), ("caption", pa.string()),
    ("created_at", pa.timestamp("ns")), ("has_label", pa.bool_()), ("image_0_uid", pa.string()),
    ("image_0_url", pa.string()), ("image_1_uid", pa.string()), ("image_1_url", pa.string()),
    ("jpg_0", pa.binary()), ("jpg_1", pa.binary()), ("label_0", pa.float64()), ("label_1", pa.float64()),
    ("model_0", pa.string()), ("model_1", pa.string()), ("ranking_id", pa.int64()), ("user_id", pa.int64()),
    ("num_example_per_prompt", pa.int64()), ("__index_level_0__", pa.int64()),
])
NO_IMAGES_SCHEMA = pa.schema([f for f in SCHEMA if f.name not in ("jpg_0", "jpg_1")])
COLUMNS = {"best_image_uid": STRING, "caption": STRING, "has_label": BOOL, "image_0_uid": STRING,
           "image_1_uid": STRING, "label_0": FLOAT, "label_1": FLOAT, "ranking_id": INTEGER, "user_id": INTEGER}
IMAGE_COLUMNS = {"image_0_uid": STRING, "image_1_uid": STRING, "jpg_0": BINARY, "jpg_1": BINARY}
UNREADABLE_META = "in an unreadable row group of the metadata shards"
UNREADABLE_IMAGES = "in an unreadable row group of the with-images shards"
_INDEX_VERSION = 2  # of the hashing pass's rules (_check_row) and the index format: a change makes earlier index files unused


class PickAPic(DatasetAdapter):
    """Pick-a-Pic v2 pairwise preferences, split per user; see the module docstring."""

    description = "Pick-a-Pic v2: pairwise Pick-a-Pic preferences (ties kept), per-user splits built from train"
    license = "unknown (the dataset cards state none; the PickScore code is MIT)"
    homepage = "https://huggingface.co/datasets/yuvalkirstain/pickapic_v2"
    name = "pickapic"
    default_reference_size = 8
    env_var = "PIGBENCH_PICKAPIC_PATH"
    META_REPO, IMAGE_REPO = "yuvalkirstain/pickapic_v2_no_images", "yuvalkirstain/pickapic_v2"
    OPTIONS = {"split": "source split (default train)", "images_path": "folder of with-images shards",
               "images": "'none': split from metadata only, images unavailable", "users": "keep a seeded sample of N users",
               "images_cache": "folder storing the kept images' bytes, or 'none' (default: under $PIGBENCH_CACHE for hub reads)"}
    location_options = ("images_path", "images_cache")  # every image is keyed by its SHA-256 wherever it is read
    path_options = ("images_path", "images_cache")

    def __init__(self, path: Optional[str] = None, options: Optional[dict] = None) -> None:
        super().__init__(path, options)
        check_options(self.name or "pickapic", self.options, self.OPTIONS)
        if self.options.get("images_cache") == "":  # Path("") would be the working directory
            raise DatasetError(f"{self.name or 'pickapic'}: option images_cache='' names no folder "
                               "(give a folder, or 'none' to keep images in memory)")
        if self.options.get("images_path") == "":  # not the hub instead: the option asked for a local copy
            raise DatasetError(f"{self.name or 'pickapic'}: option images_path='' names no folder "
                               "(give the folder of the with-images shards, or leave the option out to read them from the hub)")
        self.split_name = self.options.get("split", "train")
        self.skipped_users: Counter[str] = Counter()
        self._files: dict[str, list[str]] = {}
        self._shards: Optional[ShardSet] = None

    # records ------------------------------------------------------------------------------
    def records(self) -> Iterator[PreferenceRecord]:
        """Every usable row; image hashes are computed lazily (reading each image's row group)."""
        rows, cache = self._locate(self._usable_rows())
        cols = self._columns(rows, cache, hashes=None)
        source = f"{self.META_REPO}:{self.split_name}"
        for r, rid in enumerate(cols.record_id):
            prompt, x, y = cols.make(r)
            ranks = {TIE: (1, 1), FIRST: (1, 2), SECOND: (2, 1)}[int(cols.outcome[r])]
            yield PreferenceRecord(rid, str(cols.user_id[r]), prompt, (x, y), ranks, source, f"ranking_id={rid}")

    def split(self, seed: int, reference_size: Optional[int] = None, max_targets_per_user: Optional[int] = None) -> SplitResult:
        """The shared split of the selected users' rows (columnar: episodes are built when read)."""
        k = self.default_reference_size if reference_size is None else reference_size
        selected = self._select_users(self._usable_rows(), k, seed)
        rows, cache = self._locate(selected)
        store = self._image_store() if cache is not None else None
        hashes = self._hash(rows, cache, store) if cache is not None else None
        if hashes is not None:  # with images=none no row is dropped after _select_users' check
            rows = rows.filter(pa.array([rid in hashes for rid in rows["ranking_id"].to_pylist()], pa.bool_()))
            self._skip_users("every row dropped by the image checks", np.setdiff1d(
                selected["user_id"].to_numpy(zero_copy_only=False), rows["user_id"].to_numpy(zero_copy_only=False)))
            rows = _rows_of_users(rows, self._eligible_users(rows, k, " after the image checks"))
        result = split_pairs(self._columns(rows, cache, hashes, store), self.name, seed, k, max_targets_per_user)
        self._note_fewer_users(len(np.unique(selected["user_id"].to_numpy(zero_copy_only=False))), result.users)
        result.skipped_records.update(self.skipped)
        result.skipped_users.update(self.skipped_users)
        for reason, examples in self.skip_examples.items():
            result.skip_examples.setdefault(reason, []).extend(examples)
        return result

    def _columns(self, rows: pa.Table, cache: Optional[RowCache], hashes: Optional[dict[int, tuple[str, str]]],
                 store: Optional["ImageStore"] = None) -> PairRows:
        """The rows as integer-coded columns; ``make`` builds a row's prompt and lazy images (read
        from ``store`` when given, which needs ``hashes``)."""
        n = len(rows)
        rid = rows["ranking_id"].to_numpy()
        enc = pc.dictionary_encode(rows["prompt"].combine_chunks())
        prompts, prompt_code = enc.dictionary.to_pylist(), enc.indices.to_numpy(zero_copy_only=False)
        keys: dict[str, int] = {}
        key_of = np.array([keys.setdefault(normalize_prompt(p), len(keys)) for p in prompts], np.int64)
        enc = pc.dictionary_encode(pa.concat_arrays([rows["image_0_uid"].combine_chunks(), rows["image_1_uid"].combine_chunks()]))
        uids, uid_code = enc.dictionary.to_pylist(), np.ascontiguousarray(enc.indices.to_numpy(zero_copy_only=False).reshape(2, n).T)
        hash_key = None
        if hashes is not None:
            codes: dict[str, int] = {}
            hash_key = np.array([[codes.setdefault(h, len(codes)) for h in hashes[r]] for r in rid.tolist()], np.int64).reshape(n, 2)

        def image(r: int, side: int) -> ImageRef:
            uid = uids[uid_code[r, side]]
            if cache is None:
                return ImageRef(uid, _images_not_read, f"uid:{uid}")
            known = None if hashes is None else hashes[int(rid[r])][side]
            if store is not None and known is not None:
                return ImageRef(uid, functools.partial(_load_stored, store, cache, int(rid[r]), side, uid, known), known)
            return ImageRef(uid, functools.partial(_load, cache, int(rid[r]), side, uid), known)

        def make(r: int) -> tuple[str, ImageRef, ImageRef]:
            return prompts[prompt_code[r]], image(r, 0), image(r, 1)

        tie, first = rows["tie"].to_numpy(zero_copy_only=False), rows["first"].to_numpy(zero_copy_only=False)
        return PairRows([str(x) for x in rid.tolist()], rows["user_id"].to_numpy(), key_of[prompt_code], uid_code,
                        hash_key, np.where(tie, TIE, np.where(first, FIRST, SECOND)).astype(np.int8), make)

    # metadata -----------------------------------------------------------------------------
    def _usable_rows(self) -> pa.Table:
        """Metadata rows passing the row checks: ranking_id, user_id, prompt, uids, tie, first, shard."""
        self.skipped.clear()  # counts describe the latest load only
        self.skip_examples.clear()
        self.skipped_users.clear()
        files = self._meta_files()
        tables = []
        for i, f in enumerate(files):
            with parquet_errors(f):
                pf = pq.ParquetFile(f)
            check_schema(pf.schema_arrow, COLUMNS, f)
            groups = [t for _, t in readable_row_groups(pf, f, list(COLUMNS), self._skip_metadata_group)]
            t = pa.concat_tables(groups) if groups else pf.schema_arrow.empty_table().select(list(COLUMNS))
            tables.append(t.append_column("shard", pa.array(np.full(len(t), i, np.int32))))
        t = pa.concat_tables(tables, promote_options="permissive")
        prompt = _collapse_whitespace(t["caption"].combine_chunks())
        l0 = t["label_0"].cast(pa.float64()).to_numpy(zero_copy_only=False)
        l1 = t["label_1"].cast(pa.float64()).to_numpy(zero_copy_only=False)
        has_label = _np(pc.fill_null(t["has_label"], True))
        tie, first = l0 == 0.5, l0 == 1.0
        u0, u1, best = t["image_0_uid"], t["image_1_uid"], t["best_image_uid"]
        winner = pc.if_else(pa.array(first), u0, u1)
        best_is_image = _np(pc.fill_null(pc.or_(pc.equal(best, u0), pc.equal(best, u1)), False))
        checks = [
            ("missing ranking_id, user_id, caption or image uid",
             _np(pc.is_null(t["ranking_id"])) | _np(pc.is_null(t["user_id"])) | _np(pc.is_null(u0)) | _np(pc.is_null(u1))
             | _np(pc.fill_null(pc.equal(prompt, ""), True))),
            ("identical image uids in a pair", _np(pc.fill_null(pc.equal(u0, u1), False))),
            ("label_0/label_1 not (1, 0), (0, 1) or (0.5, 0.5)", ~(tie | first | (l0 == 0.0)) | ~np.isclose(l0 + l1, 1.0)),
            ("has_label False with a decisive label", ~has_label & ~tie),
            ("best_image_uid disagrees with the labels",
             np.where(tie, best_is_image, ~_np(pc.fill_null(pc.equal(best, winner), False)))),
        ]
        bad = np.zeros(len(t), bool)
        for reason, mask in checks:
            self._skip_rows(reason, t, mask & ~bad, files)
            bad |= mask
        rid = pc.fill_null(t["ranking_id"], 0).to_numpy()  # integers (a null would make floats); null rows are bad
        keep = np.flatnonzero(~bad)
        dup = np.zeros(len(t), bool)
        dup[keep] = True
        dup[keep[np.unique(rid[keep], return_index=True)[1]]] = False
        self._skip_rows("repeated ranking_id", t, dup, files)
        keep = pa.array(~(bad | dup))
        return pa.table({"ranking_id": t["ranking_id"], "user_id": t["user_id"], "prompt": prompt, "image_0_uid": u0,
                         "image_1_uid": u1, "tie": pa.array(tie), "first": pa.array(first),
                         "shard": t["shard"]}).filter(keep)

    def _skip_metadata_group(self, exc: UnreadableRowGroup) -> None:
        """Skip an unreadable row group of a metadata shard: its rows are counted, and a warning names it."""
        _warn_unreadable(self.name, exc, f"skipping its {len(exc.rows)} rows")
        self.skip(UNREADABLE_META, f"{Path(exc.name).name} row group {exc.group} (rows {exc.rows.start}-{exc.rows.stop - 1})")
        self.skipped[UNREADABLE_META] += len(exc.rows) - 1

    def _skip_rows(self, reason: str, t: pa.Table, mask: np.ndarray, files: list[str]) -> None:
        idx = np.flatnonzero(mask)
        if len(idx):
            for i in idx[:5].tolist():
                self.skip(reason, f"{Path(files[t['shard'][i].as_py()]).name} ranking_id={t['ranking_id'][i].as_py()}")
            self.skipped[reason] += len(idx) - min(len(idx), 5)

    def _select_users(self, rows: pa.Table, k: Optional[int], seed: int) -> pa.Table:
        kept = self._eligible_users(rows, k)
        limit = get_int(self.name, self.options, "users", None, minimum=1)
        if limit is not None and limit < len(kept):
            order = sorted(kept.tolist(), key=lambda u: hashlib.sha256(f"{self.name}\x00{u}\x00{seed}".encode()).digest())
            self._skip_users(f"not in the seeded sample (users={limit})", np.array(order[limit:]))
            kept = np.array(order[:limit])
        return _rows_of_users(rows, kept)

    def _eligible_users(self, rows: pa.Table, k: Optional[int], after: str = "") -> np.ndarray:
        """The users of ``rows`` (sorted) that have the rows a split with reference size ``k`` needs; the
        others are skipped, their reason ending with ``after``. Fixed K: K + 1 decisive (non-tie) rows, K
        references plus a decisive target (../shared/specs/datasets.md section 1.6, pitfall 4: "keep users
        with >= ref_size + 1 labelled non-tie rows"); a user with K decisive rows and ties only besides
        would be scored on ties alone. Dynamic (None): 2 rows."""
        users, inv = np.unique(rows["user_id"].to_numpy(zero_copy_only=False), return_inverse=True)
        if k is None:
            ok, reason = np.bincount(inv, minlength=len(users)) >= 2, "fewer than 2 ranked sets"
        else:
            decisive = np.bincount(inv, weights=~rows["tie"].to_numpy(zero_copy_only=False), minlength=len(users))
            ok, reason = decisive >= k + 1, f"fewer than {k + 1} decisive rows ({k} references plus 1 decisive target)"
        self._skip_users(reason + after, users[~ok])
        return users[ok]

    def _note_fewer_users(self, sampled: int, found: int) -> None:
        """One line (a warning) when ``users=N`` asked for more users than the split holds: how many were
        asked for and found, and why (fewer users with the rows a split needs, sampled users dropped later)."""
        limit = get_int(self.name, self.options, "users", None, minimum=1)
        if limit is None or found >= limit:
            return
        why = [f"only {sampled} users have the rows a split needs"] if sampled < limit else []
        if found < sampled:
            why.append(f"{sampled - found} sampled users lost rows or targets to the image or leakage checks "
                       "(see the skipped users)")
        warnings.warn(f"{self.name}: users={limit} asked for {limit} users, found {found}: {'; '.join(why)}", stacklevel=3)

    def _skip_users(self, reason: str, users: np.ndarray) -> None:
        if len(users):
            self.skipped_users[reason] += len(users)
            self.skip_examples.setdefault(reason, []).extend(f"user {u}" for u in users[:5].tolist())

    # images -------------------------------------------------------------------------------
    def _locate(self, rows: pa.Table) -> tuple[pa.Table, Optional[RowCache]]:
        """Find the rows in the with-images shards; rows not found are skipped. None with images=none."""
        if self.options.get("images") == "none":
            return rows, None
        shards = self._image_shards()
        unreadable: list[UnreadableRowGroup] = []

        def skip_group(exc: UnreadableRowGroup) -> None:
            _warn_unreadable(self.name, exc, "the rows of the split in it count as not found")
            unreadable.append(exc)

        found = shards.locate("ranking_id", rows["ranking_id"], skip_group)
        here = pa.array([rid in found for rid in rows["ranking_id"].to_pylist()], pa.bool_())
        reason = "row not found in the with-images shards" + (" (some of their row groups unreadable)" if unreadable else "")
        self._skip_rows(reason, rows, ~_np(here), self._files["metadata"])
        rows = rows.filter(here)
        return rows, RowCache(shards, found, list(IMAGE_COLUMNS))

    def _hash(self, rows: pa.Table, cache: RowCache, store: Optional["ImageStore"] = None) -> dict[int, tuple[str, str]]:
        """SHA-256 of both images of every row, reading only the row groups that hold them; with a
        ``store``, writing the images there, reusing its index's outcome of each row hashed before
        (:meth:`ImageStore.reusable`: only the other rows' groups are read) and adding the new ones."""
        uids = dict(zip(rows["ranking_id"].to_pylist(), zip(rows["image_0_uid"].to_pylist(), rows["image_1_uid"].to_pylist())))
        order = sorted(uids, key=cache.locations.__getitem__)  # the pass's order, which the skip examples follow
        outcomes: dict[int, list] = {}  # rid -> [skip reason] or [[sha_0, sha_1], [size_0, size_1]]
        if store is not None:
            index = store.index_path(self._index_key(cache))
            known = store.load_index(index)
            for rid in order:
                entry = store.reusable(known.get(str(rid)), cache.locations[rid], uids[rid])
                if entry is not None:
                    outcomes[rid] = entry[2:]
        todo = [rid for rid in order if rid not in outcomes]
        if todo:
            def skip_group(exc: UnreadableRowGroup, rids: list[int]) -> None:  # not in the index: read again next time
                _warn_unreadable(self.name, exc, f"skipping its {len(rids)} rows of the split")
                outcomes.update((rid, [UNREADABLE_IMAGES]) for rid in rids)

            new = {rid: self._check_row(v, uids[rid], store)
                   for rid, v in cache.rows(keep=store is None, keys=todo, on_unreadable=skip_group)}
            outcomes.update(new)
            if store is not None:
                store.add_to_index(index, {str(rid): [list(cache.locations[rid]), list(uids[rid]), *outcome]
                                           for rid, outcome in new.items()})
        out: dict[int, tuple[str, str]] = {}
        for rid in order:
            outcome = outcomes[rid]
            if len(outcome) == 1:
                self.skip(outcome[0], f"ranking_id={rid}")
            else:
                out[rid] = tuple(outcome[0])
        return out

    def _check_row(self, v: dict, uids: tuple[str, str], store: Optional["ImageStore"]) -> list:
        """The hashing pass's outcome for one row, as the index records it: ``[skip reason]`` or
        ``[[sha_0, sha_1], [size_0, size_1]]``; its images written to ``store``."""
        if (v["image_0_uid"], v["image_1_uid"]) != uids:
            return ["with-images row has other image uids than the metadata"]
        if v["jpg_0"] is None or v["jpg_1"] is None:
            return ["image bytes missing (null jpg_0/jpg_1)"]
        h = [hashlib.sha256(v["jpg_0"]).hexdigest(), hashlib.sha256(v["jpg_1"]).hexdigest()]
        if h[0] == h[1]:
            return ["identical image bytes in a pair"]
        if store is not None:
            store.put(h[0], v["jpg_0"])
            store.put(h[1], v["jpg_1"])
        return [h, [len(v["jpg_0"]), len(v["jpg_1"])]]

    def _index_key(self, cache: RowCache) -> str:
        """What the index's entries are valid for: the pass's rules and the index format
        (:data:`_INDEX_VERSION`) and the shards (names and footers); each entry names its row's
        position and metadata image uids (:meth:`ImageStore.reusable`)."""
        shards = cache.shards
        files = []
        for i in range(len(shards.paths)):
            md = shards.file(i).metadata
            files.append([shards.name(i), md.num_rows, [[md.row_group(g).num_rows, md.row_group(g).total_byte_size]
                                                       for g in range(md.num_row_groups)]])
        return hashlib.sha256(json.dumps([_INDEX_VERSION, files]).encode()).hexdigest()[:24]

    def _image_store(self) -> Optional["ImageStore"]:
        """The ``images_cache`` store: the option's folder; unset, one under ``$PIGBENCH_CACHE`` for
        images read from the hub, none for local shards; None for ``none``."""
        value = self.options.get("images_cache")
        if value is None:
            if self._image_shards().filesystem is None:
                return None
            value = str(Path(default_cache_dir()) / "images")
        return None if value == "none" else ImageStore(Path(value).expanduser())

    # files --------------------------------------------------------------------------------
    def _meta_files(self) -> list[str]:
        pattern = f"data/{self.split_name}-*"
        if self.path or os.environ.get(self.env_var):
            root = resolve_root(what=f"{self.name} metadata", path=self.path, env_var=self.env_var)
            shards = find_shards(root, self.split_name)
            meta = [str(p) for p in shards if "jpg_0" not in read_schema(p).names]
            self._files["local_images"] = [str(p) for p in shards if str(p) not in meta]
            files = meta or self._files["local_images"]
        else:
            root = resolve_root(what=f"{self.name} metadata", path=None, env_var=self.env_var, repo_id=self.META_REPO, allow_patterns=[pattern])
            files = [str(p) for p in find_shards(root, self.split_name)]
        if not files:
            raise DatasetError(f"{self.name}: no '{self.split_name}' parquet shards under {root}; "
                               + download_hint(self.META_REPO, [pattern], "--dataset-path", self.env_var))
        missing = missing_shards(files) if root.is_dir() else []
        if missing:
            raise DatasetError(f"{self.name}: {len(missing)} '{self.split_name}' metadata shard(s) missing, first {missing[0]}; "
                               + download_hint(self.META_REPO, [pattern], "--dataset-path", self.env_var))
        self._files["metadata"] = files
        return files

    def _image_shards(self) -> ShardSet:
        if self._shards is None:
            pattern = f"data/{self.split_name}-*.parquet"
            local = list(self._files.get("local_images", []))
            if self.options.get("images_path"):
                root = resolve_root(what=f"{self.name} images", path=self.options["images_path"], env_var="", flag="--dataset-option images_path")
                local = [str(p) for p in find_shards(root, self.split_name) if "jpg_0" in read_schema(p).names]
                if not local:  # not the hub instead: the option asked for a local copy
                    raise DatasetError(f"{self.name}: no '{self.split_name}' with-images parquet shards (with jpg_0/jpg_1) "
                                       f"under {root} (--dataset-option images_path)")
            if local:
                self._shards = ShardSet(local)
            else:
                hint = (download_hint(self.IMAGE_REPO, [pattern], "--dataset-option images_path", "")
                        + " (or --dataset-option images=none to build the split without images)")
                fs, names = remote_files(self.IMAGE_REPO, pattern, what=f"{self.name} images", hint=hint)
                self._shards = ShardSet(names, filesystem=fs)
            for i in range(len(self._shards.paths)):
                check_schema(self._shards.file(i).schema_arrow, {"ranking_id": INTEGER, **IMAGE_COLUMNS}, self._shards.name(i))
            self._files["images"] = [str(p) for p in self._shards.paths]
        return self._shards

    def provenance(self) -> dict[str, Any]:
        shards = self._shards
        return {**super().provenance(), "metadata_files": [Path(f).name for f in self._files.get("metadata", [])],
                "image_files": len(self._files.get("images", [])), "row_groups_read": shards.row_groups_read if shards else 0}


class PickAPicV1(PickAPic):
    """Pick-a-Pic v1 (a subset of v2, fewer generators); same format and processing."""

    description = "Pick-a-Pic v1: pairwise Pick-a-Pic preferences (subset of v2), per-user splits built from train"
    name = "pickapic-v1"
    homepage = "https://huggingface.co/datasets/yuvalkirstain/pickapic_v1"
    META_REPO, IMAGE_REPO = "yuvalkirstain/pickapic_v1_no_images", "yuvalkirstain/pickapic_v1"


def _rows_of_users(rows: pa.Table, users: np.ndarray) -> pa.Table:
    """The rows of ``users`` (int64 ids)."""
    return rows.filter(pc.is_in(rows["user_id"], value_set=pa.array(users, pa.int64())))


def _collapse_whitespace(text: pa.Array) -> pa.Array:
    """Strip and collapse whitespace runs to one space, rewriting only the strings that need it;
    whitespace is what ``str.split`` splits on (the leakage key, :func:`normalize_prompt`)."""
    space = r"[\t-\r\x1c-\x1f\x85\p{Z}]"
    needs = pc.fill_null(pc.match_substring_regex(text, rf"^{space}|{space}$|{space}{{2}}|[^ \PZ]|[\t-\r\x1c-\x1f\x85]"), False)
    if not pc.any(needs).as_py():
        return text
    fixed = pc.utf8_trim_whitespace(pc.replace_substring_regex(text.filter(needs), rf"{space}+", " "))
    return pc.replace_with_mask(text, needs, fixed)


def _warn_unreadable(adapter: str, exc: UnreadableRowGroup, consequence: str) -> None:
    """One line: what the unreadable row group costs the split, then the file, the group, its rows and why."""
    warnings.warn(f"{adapter}: {consequence}: {exc}", RuntimeWarning, stacklevel=2)


def _np(arr: Any) -> np.ndarray:
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)


def _load(cache: RowCache, rid: int, side: int, uid: str) -> bytes:
    try:
        row = cache.get(rid)
    except DatasetError as exc:  # an unreadable row group fails this image, not the run
        raise ImageError(f"image {uid!r}: {exc}") from None
    if row[f"image_{side}_uid"] != uid or row[f"jpg_{side}"] is None:
        raise ImageError(f"image {uid!r}: ranking_id={rid} of the with-images shards has no jpg_{side} for this uid")
    return row[f"jpg_{side}"]


def _load_stored(store: "ImageStore", cache: RowCache, rid: int, side: int, uid: str, sha: str) -> bytes:
    """The image's stored bytes; a missing or damaged file is read again from its row (and rewritten),
    an :class:`ImageError` if the row's bytes do not have the SHA-256 the split recorded."""
    data = store.get(sha)
    if data is None:
        data = _load(cache, rid, side, uid)
        if hashlib.sha256(data).hexdigest() != sha:
            raise ImageError(f"image {uid!r}: ranking_id={rid} of the with-images shards no longer has the bytes the split "
                             f"hashed (SHA-256 {sha}); delete {store.root}/index-* and run again")
        with contextlib.suppress(DatasetError):  # a store not writable now: the image is read all the same
            store.put(sha, data, replace=True)
    return data


class ImageStore:
    """Image bytes by their SHA-256, one file each: ``root/<sha[:2]>/<sha>``, and the hashing pass's
    indexes (:class:`~pigbench.append_index.AppendIndex`); see the module docstring. Image files are
    written to a temporary name in their folder, then renamed, so that concurrent writers (ranks, runs)
    and killed runs leave no partial file. Opening the store removes the temporary files of killed
    writers of its indexes (:func:`~pigbench.atomic_file.remove_stale_temps`, one listing of ``root``);
    those of killed image writers in a ``<sha[:2]>/`` folder are removed the first time this store
    writes into that folder (one listing per folder per store, none on reading)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        remove_stale_temps(root)
        self._swept: set[Path] = {root}  # folders whose stale temporary files this store removed
        self._swept_lock = threading.Lock()

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / sha

    def index_path(self, key: str) -> Path:
        return self.root / f"index-{key}.json"

    def put(self, sha: str, data: bytes, replace: bool = False) -> None:
        """Store ``data`` (whose SHA-256 is ``sha``) unless a file of its size is there (``replace``: in any case)."""
        path = self.path(sha)
        if not replace and file_size(path) == len(data):
            return
        self.write(path, data)

    def get(self, sha: str) -> Optional[bytes]:
        """The stored bytes of ``sha``; None if its file is missing or holds bytes of another SHA-256."""
        try:
            data = self.path(sha).read_bytes()
        except OSError:
            return None
        return data if hashlib.sha256(data).hexdigest() == sha else None

    def load_index(self, path: Path) -> dict[str, list]:
        """The index at ``path``: ``{ranking id: [[shard, group, row], [uid_0, uid_1], *outcome]}``, the
        outcome as :meth:`PickAPic._check_row` gives it; entries of a damaged file or line are left out
        (:class:`~pigbench.append_index.AppendIndex`: its main file, then the additions logged since)."""
        return AppendIndex(path, _index_entry_ok).read()

    def add_to_index(self, path: Path, entries: dict[str, list]) -> None:
        """Add ``entries`` to the index at ``path`` (appended under a lock: concurrent adders lose
        nothing); a :class:`DatasetError` naming it if that fails."""
        try:
            AppendIndex(path, _index_entry_ok).add(entries)
        except OSError as exc:
            raise _write_error("index", path, exc) from None

    def reusable(self, entry: Optional[list], at: Location, uids: tuple[str, str]) -> Optional[list]:
        """``entry`` if it is of the row now at ``at`` with these metadata image uids and every file it
        names is stored at its recorded size; else None (the row is hashed again)."""
        if entry is None or entry[:2] != [list(at), list(uids)]:
            return None
        return entry if len(entry) == 3 or all(file_size(self.path(h)) == n for h, n in zip(entry[2], entry[3])) else None

    def write(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` atomically (:func:`~pigbench.atomic_file.write_atomic`: its mode
        follows the umask, so a store shared by a group stays readable); a :class:`DatasetError` naming
        it if that fails. The first write into a folder removes its stale temporary files first."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._sweep(path.parent)
            write_atomic(path, data)
        except OSError as exc:
            raise _write_error("image", path, exc) from None

    def _sweep(self, folder: Path) -> None:
        """Remove the temporary files of killed writers in ``folder`` unless this store already did
        (:func:`~pigbench.atomic_file.remove_stale_temps`); concurrent writers list a folder once."""
        with self._swept_lock:
            if folder in self._swept:
                return
            self._swept.add(folder)
        remove_stale_temps(folder)


def _write_error(what: str, path: Path, exc: OSError) -> DatasetError:
    return DatasetError(f"cannot write the {what} file {path} of the image store ({exc}); "
                        "--dataset-option images_cache=DIR for another folder, or =none to keep images in memory")


def _index_entry_ok(e: Any) -> bool:
    """Whether ``e`` has an index entry's shape (see :meth:`ImageStore.load_index`)."""
    if not (isinstance(e, list) and len(e) in (3, 4) and _strs(e[1], 2) and isinstance(e[0], list) and len(e[0]) == 3
            and all(type(x) is int for x in e[0])):
        return False
    return isinstance(e[2], str) if len(e) == 3 else (_strs(e[2], 2) and isinstance(e[3], list) and len(e[3]) == 2
                                                     and all(type(x) is int for x in e[3]))


def _strs(v: Any, n: int) -> bool:
    return isinstance(v, list) and len(v) == n and all(isinstance(x, str) for x in v)


def _images_not_read() -> bytes:
    raise ImageError("not available: the split was built with --dataset-option images=none")
