"""Pick-a-Pic row-group reads of real runs: a memory cache of nearly nothing vs the default cache vs an image store.

Writes a scattered Pick-a-Pic fixture to a temporary folder: one ``_no_images`` metadata shard and
``--shards`` with-images shards (the adapter's 19-column ``SCHEMA``) of ``--row-group-size`` rows per
row group, each row a pair of distinct random JPEGs, the users' rows shuffled over every group (as
on the hub: a user's rows lie in many groups), users holding 5 to ``--max-rows-per-user`` rows
(~10% ties). Then runs ``pigbench.runner.run`` (``color-reference``, which opens every reference
and target image) in one process, each run with its own run store (so it predicts everything):

* ``small memory cache``: ``RowCache(max_bytes=...)`` holding the kept rows of ``--small-cache-groups``
  row groups, what the old cache of the 4 most recently used groups amounted to (the baseline);
* ``default memory cache``: 1 GiB of kept rows (``images_cache=none``);
* ``image store``: ``images_cache=DIR``, first run; then a second run on the same split (another
  evaluator, ``colorfulness``); then a split at ``--other-reference-size`` (other users kept).

For each: row groups read (the adapter's ``row_groups_read``), distinct row groups holding the
split's located rows, their ratio, and the run's wall time. The image store's later runs skip the groups
of rows its index holds already, so their ratio is under 1.

    python benchmarks/pickapic_reads.py [--users 200] [--shards 3] [--row-group-size 8]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

URL = "https://text-to-image-human-preferences.s3.us-east-2.amazonaws.com/images/{}.png"


def _jpeg(rng: np.random.Generator, side: int) -> bytes:
    from PIL import Image

    pixels = rng.integers(0, 256, size=(side // 8, side // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def write_fixture(folder: Path, users: int, shards: int, row_group_size: int, max_rows: int, side: int = 64,
                  seed: int = 0) -> tuple[Path, Path]:
    """Write the metadata shard to ``folder/meta`` and the with-images shards to ``folder/images``
    (hub names); return both folders."""
    from pigbench.adapters.pickapic import NO_IMAGES_SCHEMA, SCHEMA

    rng = np.random.default_rng(seed)
    user_of_row = np.repeat(np.arange(users) + 1000, rng.integers(5, max_rows + 1, size=users))
    rng.shuffle(user_of_row)  # users mixed across row groups
    n = len(user_of_row)
    rid = np.arange(n, dtype=np.int64) + 10_000
    u0, u1 = [f"{r:08x}-0000-4000-8000-000000000000" for r in rid], [f"{r:08x}-0000-4000-8000-000000000001" for r in rid]
    tie = rng.random(n) < 0.1
    first = rng.random(n) < 0.5
    label_0 = np.where(tie, 0.5, np.where(first, 1.0, 0.0))
    columns: dict[str, Any] = {
        "are_different": np.ones(n, bool), "best_image_uid": [("none" if t else (a if f else b)) for t, f, a, b in zip(tie, first, u0, u1)],
        "caption": [f"prompt number {r}" for r in rid],  # distinct prompts: no leakage skips
        "created_at": pa.array(np.datetime64("2023-05-01") + rid.astype("timedelta64[s]"), pa.timestamp("ns")),
        "has_label": ~tie, "image_0_uid": u0, "image_0_url": [URL.format(u) for u in u0],
        "image_1_uid": u1, "image_1_url": [URL.format(u) for u in u1],
        "jpg_0": [_jpeg(rng, side) for _ in range(n)], "jpg_1": [_jpeg(rng, side) for _ in range(n)],
        "label_0": label_0, "label_1": 1.0 - label_0, "model_0": ["SD2.1"] * n, "model_1": ["SDXL-beta"] * n,
        "ranking_id": rid, "user_id": user_of_row.astype(np.int64), "num_example_per_prompt": np.ones(n, np.int64),
        "__index_level_0__": rid,
    }
    meta, images = folder / "meta", folder / "images"
    (meta / "data").mkdir(parents=True)
    (images / "data").mkdir(parents=True)
    pq.write_table(pa.table({k: columns[k] for k in NO_IMAGES_SCHEMA.names}, schema=NO_IMAGES_SCHEMA),
                   meta / "data" / "train-00000-of-00001-0123456789abcdef.parquet")
    table = pa.table({k: columns[k] for k in SCHEMA.names}, schema=SCHEMA)
    per_shard = -(-n // shards)
    for s in range(shards):
        pq.write_table(table.slice(s * per_shard, per_shard),
                       images / "data" / f"train-{s:05d}-of-{shards:05d}-{s:016x}.parquet", row_group_size=row_group_size)
    return meta, images


def one_run(name: str, meta: Path, images: Path, work: Path, evaluator: str, reference_size: int,
            images_cache: str, max_bytes: Optional[int]) -> dict[str, Any]:
    """One runner run with its own run store; its row groups read, the distinct groups holding its
    located rows, and its wall time. ``max_bytes``: the adapter's RowCache bound (None: the default)."""
    import pigbench.adapters.pickapic as pickapic
    from pigbench.runner import RunConfig, run

    caches: list[pickapic.RowCache] = []
    original = pickapic.RowCache

    class Recorded(original):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs, **({} if max_bytes is None else {"max_bytes": max_bytes}))
            caches.append(self)

    pickapic.RowCache = Recorded
    try:
        start = time.perf_counter()
        out = run(RunConfig(evaluator=evaluator, dataset="pickapic", dataset_path=str(meta), reference_size=reference_size,
                            dataset_options={"images_path": str(images), "images_cache": images_cache},
                            output=str(work / name / "results"), cache_dir=str(work / name / "cache"), progress=False,
                            n_bootstrap=0), log=lambda m: None)
        wall = time.perf_counter() - start
    finally:
        pickapic.RowCache = original
    groups = {(loc.shard, loc.group) for c in caches for loc in c.locations.values()}
    read = out.results["dataset"]["source"]["row_groups_read"]
    return {"name": name, "read": read, "groups": len(groups), "ratio": read / max(len(groups), 1), "wall_s": wall,
            "targets": out.results["split"]["targets"], "users": out.results["split"]["users"],
            "fingerprint": out.results["split"]["fingerprint"]}


