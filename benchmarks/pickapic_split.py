"""Pick-a-Pic per-user split on 1,000,000 synthetic ``_no_images`` rows: adapter vs naive pandas.

Writes a synthetic parquet copy of ``yuvalkirstain/pickapic_v2_no_images`` (the real 17 columns
and Arrow types, two hub-named shards; heavy-tailed user activity, ~12% ties, reuse chains,
whitespace-variant captions, a few identical-uid pairs) to a temporary folder, then builds the
per-user split (K = 8) twice, each in a fresh subprocess reporting its wall time, CPU time and
peak RSS (``ru_maxrss``); the machine's load average is printed beside them (a shared machine's
wall time depends on it, the CPU time much less):

* ``adapter``: ``pigbench.adapters.pickapic.PickAPic(images=none).split(seed=0)``;
* ``naive``: ``pandas.read_parquet`` of everything, then ``groupby("user_id")`` and a per-user
  shuffle / reference pick / leakage filter in pandas.

Targets for the adapter: under 20 s and under 2 GiB peak RSS.

    python benchmarks/pickapic_split.py [--rows 1000000] [--users 20000] [--skip-naive]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pigbench.adapters.pickapic import NO_IMAGES_SCHEMA

K = 8
URL = "https://text-to-image-human-preferences.s3.us-east-2.amazonaws.com/images/{}.png"
WORDS = ("cat dog castle forest neon city portrait robot ocean sunset dragon flower painting cyberpunk "
         "watercolor anime mountain river car house girl boy astronaut space galaxy tree winter summer").split()


def _uids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    hexs = [bytes(r).hex() for r in raw]
    return [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in hexs]


def write_synthetic(folder: Path, rows: int, users: int, seed: int = 0, shards: int = 2) -> list[Path]:
    """Write ``rows`` synthetic rows as ``folder/data/train-0000i-of-0000N-<hex>.parquet``."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, users + 1) ** 1.1
    user_of_row = rng.choice(users, size=rows, p=weights / weights.sum()) + 100_000
    captions = [" ".join(rng.choice(WORDS, size=rng.integers(3, 12))) for _ in range(min(rows // 3, 300_000))]
    (folder / "data").mkdir(parents=True, exist_ok=True)
    paths, per_shard, start = [], -(-rows // shards), 0
    for s in range(shards):
        n = min(per_shard, rows - start)
        u0, u1 = _uids(rng, n), _uids(rng, n)
        reuse = rng.random(n) < 0.3  # reuse chain: image 0 repeats the previous row's image 1
        for i in np.flatnonzero(reuse[1:]) + 1:
            u0[i] = u1[i - 1]
        for i in np.flatnonzero(rng.random(n) < 0.001):  # identical-uid pairs
            u1[i] = u0[i]
        cap_idx = rng.integers(0, len(captions), n)
        cap = [captions[c] for c in cap_idx]
        for i in np.flatnonzero(rng.random(n) < 0.05):  # whitespace variants
            cap[i] = "  " + cap[i].replace(" ", "  ") + " "
        tie = rng.random(n) < 0.12
        first = rng.random(n) < 0.5
        label_0 = np.where(tie, 0.5, np.where(first, 1.0, 0.0))
        best = [("none" if t else (a if f else b)) for t, f, a, b in zip(tie, first, u0, u1)]
        table = pa.table({
            "are_different": rng.random(n) < 0.7, "best_image_uid": best, "caption": cap,
            "created_at": pa.array(np.datetime64("2023-05-01") + np.arange(start, start + n).astype("timedelta64[s]"), pa.timestamp("ns")),
            "has_label": ~tie, "image_0_uid": u0, "image_0_url": [URL.format(u) for u in u0],
            "image_1_uid": u1, "image_1_url": [URL.format(u) for u in u1], "label_0": label_0, "label_1": 1.0 - label_0,
            "model_0": rng.choice(["SD2.1", "SDXL-beta", "SDXL-alpha"], n), "model_1": rng.choice(["SD2.1", "SDXL-beta"], n),
            "ranking_id": np.arange(start, start + n, dtype=np.int64), "user_id": user_of_row[start:start + n].astype(np.int64),
            "num_example_per_prompt": np.ones(n, np.int64), "__index_level_0__": np.arange(start, start + n, dtype=np.int64),
        }, schema=NO_IMAGES_SCHEMA)
        path = folder / "data" / f"train-{s:05d}-of-{shards:05d}-{rng.integers(1 << 62):016x}.parquet"
        pq.write_table(table, path)
        paths.append(path)
        start += n
    return paths


def run_adapter(folder: Path) -> dict:
    from pigbench.adapters.pickapic import PickAPic

    split = PickAPic(str(folder), {"images": "none"}).split(seed=0, reference_size=K)
    return {"users": split.users, "targets": len(split.episodes), "fingerprint": split.fingerprint}


def run_naive(folder: Path) -> dict:
    import pandas as pd

    df = pd.read_parquet(folder / "data")
    df["prompt"] = df["caption"].str.strip().str.replace(r"\s+", " ", regex=True)
    df = df[(df["image_0_uid"] != df["image_1_uid"]) & df["label_0"].isin([0.0, 0.5, 1.0])]
    df = df.assign(tie=df["label_0"] == 0.5, key=df["prompt"].str.lower())
    users = targets = 0
    for user, g in df.groupby("user_id"):
        if (~g["tie"]).sum() < K + 1:  # K references plus a decisive target (the adapter's rule)
            continue
        g = g.sort_values("ranking_id").sample(frac=1.0, random_state=int(user) % (2**32))
        refs = g[~g["tie"]].head(K)
        rest = g.drop(refs.index)
        ref_images = set(refs["image_0_uid"]) | set(refs["image_1_uid"])
        ok = ~rest["key"].isin(set(refs["key"])) & ~rest["image_0_uid"].isin(ref_images) & ~rest["image_1_uid"].isin(ref_images)
        if ok.any():
            users += 1
            targets += int(ok.sum())
    return {"users": users, "targets": targets}


def child(method: str, folder: Path) -> None:
    start = time.perf_counter()
    out = (run_adapter if method == "adapter" else run_naive)(folder)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["wall_s"] = round(time.perf_counter() - start, 2)
    out["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)  # includes interpreter start-up and imports
    out["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)
    print(json.dumps(out))


def measure(method: str, folder: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", method, "--folder", str(folder)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    from _args import positive_int
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=positive_int, default=1_000_000)
    p.add_argument("--users", type=positive_int, default=20_000)
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--child", choices=("adapter", "naive"), help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.folder)
        return 0
    with tempfile.TemporaryDirectory(prefix="pickapic_bench_") as tmp:
        t0 = time.perf_counter()
        paths = write_synthetic(Path(tmp), args.rows, args.users)
        size = sum(p.stat().st_size for p in paths) / 2**20
        print(f"synthetic _no_images parquet: {args.rows:,} rows, {size:.0f} MiB, written in {time.perf_counter() - t0:.1f} s")
        load = os.getloadavg()
        results = {"adapter": measure("adapter", Path(tmp))}
        if not args.skip_naive:
            results["naive"] = measure("naive", Path(tmp))
    print(f"load average (1 min) before / after: {load[0]:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, r in results.items():
        print(f"{name:8s} wall {r['wall_s']:7.2f} s  CPU {r['cpu_s']:7.2f} s  peak RSS {r['peak_rss_mib']:8.1f} MiB  "
              f"users {r['users']:,}  targets {r['targets']:,}")
    a = results["adapter"]
    print(f"adapter targets: <20 s {'OK' if a['wall_s'] < 20 else 'MISSED'}, <2 GiB {'OK' if a['peak_rss_mib'] < 2048 else 'MISSED'}")
    if "naive" in results:
        n = results["naive"]
        print(f"speed-up vs naive: {n['wall_s'] / a['wall_s']:.2f}x; peak RSS ratio adapter/naive: {a['peak_rss_mib'] / n['peak_rss_mib']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
