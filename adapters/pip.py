"""``pip``: PIP, the per-user generation logs of "Tailored Visions" (Chen et al., CVPR 2024).

Source: ``PIP-dataset.zip`` (Google Drive, see github zzjchen/Tailored-Visions), unzipped so that
``--dataset-path DIR`` (or ``PIGBENCH_PIP_PATH``) holds ``user_data/<user_id>.jsonl`` (or is that
folder). Each file is JSON lines: a marker string (``"train_samples:"``, ``"test_samples:"``, or
``"Preferences:"`` in the demo variant) followed by record objects with at least ``id`` and
``prompt`` (also ``result_url``, ``NSFW``, ``user_id``...; test records add ``query``/``good``).
Records are found by locating the markers, never by line offsets; train and test records are
pooled. The image URLs are dead: images must be regenerated from each record's ``prompt`` into a
folder given by ``--dataset-option images=DIR``, one file per record named ``<id>.<png|jpg|...>``.

**Pair construction (PIP has no pairwise labels; PIGReward's is undocumented).** For a record r of
user u, the preferred image is r's own image and the rejected one is the image of a record r' of
another user with the same normalized prompt (``negatives=same-prompt``, the default): the two
images answer the same prompt, and u generated and kept r. Records with no such r' are skipped
and counted. ``negatives=other-user`` takes r' among all other users' records instead (the
prompts then differ: an easier, prompt-alignment-prone variant). r' is picked by a hash of r's
id, so the pairs do not depend on the seed. Records flagged ``NSFW: "NSFW"``, records without a
regenerated image and, within a user, records repeating the prompt (normalized) of an earlier record
kept are skipped and counted. Reference size 5.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator, Optional

from pigbench.adapter import DatasetAdapter, DatasetError
from pigbench.adapter_files import image_index, iter_jsonl, require_fields
from pigbench.adapter_options import check_options
from pigbench.hub import resolve_root
from pigbench.protocol import ImageRef, PreferenceRecord, normalize_prompt

MARKERS = {"train_samples:": "train", "Preferences:": "train", "test_samples:": "test"}
NEGATIVES = ("same-prompt", "other-user")


class PIP(DatasetAdapter):
    """PIP users' own regenerated images preferred over other users' images; see the module docstring."""

    name = "pip"
    description = "PIP (Tailored Visions): a user's own image preferred over another user's image for the same prompt"
    license = "none stated (no redistribution); images must be regenerated locally"
    homepage = "https://github.com/zzjchen/Tailored-Visions"
    default_reference_size = 5
    env_var = "PIGBENCH_PIP_PATH"
    OPTIONS = {"images": "folder of regenerated images named <record id>.<ext> (required)",
               "negatives": "same-prompt (default) or other-user"}
    path_options = ("images",)

    def records(self) -> Iterator[PreferenceRecord]:
        check_options(self.name, self.options, self.OPTIONS)
        self.skipped.clear()
        self.skip_examples.clear()
        mode = self.options.get("negatives", NEGATIVES[0])
        if mode not in NEGATIVES:
            raise DatasetError(f"{self.name}: option negatives={mode!r} must be one of {', '.join(NEGATIVES)}")
        if not self.options.get("images"):
            raise DatasetError(f"{self.name}: PIP's image URLs are dead; regenerate each record's image from its prompt "
                               "into a folder as <record id>.png and pass --dataset-option images=DIR")
        images = image_index(Path(self.options["images"]).expanduser())
        logs = self._read_logs(images)
        by_prompt: dict[str, list[dict]] = {}
        for rec in logs:
            by_prompt.setdefault(rec["key"], []).append(rec)
        for rec in logs:
            pool = by_prompt[rec["key"]] if mode == "same-prompt" else logs
            other = _pick(rec, pool)
            if other is None:
                self.skip("no other user's record for the same prompt" if mode == "same-prompt" else "no other user", rec["where"])
                continue
            own, neg = (ImageRef(f"pip:{r['id']}", images[r["id"]]) for r in (rec, other))
            yield PreferenceRecord(rec["id"], rec["user"], rec["prompt"], (own, neg), (1, 2), f"pip:{rec['split']}", rec["where"])

    def _read_logs(self, images: dict[str, Path]) -> list[dict]:
        """Every usable log record (its image in ``images``) as {id, user, prompt, key, split, where}, in file order."""
        root = resolve_root(what="PIP (user_data/<user_id>.jsonl)", path=self.path, env_var=self.env_var,
                            source=f"unzip PIP-dataset.zip (its Google Drive link is in {self.homepage})")
        folder = root / "user_data" if (root / "user_data").is_dir() else root
        files = sorted(folder.glob("*.jsonl"))
        if not files:
            raise DatasetError(f"{folder}: no <user_id>.jsonl files (unzip PIP-dataset.zip and pass its folder)")
        out: list[dict] = []
        seen_ids: set[str] = set()
        for path in files:
            out.extend(self._read_user(path, seen_ids, images))
        return out

    def _read_user(self, path: Path, seen_ids: set[str], images: dict[str, Path]) -> Iterator[dict]:
        """The user's usable records; a prompt repeats only among records with a regenerated image, so
        that a prompt whose first record has no image is kept from a later one that has."""
        section: Optional[str] = None
        prompts: set[str] = set()
        for lineno, value in iter_jsonl(path, self.skip):
            where = f"{path.name}:{lineno}"
            if isinstance(value, str):
                section = MARKERS.get(value.strip())
                if section is None:
                    self.skip("unknown marker line", f"{where}: {value[:40]!r}")
                continue
            require_fields(value, {"id": (str, int), "prompt": str}, where)
            if section is None:
                raise DatasetError(f"{where}: record before any marker line ({', '.join(MARKERS)})")
            rid, key = str(value["id"]), normalize_prompt(value["prompt"])
            reason = ("empty prompt" if not key else "repeated record id" if rid in seen_ids else
                      "flagged NSFW" if value.get("NSFW") == "NSFW" else
                      "no regenerated image for the record" if rid not in images else
                      "repeated prompt within a user" if key in prompts else None)
            if reason:
                self.skip(reason, where)
                continue
            seen_ids.add(rid)
            prompts.add(key)
            yield {"id": rid, "user": path.stem, "prompt": value["prompt"], "key": key, "split": section, "where": where}

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "pair_construction": self.options.get("negatives", NEGATIVES[0])}


def _pick(rec: dict, pool: list[dict]) -> Optional[dict]:
    """A record of another user from ``pool``, chosen by a hash of ``rec``'s id (None if there is none)."""
    start = int.from_bytes(hashlib.sha256(rec["id"].encode()).digest()[:8], "big") % len(pool)
    for step in range(len(pool)):
        other = pool[(start + step) % len(pool)]
        if other["user"] != rec["user"]:
            return other
    return None