def bench(folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Write the fixture under ``folder`` and measure the five runs (see the module docstring)."""
    import pigbench.evaluators.color_reference  # noqa: F401  imported here, not in the first timed run
    import pigbench.evaluators.colorfulness  # noqa: F401
    import pigbench.runner  # noqa: F401

    meta, images = write_fixture(folder, args.users, args.shards, args.row_group_size, args.max_rows_per_user)
    files = sorted((images / "data").glob("*.parquet"))
    groups = sum(pq.ParquetFile(f).num_row_groups for f in files)
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    row_bytes = sum(len(b) for f in files for c in ("jpg_0", "jpg_1") for b in pq.read_table(f, columns=[c]).column(0).to_pylist())
    row_bytes = (row_bytes + 2 * 36 * rows) / rows  # two JPEGs and two uids
    small = int(args.small_cache_groups * args.row_group_size * row_bytes)
    print(f"fixture: {rows:,} rows of {args.users:,} users in {groups:,} row groups of {args.row_group_size} "
          f"({args.shards} with-images shards), {row_bytes / 1024:.1f} KiB a row; small cache {small / 1024:.0f} KiB "
          f"(the kept rows of {args.small_cache_groups} groups)")
    work, store = folder / "runs", str(folder / "store")
    k, other = args.reference_size, args.other_reference_size
    return [
        one_run(f"small memory cache ({small / 1024:.0f} KiB)", meta, images, work, "color-reference", k, "none", small),
        one_run("default memory cache (1 GiB)", meta, images, work, "color-reference", k, "none", None),
        one_run("image store: first run", meta, images, work, "color-reference", k, store, None),
        one_run("image store: same split, colorfulness", meta, images, work, "colorfulness", k, store, None),
        one_run(f"image store: split at K={other}", meta, images, work, "color-reference", other, store, None),
    ]


def main() -> int:
    from _args import positive_int
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=positive_int, default=200)
    p.add_argument("--max-rows-per-user", type=positive_int, default=24, help="users hold 5 to this many rows")
    p.add_argument("--shards", type=positive_int, default=3)
    p.add_argument("--row-group-size", type=positive_int, default=8)
    p.add_argument("--small-cache-groups", type=positive_int, default=4)
    p.add_argument("--reference-size", type=positive_int, default=8)
    p.add_argument("--other-reference-size", type=positive_int, default=4)
    args = p.parse_args()
    if args.max_rows_per_user < 5:
        p.error(f"argument --max-rows-per-user: must be 5 or more, got {args.max_rows_per_user}")
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="pickapic_reads_") as tmp:
        results = bench(Path(tmp), args)
    print(f"load average (1 min) before / after: {load[0]:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'setting':42s} {'groups read':>11s} {'kept-row groups':>15s} {'ratio':>7s} {'wall':>8s}  users / targets")
    for r in results:
        print(f"{r['name']:42s} {r['read']:11,d} {r['groups']:15,d} {r['ratio']:6.2f}x {r['wall_s']:7.2f}s  "
              f"{r['users']:,} / {r['targets']:,}")
    base, default = results[0], results[1]
    same = len({r["fingerprint"] for r in results[:4]}) == 1
    print(f"default vs small cache: {base['read'] / max(default['read'], 1):.1f}x fewer row group reads, "
          f"{base['wall_s'] / default['wall_s']:.2f}x the speed; split fingerprints of the K={args.reference_size} runs "
          f"{'equal' if same else 'DIFFER'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
