"""The PIGBench format adapter on a fixture written in the documented format (docs/pigbench_format.md)."""

import json

import pytest

from fixtures_adapters import CORRUPT, PROMPTS, assert_no_leak, jpeg
from pigbench.adapter import DatasetError
from pigbench.adapters.pigbench_format import PIGBenchFormat, write_dataset
from pigbench.protocol import ImageError, Label

# user -> [(instance, ranks)]; p8/p9 differ only in whitespace, p6/p7 share an image file, p5 has a corrupt image
RANKINGS = {
    "u1": [("p0", [1, 2, 2, 4]), ("p1", [2, 1, 3, 4]), ("p2", [1, 1, 1, 2]), ("p3", [4, 3, 2, 1]),
           ("p4", [1, 2, 3, 3]), ("p5", [2, 2, 1, 3])],
    "u2": [("p8", [1, 2, 3, 4]), ("p9", [1, 2, 3, 4])],  # whitespace-duplicate prompts: the target always leaks
    "u3": [("p0", [1, 2, 3, 4])],  # too few ranked sets
    "u4": [("p6", [1, 2, 3, 4]), ("p7", [4, 3, 2, 1])],  # a shared image file: the target always leaks
}


def build(root, rankings_extra=(), missing_image=False):
    (root / "images").mkdir(parents=True)
    instances = []
    for k in range(10):
        prompt = PROMPTS[8] if k == 9 else PROMPTS[k]
        if k == 9:
            prompt = "  " + prompt.replace(" ", "   ") + " "
        images = [f"images/p{k}_{j}.jpg" for j in range(4)]
        if k == 7:
            images[2] = "images/p6_1.jpg"
        for j, rel in enumerate(images):
            if not (root / rel).exists():
                (root / rel).write_bytes(CORRUPT if (k, j) == (5, 3) else jpeg(10 * k + j))
        instances.append({"instance_id": f"p{k}", "base_prompt": prompt, "category": "Artifacts",
                          "challenge": "Simple Detail", "prompts": [f"{prompt}, variant {j}" for j in range(4)],
                          "images": images, "generator": "stabilityai/stable-diffusion-xl-base-1.0",
                          "seeds": [1000 * k + j for j in range(4)]})
    if missing_image:
        instances.append(dict(instances[0], instance_id="gone", images=["images/none.jpg"] * 4))
    rankings = [{"user_id": u, "instance_id": i, "ranks": r} for u, rows in RANKINGS.items() for i, r in rows]
    write_dataset(root, instances, rankings + list(rankings_extra))
    return root


@pytest.fixture
def root(tmp_path):
    return build(tmp_path / "pigbench")


def test_records_keep_ties_and_base_prompts(root):
    recs = {(r.user_id, r.record_id): r for r in PIGBenchFormat(str(root)).records()}
    assert len(recs) == sum(len(v) for v in RANKINGS.values())
    assert recs[("u1", "p2")].ranks == (1, 1, 1, 2)
    assert recs[("u2", "p9")].prompt.startswith("  ")
    assert recs[("u1", "p0")].images[0].id == "images/p0_0.jpg"


def test_dynamic_split_targets_are_all_pairs_of_one_held_out_set(root):
    adapter = PIGBenchFormat(str(root))
    adapter.name = "pigbench"
    golds = set()
    for seed in range(6):
        split = adapter.split(seed=seed, reference_size=None)
        assert_no_leak(split)
        u1 = [e for e in split.episodes if e.user_id == "u1"]
        assert len(u1) == 6 and len({e.target.record_id for e in u1}) == 1
        assert len(u1[0].references) == 5
        golds |= {e.target.gold for e in u1}
    assert Label.TIE in golds and {Label.A, Label.B} <= golds


def test_leaks_and_too_few_sets_skip_users(root):
    adapter = PIGBenchFormat(str(root))
    adapter.name = "pigbench"
    split = adapter.split(seed=0, reference_size=None)
    assert {e.user_id for e in split.episodes} == {"u1"}
    assert split.skipped_users["fewer than 2 ranked sets"] == 1
    assert split.skipped_users["no target left after leakage checks"] == 2  # u2 (prompt), u4 (image)
    assert split.skipped_records["target prompt appears in the user's references"] == 1
    assert split.skipped_records["target image appears in the user's references"] == 1


