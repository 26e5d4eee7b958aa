"""``pickapic-lup``: the learn-user-pref per-user Pick-a-Pic v2 benchmark (hub ``wenyii/learn-user-pref``).

Files (``--dataset-path DIR``, ``PIGBENCH_LUP_PATH``, or the hub): ``bench_test_w_bad.pkl`` (test,
~551 MB) and the train shards ``bench_train_w_bad_split_{0,1,...}.pkl`` (merged in shard order;
a merged ``bench_train_w_bad.pkl`` is used when present). Each is a pickled pandas DataFrame
with one row per target pair::

    user_id                Pick-a-Pic user id
    reference_list         encoded images the user liked
    reference_list_bad     encoded images the user disliked (same length and order)
    reference_prompt_list  prompt i of reference_list[i] and reference_list_bad[i]
    image0, image1, prompt the target pair and its prompt
    label0                 1: image0 preferred, 0: image1 preferred (0.5 is read as a tie: undocumented)

The source fixes each target's references, so :meth:`LearnUserPref.split` builds one episode per
row from its first K reference pairs (K = 8, like the authors' ``eval.py``); the seed only decides
the A/B order. A row with no user id, a reference list that is missing or not a list, fewer than
K references, an unknown label, a prompt that is not a string or an unreadable image value is
skipped and counted; as in the shared splitter, a
target whose prompt (normalized) or image (content hash) appears in its references is dropped.
User ids keep their integer spelling where pandas stored them as floats (a column with a missing
id). Image ids are ``sha256:<16 hex>`` of the bytes.

Unpickling can run any code a file asks for, so by default (``trust_pickle`` unset or false) files
are read with a restricted unpickler (:func:`~pigbench.adapters._safe_pickle.load_restricted`): it
rebuilds only plain containers, strings, numbers, bytes, numpy arrays, pandas frames and PIL images
(what the hub's pickle scan lists for these files: a DataFrame and numpy arrays), checks each
array, dtype and frame block against its shape and axes, and refuses anything else naming the file
and the global. ``trust_pickle=true`` uses plain pickle
(:func:`~pigbench.adapters._safe_pickle.load_trusted`): any global, no checks (a damaged file can
crash the process), for a trusted file holding more than that (e.g. datetime, categorical or
nullable-integer columns), which the restricted unpickler refuses.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from pigbench.adapter import DatasetAdapter, DatasetError
from pigbench.adapter_options import check_options, get_bool
from pigbench.adapters._safe_pickle import load_restricted, load_trusted
from pigbench.hub import resolve_root
from pigbench.protocol import Episode, ImageRef, Label, PreferenceRecord, ReferencePair, Target
from pigbench.splits import ReferenceIndex, SplitResult, a_first, fingerprint

COLUMNS = ("user_id", "reference_list", "reference_list_bad", "reference_prompt_list", "image0", "image1", "prompt", "label0")
LABELS = {1.0: Label.A, 0.0: Label.B, 0.5: Label.TIE}


class LearnUserPref(DatasetAdapter):
    """Per-user Pick-a-Pic v2 targets with their fixed references; see the module docstring."""

    name = "pickapic-lup"
    description = "learn-user-pref: per-user Pick-a-Pic v2 benchmark with fixed reference pairs per target"
    license = "MIT (dataset card)"
    homepage = "https://huggingface.co/datasets/wenyii/learn-user-pref"
    default_reference_size = 8
    env_var = "PIGBENCH_LUP_PATH"
    REPO = "wenyii/learn-user-pref"
    OPTIONS = {"split": "test (default) or train",
               "trust_pickle": "true: unpickle with plain pickle, which runs any code the file asks for and skips the damage "
                               "checks, for a trusted file holding more than plain data, pandas frames, numpy arrays and "
                               "PIL images (default false: the restricted unpickler, which refuses such a file)"}

    def records(self) -> Iterator[PreferenceRecord]:
        """The target pairs as records (their references are the source's, see :meth:`split`)."""
        for rid, user, row in self._rows():
            images, gold = self._target(rid, row)
            if images is not None:
                ranks = {Label.A: (1, 2), Label.B: (2, 1), Label.TIE: (1, 1)}[gold]
                yield PreferenceRecord(rid, user, row["prompt"], images, ranks, self.REPO, rid)

    def split(self, seed: int, reference_size: Optional[int] = None, max_targets_per_user: Optional[int] = None) -> SplitResult:
        k = self.default_reference_size if reference_size is None else reference_size
        if k is None or k < 0:
            raise DatasetError(f"{self.name}: the reference size must be a number >= 0 (the source fixes up to 8 per target)")
        result = SplitResult([], self.name, seed, k)
        per_user: dict[str, int] = {}
        for rid, user, row in self._rows():
            per_user.setdefault(user, 0)
            images, gold = self._target(rid, row)
            refs = self._references(rid, row, k) if images is not None else None
            if images is None or refs is None:
                continue
            leak = _leak(row["prompt"], images, refs)
            if leak:
                result.note(result.skipped_records, leak, rid)
                continue
            if max_targets_per_user is not None and per_user[user] >= max_targets_per_user:
                continue
            sample_id = f"{user}/{rid}/0-1"
            x, y = images
            target = Target(sample_id, row["prompt"], x, y, gold, rid) if a_first(sample_id, seed) else \
                Target(sample_id, row["prompt"], y, x, gold.swapped(), rid)
            result.episodes.append(Episode(user, refs, target))
            per_user[user] += 1
        for user, n in per_user.items():
            if not n:
                result.note(result.skipped_users, "no usable target row", f"user {user}")
        result.users = sum(1 for n in per_user.values() if n)
        result.fingerprint = fingerprint(result.episodes)
        result.skipped_records.update(self.skipped)
        for reason, examples in self.skip_examples.items():
            result.skip_examples.setdefault(reason, []).extend(examples)
        return result

    # rows ---------------------------------------------------------------------------------
    def _target(self, rid: str, row: Any) -> tuple[Optional[tuple[ImageRef, ImageRef]], Label]:
        gold = LABELS.get(_number(row["label0"]))
        if gold is None:
            self.skip("label0 not 0, 0.5 or 1", f"{rid}: {row['label0']!r}")
            return None, Label.INVALID
        if not isinstance(row["prompt"], str):
            self.skip("prompt is not a string", f"{rid}: {row['prompt']!r}")
            return None, gold
        x, y = _image(row["image0"]), _image(row["image1"])
        if x is None or y is None:
            self.skip("target image is not bytes, a PIL image or an array", rid)
            return None, gold
        return (x, y), gold

    def _references(self, rid: str, row: Any, k: int) -> Optional[tuple[ReferencePair, ...]]:
        values = [row[c] for c in ("reference_list", "reference_list_bad", "reference_prompt_list")]
        if not all(isinstance(v, (list, tuple, np.ndarray)) for v in values):
            self.skip("reference lists missing or not lists", rid)
            return None
        liked, disliked, prompts = (list(v) for v in values)
        if not len(liked) == len(disliked) == len(prompts):
            self.skip("reference lists of different lengths", rid)
            return None
        if len(liked) < k:
            self.skip(f"fewer than {k} reference pairs", rid)
            return None
        refs = []
        for i in range(k):
            if not isinstance(prompts[i], str):
                self.skip("reference prompt is not a string", f"{rid} reference {i}: {prompts[i]!r}")
                return None
            good, bad = _image(liked[i]), _image(disliked[i])
            if good is None or bad is None:
                self.skip("reference image is not bytes, a PIL image or an array", f"{rid} reference {i}")
                return None
            refs.append(ReferencePair(prompts[i], good, bad, f"{rid}/ref{i}"))
        return tuple(refs)

    def _rows(self) -> Iterator[tuple[str, str, Any]]:
        """(record id ``<file stem>:<row>``, user id, row) over the chosen split's files, in order;
        a row without a user id is skipped and counted."""
        check_options(self.name, self.options, self.OPTIONS)
        self.skipped.clear()
        self.skip_examples.clear()
        trust = get_bool(self.name, self.options, "trust_pickle", False)
        for path in self._files():
            frame = (load_trusted if trust else load_restricted)(path)
            columns = list(getattr(frame, "columns", []))
            if not hasattr(frame, "iterrows"):
                raise DatasetError(f"{path}: expected a pickled pandas DataFrame, found {type(frame).__name__}")
            for col in COLUMNS:
                if col not in columns:
                    raise DatasetError(f"{path}: missing column {col!r}; found columns: {', '.join(map(str, columns))}")
                if columns.count(col) > 1:  # a row's value would be a Series of both
                    raise DatasetError(f"{path}: column {col!r} appears {columns.count(col)} times; "
                                       f"found columns: {', '.join(map(str, columns))}")
            for i, (_, row) in enumerate(frame.iterrows()):
                rid, user = f"{path.stem}:{i}", _user_id(row["user_id"])
                if user is None:
                    self.skip("missing user_id", rid)
                else:
                    yield rid, user, row

    def _files(self) -> list[Path]:
        split = self.options.get("split", "test")
        if split not in ("test", "train"):
            raise DatasetError(f"{self.name}: option split={split!r} must be 'test' or 'train'")
        pattern = "bench_test_w_bad.pkl" if split == "test" else "bench_train_w_bad*.pkl"
        root = resolve_root(what=f"{self.name} {split}", path=self.path, env_var=self.env_var, repo_id=self.REPO,
                            allow_patterns=[pattern])
        if root.is_file():
            named = re.fullmatch(r"bench_(test|train)_w_bad(?:_split_\d+)?\.pkl", root.name)
            if named and named.group(1) != split:
                raise DatasetError(f"{root}: a '{named.group(1)}' file by its name, not of the '{split}' split asked for "
                                   f"(--dataset-option split={named.group(1)})")
            return [root]
        merged = root / ("bench_test_w_bad.pkl" if split == "test" else "bench_train_w_bad.pkl")
        if merged.is_file():
            return [merged]
        shards = sorted(root.glob("bench_train_w_bad_split_*.pkl"), key=lambda p: int(re.findall(r"\d+", p.stem)[-1]))
        if split == "train" and shards:
            return shards
        raise DatasetError(f"{self.name}: no {pattern} in {root}; download it with `hf download {self.REPO} --repo-type "
                           f"dataset --include '{pattern}' --local-dir DIR` and pass --dataset-path DIR")

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "hub": self.REPO}


