"""Fixture builders for the dataset-adapter tests: real-schema files written at test time.

Images are real JPEGs: each fixture image is one of the shared LLaVA-Reward sample JPEGs, shrunk
and stamped with its index so every image has distinct bytes (no accidental content-hash
collisions). ``CORRUPT`` is a real JPEG truncated to its first bytes.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

from PIL import Image

from pigbench.protocol import normalize_prompt
from pigbench.splits import SplitResult

SAMPLE_IMG = Path(__file__).resolve().parents[2] / "shared" / "data" / "llava_reward_sample_test" / "sample_img"
PROMPTS = [
    "A red hydrant on the grass", "orange jello", "Times Square at night", "a wooden bench in a park",
    "a blue cup on a table", "an old bicycle leaning on a wall", "a lighthouse on a cliff",
    "a bowl of strawberries", "a yellow taxi in the rain", "a snowy mountain cabin",
    "a cat sleeping on a windowsill", "a sailboat at sunset", "a plate of sushi", "a green tractor",
]


@functools.lru_cache(maxsize=None)
def _sources() -> tuple[Image.Image, ...]:
    files = sorted(SAMPLE_IMG.glob("*.jpg"))
    assert files, f"shared sample JPEGs not found in {SAMPLE_IMG}"
    return tuple(Image.open(f).convert("RGB").resize((32, 32)) for f in files)


@functools.lru_cache(maxsize=None)
def jpeg(i: int) -> bytes:
    """Distinct real JPEG bytes number ``i`` (deterministic)."""
    img = _sources()[i % len(_sources())].copy()
    for bit in range(12):  # stamp the index as black/white pixels in the top row
        img.putpixel((bit, 0), (255, 255, 255) if (i >> bit) & 1 else (0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


CORRUPT = (SAMPLE_IMG / "0_c.jpg").read_bytes()[:120]


def assert_no_leak(split: SplitResult) -> None:
    """No target's normalized prompt or image (id or content hash) appears in its user's references."""
    for ep in split.episodes:
        ref_prompts = {normalize_prompt(r.prompt) for r in ep.references}
        shown = [im for r in ep.references for im in (r.preferred, r.rejected, *(x for x, _ in r.ranking))]
        ref_images = {k for im in shown for k in (im.id, im.content_hash)}
        assert normalize_prompt(ep.target.prompt) not in ref_prompts, ep.sample_id
        for im in (ep.target.image_a, ep.target.image_b):
            assert im.id not in ref_images and im.content_hash not in ref_images, ep.sample_id


def uid(n: int) -> str:
    """A UUID4 image uid as the hub's (random 122 bits, version 4, RFC 4122 variant), deterministic in ``n``."""
    import hashlib
    import uuid

    return str(uuid.UUID(bytes=hashlib.sha256(f"uid{n}".encode()).digest()[:16], version=4))


def pickapic_row(rid: int, user: int, caption: str, n0: int, n1: int, label_0: float, **overrides) -> dict:
    """One Pick-a-Pic row (all 19 columns); image ``n`` has uid ``uid(n)`` and bytes ``jpeg(n)``;
    ``are_different`` is ``model_0 != model_1``, as on the hub."""
    from datetime import datetime, timedelta

    u0, u1 = uid(n0), uid(n1)
    tie = label_0 == 0.5
    row = {
        "best_image_uid": "none" if tie else (u0 if label_0 == 1 else u1), "caption": caption,
        "created_at": datetime(2023, 5, 1) + timedelta(minutes=rid), "has_label": not tie,
        "image_0_uid": u0, "image_0_url": f"https://text-to-image-human-preferences.s3.us-east-2.amazonaws.com/images/{u0}.png",
        "image_1_uid": u1, "image_1_url": f"https://text-to-image-human-preferences.s3.us-east-2.amazonaws.com/images/{u1}.png",
        "jpg_0": jpeg(n0), "jpg_1": jpeg(n1), "label_0": label_0, "label_1": 1.0 - label_0,
        "model_0": "SD2.1", "model_1": "SDXL-beta", "ranking_id": rid, "user_id": user,
        "num_example_per_prompt": 1, "__index_level_0__": rid,  # write_pickapic counts the split's rows
    }
    row.update(overrides)
    row["are_different"] = row["model_0"] != row["model_1"]
    return row


def write_pickapic(folder: Path, rows: list[dict], images: bool, shards: int, row_group_size: int, split: str = "train") -> list[Path]:
    """Write ``rows`` as hub-named parquet shards (19 columns, or 17 without images) under ``folder/data``;
    ``num_example_per_prompt`` is set as the hub's: the rows of ``rows`` (the split) with the same caption."""
    import hashlib
    from collections import Counter

    import pyarrow as pa
    import pyarrow.parquet as pq

    from pigbench.adapters.pickapic import NO_IMAGES_SCHEMA, SCHEMA

    schema = SCHEMA if images else NO_IMAGES_SCHEMA
    (folder / "data").mkdir(parents=True, exist_ok=True)
    per_caption = Counter(r["caption"] for r in rows)
    rows = [{**r, "num_example_per_prompt": per_caption[r["caption"]]} for r in rows]
    size = -(-len(rows) // shards)
    paths = []
    for i in range(shards):
        tag = hashlib.sha256(f"{folder.name}{i}".encode()).hexdigest()[:16]
        path = folder / "data" / f"{split}-{i:05d}-of-{shards:05d}-{tag}.parquet"
        chunk = [{k: r[k] for k in schema.names} for r in rows[i * size:(i + 1) * size]]
        pq.write_table(pa.Table.from_pylist(chunk, schema=schema), path, row_group_size=row_group_size)
        paths.append(path)
    return paths


def run_labels(tmp_path: Path, dataset: str, path: Path, options: dict | None = None) -> dict[str, set[str]]:
    """Run the weight-free ``color-reference`` evaluator end to end; predicted labels per user. The
    error budget is off: these small runs check how corrupt images become INVALID."""
    from pigbench.results import load_results
    from pigbench.runner import RunConfig, run

    out = run(RunConfig(evaluator="color-reference", dataset=dataset, dataset_path=str(path),
                        dataset_options=dict(options or {}), output=str(tmp_path / "results"),
                        cache_dir=str(tmp_path / "cache"), progress=False, n_bootstrap=10, max_error_rate=1.0),
              log=lambda m: None)
    labels: dict[str, set[str]] = {}
    for row in load_results(out.results_path)[1]:
        labels.setdefault(row["user_id"], set()).add(row["prediction"]["label"])
    return labels