def test_bad_rankings_are_counted_skips(tmp_path):
    extra = [{"user_id": "u1", "instance_id": "nope", "ranks": [1, 2, 3, 4]},
             {"user_id": "u1", "instance_id": "p7", "ranks": [1, 2, 0, 4]},
             {"user_id": "u1", "instance_id": "p0", "ranks": [1, 2, 3, 4]},
             {"user_id": "u5", "instance_id": "gone", "ranks": [1, 2, 3, 4]}]
    adapter = PIGBenchFormat(str(build(tmp_path / "d", extra, missing_image=True)))
    assert len(list(adapter.records())) == sum(len(v) for v in RANKINGS.values())
    assert adapter.skipped == {"ranking of an unknown or unusable instance": 2, "ranks are not 4 integers >= 1": 1,
                               "duplicate ranking of an instance by the same user": 1,
                               "instance with a missing image file": 1}
    assert len(list(adapter.records())) == sum(len(v) for v in RANKINGS.values())  # loaded again: counted once
    assert sum(adapter.skipped.values()) == 5 and len(adapter.skip_examples["ranking of an unknown or unusable instance"]) == 2


def test_corrupt_image_is_an_image_error_naming_the_file(root):
    rec = next(r for r in PIGBenchFormat(str(root)).records() if r.record_id == "p5")
    with pytest.raises(ImageError, match="p5_3.jpg"):
        rec.images[3].open()
    assert rec.images[0].open().size == (32, 32)


def test_missing_field_names_file_line_and_field(root):
    lines = (root / "rankings.jsonl").read_text().splitlines()
    lines[2] = json.dumps({"user_id": "u1", "instance_id": "p2"})
    (root / "rankings.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"rankings.jsonl:3: missing field 'ranks'"):
        list(PIGBenchFormat(str(root)).records())


def test_rankings_line_not_utf8_is_a_counted_skip_naming_file_and_line(root):
    with (root / "rankings.jsonl").open("ab") as fh:
        fh.write(b'{"user_id": "u\xe9", "instance_id": "p1", "ranks": [1, 2, 3, 4]}\n')
    adapter = PIGBenchFormat(str(root))
    assert len(list(adapter.records())) == sum(len(v) for v in RANKINGS.values())
    assert adapter.skipped == {"line not UTF-8": 1}
    assert adapter.skip_examples["line not UTF-8"] == ["rankings.jsonl:12: not UTF-8 (byte 15 is 0xe9: invalid continuation byte)"]


def test_rankings_line_nested_too_deeply_is_a_counted_skip_naming_file_and_line(root):
    with (root / "rankings.jsonl").open("a") as fh:
        fh.write("[" * 100000 + "]" * 100000 + "\n")
    adapter = PIGBenchFormat(str(root))
    assert len(list(adapter.records())) == sum(len(v) for v in RANKINGS.values())
    assert adapter.skip_examples["unparseable JSON line"] == ["rankings.jsonl:12: nested too deeply"]


def test_unreadable_parquet_file_is_named(root):
    (root / "rankings.jsonl").unlink()
    (root / "rankings.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(DatasetError, match=r"rankings.parquet: cannot read as parquet"):
        list(PIGBenchFormat(str(root)).records())


def test_parquet_files_load_like_jsonl(root):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (root / "rankings.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), root / "rankings.parquet")
    expected = [(r.user_id, r.record_id, r.ranks) for r in PIGBenchFormat(str(root)).records()]
    (root / "rankings.jsonl").unlink()
    assert [(r.user_id, r.record_id, r.ranks) for r in PIGBenchFormat(str(root)).records()] == expected


def test_loadable_with_datasets(root):
    datasets = pytest.importorskip("datasets")
    rankings = datasets.load_dataset(str(root), "rankings", split="train")
    instances = datasets.load_dataset(str(root), "instances", split="train")
    assert rankings.num_rows == sum(len(v) for v in RANKINGS.values()) and instances.num_rows == 10
    assert instances[0]["images"][0] == "images/p0_0.jpg"


def test_no_path_says_how_to_point_to_a_copy(monkeypatch):
    monkeypatch.delenv("PIGBENCH_PIGBENCH_PATH", raising=False)
    with pytest.raises(DatasetError, match="--dataset-path.*PIGBENCH_PIGBENCH_PATH"):
        list(PIGBenchFormat().records())
    with pytest.raises(DatasetError, match="unknown option"):
        list(PIGBenchFormat("x", {"color": "red"}).records())


def test_a_repeated_instance_id_is_an_error_naming_file_line_and_id(root):
    path = root / "instances.jsonl"
    first = path.read_text().splitlines()[0]
    path.write_text(path.read_text() + first + "\n")
    with pytest.raises(DatasetError, match=r"instances.jsonl:11: duplicate instance_id 'p0'"):
        list(PIGBenchFormat(str(root)).records())
