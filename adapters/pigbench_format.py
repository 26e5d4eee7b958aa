"""``pigbench``: the PIGBench release format, defined by this project (``docs/pigbench_format.md``).

::

    ROOT/instances.jsonl   one instance per line: instance_id, base_prompt, category, challenge,
                           prompts [4 expanded prompts], images [4 paths relative to ROOT],
                           generator, seeds [4]
    ROOT/rankings.jsonl    one ranking per line: user_id, instance_id, ranks [4] (1 = best, equal = tie)
    ROOT/images/...        the image files
    ROOT/README.md         dataset card whose ``configs`` make ``load_dataset(ROOT, "rankings")`` work

Either ``.jsonl`` file may be replaced by a ``.parquet`` file with the same columns. A record is
one user's ranking of one instance; its prompt is the base prompt (each image's expanded prompt
stays in ``instances``). Default reference size is dynamic: the split holds out one ranked set
per user, whose 6 pairs are the targets (equal ranks give gold TIE); the user's other sets are
the references. :func:`write_dataset` writes a valid copy (used by the build toolkit and tests).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pyarrow.parquet as pq

from pigbench.adapter import DatasetAdapter, DatasetError
from pigbench.adapter_files import iter_jsonl, require_fields, require_inside
from pigbench.adapter_options import check_options
from pigbench.adapters._parquet import parquet_errors, validated
from pigbench.hub import resolve_root
from pigbench.protocol import ImageRef, PreferenceRecord

INSTANCE_FIELDS = {"instance_id": str, "base_prompt": str, "category": str, "challenge": str,
                   "prompts": list, "images": list, "generator": str, "seeds": list}
RANKING_FIELDS = {"user_id": str, "instance_id": str, "ranks": list}
CARD = """---
configs:
- config_name: instances
  data_files: instances.jsonl
- config_name: rankings
  data_files: rankings.jsonl
---
# PIGBench

Per-user rankings of four generated images per prompt. Format: pigbench `docs/pigbench_format.md`.
"""


def _check_instance(obj: Any, where: str) -> None:
    require_fields(obj, INSTANCE_FIELDS, where)
    n = len(obj["images"])
    if n < 2 or len(obj["prompts"]) != n or len(obj["seeds"]) != n:
        raise DatasetError(f"{where}: 'prompts', 'images' and 'seeds' need the same length >= 2 "
                           f"(found {len(obj['prompts'])}, {n}, {len(obj['seeds'])})")
    for name, typ in (("prompts", str), ("images", str), ("seeds", int)):
        if not all(isinstance(v, typ) and not isinstance(v, bool) for v in obj[name]):
            raise DatasetError(f"{where}: field {name!r} must hold only {typ.__name__} values")
    require_inside(obj["images"], where)


def _check_ranking(obj: Any, where: str) -> None:
    require_fields(obj, RANKING_FIELDS, where)


def write_dataset(root: Path, instances: Iterable[Mapping[str, Any]], rankings: Iterable[Mapping[str, Any]]) -> None:
    """Write ``instances.jsonl``, ``rankings.jsonl`` and the card under ``root`` (images are the caller's)."""
    root.mkdir(parents=True, exist_ok=True)
    for name, rows, fields, check in (("instances", instances, INSTANCE_FIELDS, _check_instance),
                                      ("rankings", rankings, RANKING_FIELDS, _check_ranking)):
        with (root / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for i, row in enumerate(rows, 1):
                check(row, f"{name} row {i}")
                fh.write(json.dumps({k: row[k] for k in fields}, ensure_ascii=False) + "\n")
    (root / "README.md").write_text(CARD, encoding="utf-8")


class PIGBenchFormat(DatasetAdapter):
    """Per-user rankings of 4 images per instance, from a folder in the PIGBench format."""

    description = "PIGBench: per-user rankings of 4 SDXL images per PartiPrompts prompt (ties allowed)"
    license = "see the release's card"
    homepage = "docs/pigbench_format.md"
    default_reference_size = None  # dynamic: all the user's other ranked sets
    env_var = "PIGBENCH_PIGBENCH_PATH"
    OPTIONS = {"repo": "hub dataset id holding a copy in this format (no public release is known)"}

    def records(self) -> Iterator[PreferenceRecord]:
        check_options(self.name or "pigbench", self.options, self.OPTIONS)
        self.skipped.clear()  # counts describe the latest load only
        self.skip_examples.clear()
        root = resolve_root(what="PIGBench (docs/pigbench_format.md)", path=self.path, env_var=self.env_var,
                            repo_id=self.options.get("repo"),
                            source="build one with `pigbench build` (docs/building_pigbench.md; no public release is known)")
        instances = self._instances(root)
        seen: set[tuple[str, str]] = set()
        for where, obj in self._rows(root, "rankings"):
            _check_ranking(obj, where)
            user, iid, ranks = obj["user_id"], obj["instance_id"], obj["ranks"]
            inst = instances.get(iid)
            if inst is None:
                self.skip("ranking of an unknown or unusable instance", where)
            elif len(ranks) != len(inst[1]) or not all(type(r) is int and r >= 1 for r in ranks):
                self.skip(f"ranks are not {len(inst[1])} integers >= 1", where)
            elif (user, iid) in seen:
                self.skip("duplicate ranking of an instance by the same user", where)
            else:
                seen.add((user, iid))
                yield PreferenceRecord(iid, user, inst[0], inst[1], tuple(ranks), "pigbench", where)

    def _instances(self, root: Path) -> dict[str, tuple[str, tuple[ImageRef, ...]]]:
        out: dict[str, tuple[str, tuple[ImageRef, ...]]] = {}
        for where, obj in self._rows(root, "instances"):
            _check_instance(obj, where)
            iid = obj["instance_id"]
            if iid in out:
                raise DatasetError(f"{where}: duplicate instance_id {iid!r}")
            missing = [rel for rel in obj["images"] if not (root / rel).is_file()]
            if missing:
                self.skip("instance with a missing image file", f"{where}: {missing[0]}")
                continue
            out[iid] = (obj["base_prompt"], tuple(ImageRef(rel, root / rel) for rel in obj["images"]))
        return out

    def _rows(self, root: Path, stem: str) -> Iterator[tuple[str, Any]]:
        jsonl, parquet = root / f"{stem}.jsonl", root / f"{stem}.parquet"
        if jsonl.is_file():
            for lineno, obj in iter_jsonl(jsonl, self.skip):
                yield f"{jsonl.name}:{lineno}", obj
        elif parquet.is_file():
            with parquet_errors(parquet):
                table = validated(pq.read_table(parquet))
            for i, obj in enumerate(table.to_pylist()):
                yield f"{parquet.name} row {i}", obj
        else:
            raise DatasetError(f"{root}: no {stem}.jsonl or {stem}.parquet (PIGBench format, docs/pigbench_format.md)")

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "format": "pigbench-v1"}