def _user_id(value: Any) -> Optional[str]:
    """The user id as text, an integer-valued float spelled as the integer; None when missing (None or NaN)."""
    is_float = isinstance(value, (float, np.floating))
    if value is None or (is_float and np.isnan(value)):
        return None
    return str(int(value)) if is_float and float(value).is_integer() else str(value)


def _number(value: Any) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _image(value: Any) -> Optional[ImageRef]:
    """A lazy image for encoded bytes (also as a 1-D uint8 array, which ``io.BytesIO`` reads as the
    authors' ``eval.py`` does), a non-empty PIL image or a uint8 pixel array PIL can read (2-D, or 3-D of
    1, 3 or 4 channels); None for anything else."""
    from PIL import Image

    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim == 1:
        value = value.tobytes()
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        digest = hashlib.sha256(data).hexdigest()
        return ImageRef(f"sha256:{digest[:16]}", data, digest)
    if isinstance(value, np.ndarray) and value.dtype == np.uint8:
        try:
            value = Image.fromarray(value)
        except (TypeError, ValueError):  # a shape PIL has no mode for: (h, w, 5), 4-D
            return None
    if isinstance(value, Image.Image) and 0 not in value.size:  # an empty image has no encoding to hash
        ref = ImageRef("pending", lambda img=value: img)
        return ImageRef(f"sha256:{ref.content_hash[:16]}", ref.source, ref.content_hash)
    return None


def _leak(prompt: str, images: tuple[ImageRef, ImageRef], refs: tuple[ReferencePair, ...]) -> Optional[str]:
    """The shared splitter's reason for dropping this target, or None."""
    leak = ReferenceIndex(refs).leak(prompt, images)
    if leak is not None:
        return leak
    if images[0].content_hash == images[1].content_hash:
        return "identical images in a target pair"
    return None
