"""Pick-a-Pic adapter on hub-named parquet fixtures with the real 19/17-column schema."""

import hashlib
import json
import os
import re
import uuid
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fixtures_adapters import CORRUPT, PROMPTS, assert_no_leak, jpeg, pickapic_row, run_labels, uid, write_pickapic
from pigbench.adapter import DatasetError
from pigbench.adapters.pickapic import UNREADABLE_IMAGES, UNREADABLE_META, PickAPic, PickAPicV1
from pigbench.protocol import ImageError, Label

CORRUPT_N = 999


def fixture_rows():
    """Selected users first, then rows no split needs (user 103 and rows failing the checks)."""
    rows, n = [], iter(range(1, 900))
    rid = iter(range(5000, 6000))

    def add(user, caption, label=1.0, n0=None, n1=None, **kw):
        n0, n1 = n0 or next(n), n1 or next(n)
        rows.append(pickapic_row(next(rid), user, caption, n0, n1, label, **kw))
        return n0

    shown = None  # the image row 4 shows, which row 5 shows again
    for i in range(12):  # user 101: a tie, a reuse chain, are_different False with different images
        shown = add(101, PROMPTS[i], 0.5 if i == 3 else float(i % 2), n0=shown if i == 5 else None,
                    **({"model_1": "SD2.1"} if i == 6 else {}))
    for i in range(10):  # user 102: one corrupt image
        add(102, PROMPTS[i], 1.0, n1=CORRUPT_N if i == 0 else None)
    for i in range(9):  # user 104: 8 decisive rows and one legacy tie (0.5 with has_label True, best = a 3rd image of a
        if i == 4:  # 4-image ranking, neither image_0 nor image_1); its 9th decisive row is added last
            add(104, PROMPTS[i], 0.5, has_label=True, best_image_uid=uid(850))
        else:
            add(104, PROMPTS[i], 0.0)
    for i in range(9):  # user 105: every row keeps the clicked image: any target shares it with the references
        add(105, PROMPTS[i], 1.0, n0=700)
    for i in range(9):  # user 106: whitespace variants of one caption: any target's prompt leaks
        add(106, " " * (i % 2) + PROMPTS[0].replace(" ", " " * (1 + i % 3)), 1.0)
    for i in range(5):  # user 103: too few records
        add(103, PROMPTS[i], 1.0)
    add(102, "same uid twice", 1.0, n0=800, n1=800)
    add(102, "same bytes, two uids", 1.0, n0=801, n1=802)
    add(102, "best disagrees", 1.0, best_image_uid=uid(803))
    add(102, "decisive but has_label False", 1.0, has_label=False)
    add(104, PROMPTS[9], 0.0)  # 104's 9th decisive row: K + 1 = 9 decisive rows make 104 a user of the split
    rows.append(dict(rows[0]))  # a repeated ranking_id
    return rows


def image_bytes(n):
    return CORRUPT if n == CORRUPT_N else jpeg(n)


@pytest.fixture
def rows():
    rows = fixture_rows()
    by_uid = {uid(k): image_bytes(k) for k in range(1, 1000)}
    by_uid[uid(802)] = by_uid[uid(801)]  # two uids, identical bytes
    for r in rows:
        r["jpg_0"], r["jpg_1"] = by_uid[r["image_0_uid"]], by_uid[r["image_1_uid"]]
    return rows


@pytest.fixture
def data(tmp_path, rows):
    meta = tmp_path / "pickapic_v2_no_images"
    write_pickapic(meta, rows, images=False, shards=2, row_group_size=16)
    images = tmp_path / "pickapic_v2"
    write_pickapic(images, rows, images=True, shards=3, row_group_size=3)
    return meta, images


def adapter(meta, images_dir=None, **options):
    opts = {"images_path": str(images_dir)} if images_dir else {}
    opts.update(options)
    return PickAPic(str(meta), opts)


# the hub's 19 columns and Arrow types (dataset card ``dataset_info``), written out here rather than taken from the adapter
HUB_COLUMNS = [("are_different", "bool"), ("best_image_uid", "string"), ("caption", "string"),
               ("created_at", "timestamp[ns]"), ("has_label", "bool"), ("image_0_uid", "string"), ("image_0_url", "string"),
               ("image_1_uid", "string"), ("image_1_url", "string"), ("jpg_0", "binary"), ("jpg_1", "binary"),
               ("label_0", "double"), ("label_1", "double"), ("model_0", "string"), ("model_1", "string"),
               ("ranking_id", "int64"), ("user_id", "int64"), ("num_example_per_prompt", "int64"),
               ("__index_level_0__", "int64")]


def test_schema_is_the_real_one(data):
    meta, images = data
    schema = pq.read_schema(next(images.rglob("*.parquet")))
    assert [(f.name, str(f.type)) for f in schema] == HUB_COLUMNS
    assert [(f.name, str(f.type)) for f in pq.read_schema(next(meta.rglob("*.parquet")))] == \
        [c for c in HUB_COLUMNS if c[0] not in ("jpg_0", "jpg_1")]
    values = pq.read_table(sorted(meta.rglob("*.parquet"))).to_pylist()
    for r in values:  # uids are UUID4 strings; are_different says the generator models differ
        assert all(uuid.UUID(r[k]).version == 4 and str(uuid.UUID(r[k])) == r[k] for k in ("image_0_uid", "image_1_uid"))
        assert r["are_different"] == (r["model_0"] != r["model_1"])
    assert any(not r["are_different"] and r["image_0_uid"] != r["image_1_uid"] for r in values)
    table = pq.read_table(sorted(meta.rglob("*.parquet")), columns=["caption", "num_example_per_prompt"]).to_pylist()
    captions = [r["caption"] for r in table]
    assert all(r["num_example_per_prompt"] == captions.count(r["caption"]) for r in table)  # rows of the caption in the split
    assert max(r["num_example_per_prompt"] for r in table) > 1


def test_split_users_ties_and_leaks(data):
    meta, images = data
    split = adapter(meta, images).split(seed=0)
    assert_no_leak(split)
    assert {e.user_id for e in split.episodes} == {"101", "102", "104"}
    assert all(len(e.references) == 8 for e in split.episodes)
    golds_104 = sorted(e.target.gold.value for e in split.episodes if e.user_id == "104")  # the legacy tie and a decisive row
    assert len(golds_104) == 2 and golds_104[1] == "TIE" and golds_104[0] in ("A", "B")
    assert split.skipped_users["fewer than 9 decisive rows (8 references plus 1 decisive target)"] == 1
    assert split.skipped_users["no target left after leakage checks"] == 2  # 105 (image), 106 (prompt)
    assert split.skipped_records["target image appears in the user's references"] == 1
    assert split.skipped_records["target prompt appears in the user's references"] == 1
    for reason in ("identical image uids in a pair", "identical image bytes in a pair", "repeated ranking_id",
                   "best_image_uid disagrees with the labels", "has_label False with a decisive label"):
        assert split.skipped_records[reason] == 1, reason


def test_split_is_deterministic_and_seeded(data):
    meta, images = data
    a, b = adapter(meta, images).split(seed=1), adapter(meta, images).split(seed=1)
    assert a.fingerprint == b.fingerprint and [e.sample_id for e in a.episodes] == [e.sample_id for e in b.episodes]
    assert adapter(meta, images).split(seed=2).fingerprint != a.fingerprint
    assert adapter(meta, images).split(seed=1, reference_size=4).reference_size == 4


def test_captions_are_whitespace_normalized(data):
    recs = list(adapter(data[0], images="none").records())
    assert all(r.prompt == " ".join(r.prompt.split()) for r in recs)
    assert {r.prompt for r in recs if r.user_id == "106"} == {PROMPTS[0]}


def test_every_whitespace_character_of_a_caption_is_collapsed(tmp_path, rows):
    odd = ["a\vred hydrant", "orange \x85 jello", "Times\x1cSquare\x1f at night\v", "\x0b\x1ea blue\u2028cup "]
    for r, caption in zip(rows, odd):  # rows of user 101
        r["caption"] = caption
    write_pickapic(tmp_path / "m", rows, images=False, shards=1, row_group_size=16)
    prompts = {r.record_id: r.prompt for r in adapter(tmp_path / "m", images="none").records()}
    assert [prompts[str(r["ranking_id"])] for r in rows[:4]] == [" ".join(c.split()) for c in odd]


def test_reused_image_uid_is_one_image(data):
    recs = [r for r in adapter(*data).records() if r.user_id == "105"]
    shared = {r.images[0].id for r in recs}
    assert len(shared) == 1 and len({r.images[1].id for r in recs}) == 9


def test_only_row_groups_of_selected_rows_are_read(data, rows):
    meta, images = data
    a = adapter(meta, images)
    split = a.split(seed=0)
    unusable = ("same uid twice", "best disagrees", "decisive but has_label False")
    needed = {r["ranking_id"] for r in rows if r["user_id"] != 103 and r["caption"] not in unusable}
    first, total = {}, 0  # ranking_id -> the row group of its first occurrence
    for shard, path in enumerate(sorted(images.rglob("*.parquet"))):
        pf = pq.ParquetFile(path)
        for g in range(pf.num_row_groups):
            total += 1
            for rid in pf.read_row_group(g, columns=["ranking_id"]).column(0).to_pylist():
                first.setdefault(rid, (shard, g))
    groups = {first[rid] for rid in needed}
    assert a.provenance()["row_groups_read"] == len(groups) < total
    ep = split.episodes[0]
    assert ep.target.image_a.open().size == (32, 32)  # lazy load of a selected row


def test_content_hash_is_of_the_image_bytes(data):
    split = adapter(*data).split(seed=0)
    ref = split.episodes[0].references[0].preferred
    assert ref.content_hash == hashlib.sha256(ref.read_bytes()).hexdigest()


def test_corrupt_image_is_an_error_at_evaluation_not_at_load(data):
    recs = [r for r in adapter(*data).records() if r.user_id == "102"]
    bad = next(im for r in recs for im in r.images if im.id == uid(CORRUPT_N))
    with pytest.raises(ImageError, match=uid(CORRUPT_N)):
        bad.open()


def test_corrupt_image_gives_invalid_predictions_in_a_run(data, tmp_path):
    meta, images = data
    labels = run_labels(tmp_path, "pickapic", meta, {"images_path": str(images)})
    assert "INVALID" in labels["102"]  # the corrupt image is in one of user 102's episodes
    assert labels["101"] <= {"A", "B", "TIE"} and labels["104"] <= {"A", "B", "TIE"}


def test_missing_column_names_file_and_column(tmp_path, rows):
    for r in rows:
        del r["user_id"]
    import pyarrow as pa

    (tmp_path / "m" / "data").mkdir(parents=True)
    path = tmp_path / "m" / "data" / "train-00000-of-00001-0123456789abcdef.parquet"
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if not k.startswith("jpg")} for r in rows]), path)
    with pytest.raises(DatasetError, match=r"train-00000-of-00001-0123456789abcdef.parquet: missing column 'user_id'"):
        adapter(tmp_path / "m", images="none").split(seed=0)


def test_unreadable_shard_is_named(data, tmp_path):
    meta, images = data
    bad = tmp_path / "bad" / "data" / "train-00000-of-00001.parquet"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"x\n")
    with pytest.raises(DatasetError, match=r"bad/data/train-00000-of-00001.parquet: cannot read as parquet"):
        adapter(bad.parents[1], images="none").split(seed=0)
    with pytest.raises(DatasetError, match=r"bad/data/train-00000-of-00001.parquet: cannot read as parquet"):
        adapter(meta, bad.parents[1]).split(seed=0)
    truncated = next(images.rglob("*.parquet"))  # a with-images shard cut short: its footer is gone
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(DatasetError, match=rf"{truncated.name}: cannot read as parquet"):
        adapter(meta, images).split(seed=0)


def test_a_shard_file_of_another_split_is_an_error_naming_it(tmp_path, rows):
    """--dataset-path naming one shard file of the validation split was read as train (the split asked
    for); a hub shard name of another split is now an error naming the file and both splits."""
    shard, = write_pickapic(tmp_path / "m", rows, images=False, shards=1, row_group_size=16, split="validation")
    with pytest.raises(DatasetError, match=rf"{shard.name}: a 'validation' shard by its name, not of the 'train' split"):
        PickAPic(str(shard), {"images": "none"}).split(seed=0)
    assert PickAPic(str(shard), {"images": "none", "split": "validation"}).split(seed=0).users == 3
    renamed = shard.rename(shard.with_name("my_subset.parquet"))  # no hub shard name: taken as is
    assert PickAPic(str(renamed), {"images": "none"}).split(seed=0).users == 3


def test_a_missing_metadata_shard_is_an_error_naming_it(data):
    """A partial copy (1 of 2 shards) would give a smaller split with no warning (2 users instead of 3)."""
    meta = data[0]
    first, second = sorted(meta.rglob("*.parquet"))
    second.unlink()
    with pytest.raises(DatasetError, match=r"^pickapic: 1 'train' metadata shard\(s\) missing, first .*/data/train-00001-of-00002\*"
                                           r"\.parquet; download it with `hf download yuvalkirstain/pickapic_v2_no_images "):
        adapter(meta, images="none").split(seed=0)
    assert adapter(first, images="none").split(seed=0).users == 2  # one shard passed as a file is used as given
    first.unlink()
    with pytest.raises(DatasetError, match=r"^pickapic: no 'train' parquet shards under .*; download it with `hf download "
                                           r"yuvalkirstain/pickapic_v2_no_images --repo-type dataset --include 'data/train-\*'"):
        adapter(meta, images="none").split(seed=0)


def corrupt_row_group(shard, group, column="jpg_0"):
    """Flip 40 bytes of the first data page of ``column`` in row group ``group``: the footer stays readable."""
    pf = pq.ParquetFile(shard)
    page = pf.metadata.row_group(group).column(pf.schema_arrow.names.index(column)).data_page_offset
    raw = bytearray(shard.read_bytes())
    raw[page:page + 40] = bytes(b ^ 0xFF for b in raw[page:page + 40])
    shard.write_bytes(bytes(raw))


def group_rows(shard, group):
    """The ranking ids of row group ``group`` of ``shard`` and its rows' positions in the file."""
    pf = pq.ParquetFile(shard)
    first = sum(pf.metadata.row_group(g).num_rows for g in range(group))
    return pf.read_row_group(group, columns=["ranking_id"]).column(0).to_pylist(), range(first, first + pf.metadata.row_group(group).num_rows)


def unreadable_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning) and "row group" in str(w.message)]


@pytest.mark.parametrize("column,reason", [
    ("jpg_0", UNREADABLE_IMAGES),  # found by the hashing pass
    ("ranking_id", "row not found in the with-images shards (some of their row groups unreadable)"),  # found locating rows
])
def test_a_corrupt_image_row_group_is_skipped_with_a_warning_and_counted(data, rows, tmp_path, column, reason):
    """A with-images row group that failed to read stopped the whole split (one DatasetError); its rows of the
    split are now skipped and counted, with one warning naming the file, the group, its rows and pyarrow's reason,
    and the split equals that of the metadata without those rows, run after run (with an image store too)."""
    meta, images = data
    shard = sorted(images.rglob("*.parquet"))[0]
    rids, span = group_rows(shard, 1)
    lost = located_rids(adapter(meta, images), 8) & set(rids)
    assert lost  # the group holds rows of the split
    corrupt_row_group(shard, 1, column)
    with pytest.warns(RuntimeWarning) as caught:
        split = adapter(meta, images).split(seed=0)
    consequence = f"skipping its {len(lost)} rows of the split" if column == "jpg_0" else "the rows of the split in it count as not found"
    message, = unreadable_warnings(caught)
    assert re.fullmatch(rf"pickapic: {consequence}: {re.escape(str(shard))}: row group 1 \(rows {span.start}-{span.stop - 1}\) "
                        r"cannot be read as parquet: \S[^\n]*", message), message
    assert split.skipped_records[reason] == len(lost)
    used = {r.record_id for e in split.episodes for r in e.references} | {e.target.record_id for e in split.episodes}
    assert used and not used & {str(r) for r in lost}

    write_pickapic(tmp_path / "without", [r for r in rows if r["ranking_id"] not in lost], images=False, shards=2, row_group_size=16)
    with warnings.catch_warnings():  # locating its rows goes over the unreadable group too
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = adapter(tmp_path / "without", images).split(seed=0)
    assert [e.sample_id for e in split.episodes] == [e.sample_id for e in expected.episodes]
    assert split.fingerprint == expected.fingerprint
    store = tmp_path / "store"
    for _ in range(2):  # the second run reuses the index, which records no outcome for the unreadable group's rows
        with pytest.warns(RuntimeWarning) as caught:
            again = adapter(meta, images, images_cache=str(store)).split(seed=0)
        assert unreadable_warnings(caught) == [message]
        assert again.fingerprint == split.fingerprint and again.skipped_records[reason] == len(lost)


def test_a_corrupt_image_row_group_counts_only_its_rows_of_the_split(data):
    """The warning and the count of an unreadable with-images group give its rows of the split, not all its rows."""
    meta, images = data
    split_rids = located_rids(adapter(meta, images, users="2"), 8)
    groups = [(shard, g, set(group_rows(shard, g)[0])) for shard in sorted(images.rglob("*.parquet"))
              for g in range(pq.ParquetFile(shard).num_row_groups)]
    shard, group, lost = next((shard, g, split_rids & rids) for shard, g, rids in groups
                              if 0 < len(split_rids & rids) < len(rids))  # a group holding rows of the split and others
    corrupt_row_group(shard, group, "jpg_0")
    with warnings.catch_warnings(record=True) as caught:  # users=2 finds fewer users: a warning of its own
        warnings.simplefilter("always")
        split = adapter(meta, images, users="2").split(seed=0)
    message, = unreadable_warnings(caught)
    assert message.startswith(f"pickapic: skipping its {len(lost)} rows of the split: {shard}: row group {group} ")
    assert split.skipped_records[UNREADABLE_IMAGES] == len(lost)


def test_a_corrupt_metadata_row_group_is_skipped_with_a_warning_and_counted(data, rows, tmp_path):
    """A metadata row group that failed to read stopped the whole split; its rows are now skipped and counted,
    with one warning naming the file, the group, its rows and pyarrow's reason, and the other groups and shards load."""
    meta, images = data
    shard = sorted(meta.rglob("*.parquet"))[0]
    rids, span = group_rows(shard, 1)
    corrupt_row_group(shard, 1, "caption")
    with pytest.warns(RuntimeWarning) as caught:
        split = adapter(meta, images).split(seed=0)
    message, = unreadable_warnings(caught)
    assert re.fullmatch(rf"pickapic: skipping its {len(span)} rows: {re.escape(str(shard))}: row group 1 "
                        rf"\(rows {span.start}-{span.stop - 1}\) cannot be read as parquet: \S[^\n]*", message), message
    assert split.skipped_records[UNREADABLE_META] == len(span) == len(rids)
    assert split.skip_examples[UNREADABLE_META] == [f"{shard.name} row group 1 (rows {span.start}-{span.stop - 1})"]
    write_pickapic(tmp_path / "without", [r for r in rows if r["ranking_id"] not in rids], images=False, shards=2, row_group_size=16)
    expected = adapter(tmp_path / "without", images).split(seed=0)
    assert split.users and split.fingerprint == expected.fingerprint
    with pytest.warns(RuntimeWarning, match=re.escape(message)):
        assert adapter(meta, images).split(seed=0).fingerprint == split.fingerprint


def test_a_metadata_shard_with_no_readable_row_group_is_skipped_whole(tmp_path, rows):
    """A metadata shard whose only row group is unreadable leaves no table to join: its rows are skipped and
    counted, and the other shard's rows still make the split."""
    meta = tmp_path / "m"
    write_pickapic(meta, rows, images=False, shards=2, row_group_size=1000)
    shard = sorted(meta.rglob("*.parquet"))[1]  # the first holds the users that make the split
    assert pq.ParquetFile(shard).num_row_groups == 1
    _, span = group_rows(shard, 0)
    corrupt_row_group(shard, 0, "caption")
    with pytest.warns(RuntimeWarning, match=f"skipping its {len(span)} rows: {re.escape(str(shard))}: row group 0 "):
        split = adapter(meta, images="none").split(seed=0)
    assert split.skipped_records[UNREADABLE_META] == len(span)
    assert split.users and split.episodes


def test_a_row_group_unreadable_when_an_image_is_opened_fails_that_image(data, monkeypatch):
    """A row group that fails to read when an evaluator opens an image later (its row no longer kept) gives
    that image's ImageError naming the shard and the group (its sample INVALID), not a crash."""
    import functools

    import pigbench.adapters.pickapic as pickapic

    meta, images = data
    shard = sorted(images.rglob("*.parquet"))[0]
    monkeypatch.setattr(pickapic, "RowCache", functools.partial(pickapic.RowCache, max_bytes=0))  # keeps no row
    split = adapter(meta, images).split(seed=0)
    corrupt_row_group(shard, 1)
    errors = []
    for im in all_images(split):
        try:
            im.read_bytes()
        except ImageError as exc:
            errors.append(str(exc))
    assert errors and all(f"{shard}: row group 1 (rows 3-5) cannot be read as parquet" in m for m in errors)


def test_a_read_error_of_the_file_object_is_not_taken_for_a_damaged_row_group(data):
    """A hub file's network error (an OSError subclass its file object raises) says nothing about the file's
    bytes: it stops the read as before instead of skipping the group, so a split never depends on the network."""
    import io

    from pigbench.adapters._parquet import ShardSet, UnreadableRowGroup

    path = sorted(data[1].rglob("*.parquet"))[0]

    class Flaky(io.BytesIO):
        down = False

        def read(self, size=-1):
            if self.down:
                raise ConnectionError("connection reset")
            return super().read(size)

    flaky = Flaky(path.read_bytes())

    class FS:
        def open(self, name, mode):
            return flaky

    shards = ShardSet([str(path)], filesystem=FS())
    found = shards.locate("ranking_id", pq.read_table(path, columns=["ranking_id"])["ranking_id"])
    flaky.down = True
    skipped = []
    with pytest.raises(DatasetError, match="connection reset") as error:
        list(shards.read_rows(found, ["jpg_0"], on_unreadable=lambda exc, keys: skipped.append(exc)))
    assert not isinstance(error.value, UnreadableRowGroup) and not skipped


@pytest.mark.parametrize("error", [pa.lib.ArrowMemoryError("malloc of size 512 failed"), pa.lib.ArrowCancelled("cancelled")])
def test_running_out_of_memory_or_a_cancelled_read_is_not_taken_for_a_damaged_row_group(data, monkeypatch, error):
    """pyarrow's ArrowMemoryError and ArrowCancelled are ArrowExceptions, yet say nothing about the file's
    bytes: they stop the read instead of silently shrinking the split by a skipped group."""
    from pigbench.adapters._parquet import ShardSet

    path = sorted(data[1].rglob("*.parquet"))[0]
    shards = ShardSet([str(path)])
    found = shards.locate("ranking_id", pq.read_table(path, columns=["ranking_id"])["ranking_id"])

    def fail(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", fail)
    skipped = []
    with pytest.raises(DatasetError, match=str(error)):
        list(shards.read_rows(found, ["jpg_0"], on_unreadable=lambda exc, keys: skipped.append(exc)))
    assert not skipped


def test_an_image_shard_with_a_mistyped_column_is_an_error_naming_it(data):
    import pyarrow as pa

    meta, images = data
    shard = sorted(images.rglob("*.parquet"))[1]
    table = pq.read_table(shard)
    table = table.set_column(9, "jpg_0", pa.array([b.hex() for b in table["jpg_0"].to_pylist()], pa.string()))
    pq.write_table(table, shard)
    with pytest.raises(DatasetError, match=rf"^{shard}: column 'jpg_0' has type string, expected binary$"):
        adapter(meta, images).split(seed=0)


def test_null_ranking_id_is_a_counted_skip_and_ids_stay_integers(tmp_path, rows):
    lost, rows[1]["ranking_id"] = rows[1]["ranking_id"], None  # a row of user 101
    write_pickapic(tmp_path / "m", rows, images=False, shards=2, row_group_size=16)
    a = adapter(tmp_path / "m", images="none")
    split = a.split(seed=0)
    reason = "missing ranking_id, user_id, caption or image uid"
    assert split.skipped_records[reason] == 1 and split.skip_examples[reason][0].endswith("ranking_id=None")
    assert {e.user_id for e in split.episodes} == {"101", "102", "104"}
    ids = {e.target.record_id for e in split.episodes} | {r.record_id for e in split.episodes for r in e.references}
    assert all(i.isdigit() for i in ids) and str(lost) not in ids


def test_images_none_builds_the_split_without_reading_images(data):
    split = adapter(data[0], images="none").split(seed=0)
    assert {e.user_id for e in split.episodes} == {"101", "102", "104"}
    with pytest.raises(ImageError, match="images=none"):
        split.episodes[0].target.image_a.open()


def test_images_path_without_with_images_shards_is_an_error_naming_it(data, monkeypatch):
    """Not a silent fall back to reading the images from the hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    meta = data[0]
    with pytest.raises(DatasetError, match=rf"^pickapic: no 'train' with-images parquet shards \(with jpg_0/jpg_1\) under {meta} "):
        adapter(meta, meta).split(seed=0)


def test_an_empty_images_path_is_refused_not_read_from_the_hub(data, monkeypatch):
    """images_path= (an unset shell variable) was taken as no option: the images were read from the
    hub (offline: an error telling to pass images_path, which was passed)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetError, match=r"^pickapic: option images_path='' names no folder"):
        adapter(data[0], images_path="").split(seed=0)


def test_metadata_only_offline_says_what_to_download(data, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DatasetError, match=r"yuvalkirstain/pickapic_v2 .*images_path.*images=none"):
        adapter(data[0]).split(seed=0)


class FakeHubFS:
    """The hub's fsspec filesystem over local folders (``datasets/<repo>/<path>`` is ``repos[repo]/<path>``),
    listing in reverse name order (the hub promises no order); records the paths opened."""

    def __init__(self, repos):
        self.repos, self.opened = repos, []

    def glob(self, pattern):
        kind, owner, name, rest = pattern.split("/", 3)
        root = self.repos[f"{owner}/{name}"] if kind == "datasets" else None
        return sorted((f"datasets/{owner}/{name}/{p.relative_to(root).as_posix()}" for p in root.glob(rest)), reverse=True)

    def open(self, path, mode):
        self.opened.append(path)
        _, owner, name, rest = path.split("/", 3)
        return (self.repos[f"{owner}/{name}"] / rest).open(mode)


def test_images_read_in_place_from_the_hub_equal_a_local_copy(data, tmp_path, monkeypatch):
    """Also: images read from the hub are stored under $PIGBENCH_CACHE by default (a later split of the
    same users reads no row group); those of a local copy are not."""
    import huggingface_hub

    import pigbench.hub

    meta, images = data
    fs = FakeHubFS({"yuvalkirstain/pickapic_v2": images})
    monkeypatch.setattr(huggingface_hub, "HfFileSystem", lambda: fs)
    monkeypatch.setattr(pigbench.hub, "downloads_unavailable", lambda url=None: None)
    monkeypatch.setenv("PIGBENCH_CACHE", str(tmp_path / "cache"))
    local, hub = adapter(meta, images), adapter(meta)
    a = local.split(seed=0)
    assert not (tmp_path / "cache").exists()
    b = hub.split(seed=0)
    assert len(list((tmp_path / "cache" / "images").glob("index-*.json"))) == 1
    assert [e.sample_id for e in b.episodes] == [e.sample_id for e in a.episodes] and b.fingerprint == a.fingerprint
    assert fs.opened == [f"datasets/yuvalkirstain/pickapic_v2/data/{p.name}" for p in sorted(images.rglob("*.parquet"))]
    assert hub.provenance()["row_groups_read"] == local.provenance()["row_groups_read"]
    assert hub.provenance()["image_files"] == 3
    assert b.episodes[0].target.image_a.read_bytes() == a.episodes[0].target.image_a.read_bytes()
    again = adapter(meta)
    assert again.split(seed=0).fingerprint == b.fingerprint and again.provenance()["row_groups_read"] == 0


def test_hub_cache_is_used_offline_and_a_miss_is_explained(data, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("PIGBENCH_PICKAPIC_PATH", raising=False)
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # the miss names both ways to a local copy (it named only --dataset-path)
    with pytest.raises(DatasetError, match=r"hf download yuvalkirstain/pickapic_v1_no_images.*"
                                           r"then pass --dataset-path DIR or set PIGBENCH_PICKAPIC_PATH=DIR$"):
        PickAPicV1(None, {"images": "none"}).split(seed=0)
    repo = cache / "datasets--yuvalkirstain--pickapic_v2_no_images"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots").mkdir()
    (data[0]).rename(repo / "snapshots" / commit)
    split = PickAPic(None, {"images": "none"}).split(seed=0)
    assert {e.user_id for e in split.episodes} == {"101", "102", "104"}


def test_users_option_samples_users(data):
    split = adapter(*data, users="2").split(seed=0)
    assert split.users == 2 and split.skipped_users["not in the seeded sample (users=2)"] == 3
    with pytest.raises(DatasetError, match="unknown option"):
        PickAPic(str(data[0]), {"user": "2"})


def test_a_sampled_user_whose_rows_the_image_checks_drop_is_counted(tmp_path, rows):
    """users=N samples before images are read: a sampled user (104) with no row in the with-images shards
    vanished from the split uncounted; it is now a skipped user, so users plus skipped users make N."""
    write_pickapic(tmp_path / "m", rows, images=False, shards=2, row_group_size=16)
    write_pickapic(tmp_path / "i", [r for r in rows if r["user_id"] != 104], images=True, shards=3, row_group_size=3)
    split = adapter(tmp_path / "m", tmp_path / "i", users="5").split(seed=0)
    assert split.skipped_users["every row dropped by the image checks"] == 1
    assert split.skip_examples["every row dropped by the image checks"] == ["user 104"]
    sampled_away = {"fewer than 9 decisive rows (8 references plus 1 decisive target)"}  # user 103, before the sample
    assert split.users + sum(n for r, n in split.skipped_users.items() if r not in sampled_away) == 5


def test_a_user_needs_k_plus_1_decisive_rows(tmp_path):
    """../shared/specs/datasets.md section 1.6, pitfall 4: "keep users with >= ref_size + 1 labelled non-tie rows
    (PIGReward: 8 refs -> >= 9)". A user with 8 decisive rows and ties besides was kept, scored on ties alone;
    such a user is now skipped, before the image checks and (when they drop a decisive row) after them."""
    rows, n = [], iter(range(1, 400))

    def user(u, decisive, ties, first=0):
        return [pickapic_row(first + i, u, f"user {u} prompt {i}", next(n), next(n), 0.5 if i >= decisive else float(i % 2))
                for i in range(decisive + ties)]

    rows += user(301, 8, 2, first=9000)  # 8 decisive rows and 2 ties: too few
    rows += user(302, 9, 1, first=9100)  # 9 decisive rows and a tie: kept
    rows += user(303, 9, 1, first=9200)  # 9 decisive rows, one of two byte-identical images: 8 left after the checks
    rows[-2]["jpg_1"] = rows[-2]["jpg_0"]
    write_pickapic(tmp_path / "m", rows, images=False, shards=1, row_group_size=16)
    write_pickapic(tmp_path / "i", rows, images=True, shards=1, row_group_size=16)
    split = adapter(tmp_path / "m", tmp_path / "i").split(seed=0)
    assert {e.user_id for e in split.episodes} == {"302"}
    assert any(e.target.gold != Label.TIE for e in split.episodes)
    reason = "fewer than 9 decisive rows (8 references plus 1 decisive target)"
    assert split.skipped_users == {reason: 1, f"{reason} after the image checks": 1}
    assert split.skip_examples[reason] == ["user 301"] and split.skip_examples[f"{reason} after the image checks"] == ["user 303"]
    assert split.skipped_records["identical image bytes in a pair"] == 1


def fewer_users_notes(caught):
    return [str(w.message) for w in caught if "asked for" in str(w.message)]


def test_users_beyond_those_a_split_can_hold_are_said_once(data):
    """users=N gave fewer than N users silently when fewer qualified or sampled users lost their targets;
    one warning now names how many were asked for and found, and why; none when N are found."""
    with pytest.warns(UserWarning) as caught:
        split = adapter(*data, users="10").split(seed=0)
    qualified = adapter(*data)
    sampled = len(set(qualified._select_users(qualified._usable_rows(), 8, 0)["user_id"].to_pylist()))
    assert split.users < sampled < 10  # the fixture: fewer users qualify than asked, and leakage drops some
    assert fewer_users_notes(caught) == [
        f"pickapic: users=10 asked for 10 users, found {split.users}: only {sampled} users have the rows a split needs; "
        f"{sampled - split.users} sampled users lost rows or targets to the image or leakage checks (see the skipped users)"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert adapter(*data, users=str(split.users)).split(seed=0).users == split.users
        assert adapter(*data).split(seed=0).users == split.users  # no users=N: nothing asked for
    assert fewer_users_notes(caught) == []


def test_sampled_users_dropped_by_the_image_checks_are_said_once(tmp_path, rows):
    """Enough users qualify for users=5, but the split holds fewer (104's rows are missing from the image shards)."""
    write_pickapic(tmp_path / "m", rows, images=False, shards=2, row_group_size=16)
    write_pickapic(tmp_path / "i", [r for r in rows if r["user_id"] != 104], images=True, shards=3, row_group_size=3)
    with pytest.warns(UserWarning) as caught:
        split = adapter(tmp_path / "m", tmp_path / "i", users="5").split(seed=0)
    assert fewer_users_notes(caught) == [
        f"pickapic: users=5 asked for 5 users, found {split.users}: {5 - split.users} sampled users lost rows or targets "
        "to the image or leakage checks (see the skipped users)"]


def test_fewer_qualifying_users_with_none_lost_later_are_said_without_a_loss(tmp_path):
    """When fewer users qualify than users=N asks for and every one of them makes the split, the warning gives
    that reason alone (no "0 sampled users lost rows")."""
    rows, n = [], iter(range(1, 1000))
    for u in range(4):  # 4 users of 10 rows each, no prompt shared: none lost to the leakage checks
        rows += [pickapic_row(8000 + 10 * u + i, 300 + u, f"user {u} prompt {i}", next(n), next(n), float(i % 2))
                 for i in range(10)]
    write_pickapic(tmp_path / "m", rows, images=False, shards=1, row_group_size=16)
    with pytest.warns(UserWarning) as caught:
        split = adapter(tmp_path / "m", images="none", users="6").split(seed=0)
    assert split.users == 4 and not split.skipped_users
    assert fewer_users_notes(caught) == ["pickapic: users=6 asked for 6 users, found 4: only 4 users have the rows a split needs"]


class Dynamic(PickAPic):
    default_reference_size = None


@pytest.mark.parametrize("k,max_targets", [(8, None), (4, None), (4, 1), (None, None), (0, None)])
def test_columnar_split_equals_build_split_on_the_records(data, k, max_targets):
    from pigbench.splits import build_split

    a = (Dynamic if k is None else PickAPic)(str(data[0]), {"images": "none"})
    for seed in range(3):
        fast = a.split(seed=seed, reference_size=k, max_targets_per_user=max_targets)
        slow = build_split(a.records(), "pickapic", seed, k if k is not None else None, max_targets)

        def view(split):
            return [(e.user_id, e.sample_id, e.target.gold, e.target.prompt, e.target.image_a.id, e.target.image_b.id,
                     tuple((r.record_id, r.prompt, r.preferred.id, r.rejected.id) for r in e.references))
                    for e in split.episodes]

        assert view(fast) == view(slow) and fast.fingerprint == slow.fingerprint and fast.users == slow.users
        for reason, count in slow.skipped_records.items():
            assert fast.skipped_records[reason] == count, reason
        # the adapter asks K + 1 decisive rows of a user where the shared splitter asks K and 1 more row; no
        # user of the fixture has exactly K decisive rows and a tie, so only the reason's wording differs
        wording = {f"fewer than {k} decisive reference records plus 1 target record":
                   f"fewer than {k + 1} decisive rows ({k} references plus 1 decisive target)"} if k is not None else {}
        assert fast.skipped_users == {wording.get(r, r): n for r, n in slow.skipped_users.items()}


def test_columnar_dynamic_split_skips_users_without_a_decisive_reference_like_build_split(tmp_path):
    from pigbench.splits import build_split

    rows, n = [], iter(range(1, 200))
    for i in range(4):  # user 201: every row tied
        rows.append(pickapic_row(7000 + i, 201, PROMPTS[i], next(n), next(n), 0.5))
    for i in range(4):  # user 202: one decisive row among ties (skipped whenever it is the held-out row)
        rows.append(pickapic_row(7100 + i, 202, PROMPTS[i], next(n), next(n), 1.0 if i == 0 else 0.5))
    write_pickapic(tmp_path / "m", rows, images=False, shards=1, row_group_size=16)
    a = Dynamic(str(tmp_path / "m"), {"images": "none"})
    reason = "no decisive ranked set besides the held-out one"
    for seed in range(6):
        fast, slow = a.split(seed=seed), build_split(a.records(), "pickapic", seed, None)
        assert fast.skipped_users == slow.skipped_users and fast.skipped_users[reason] >= 1
        assert fast.skipped_records == slow.skipped_records and fast.fingerprint == slow.fingerprint
        assert all(len(e.references) == 1 for e in fast.episodes)


def test_gold_and_references_follow_label_0_and_each_row_is_used_once(data, rows):
    """label_0 1.0: image 0 preferred, 0.0: image 1, 0.5: tie (specs/datasets.md 1.4-1.5), in the
    references and in the targets whichever image is shown as A; a repeated ranking_id is one row."""
    by_rid = {r["ranking_id"]: r for r in rows}

    def preferred(r):
        return (r["image_0_uid"], r["image_1_uid"]) if r["label_0"] == 1.0 else (r["image_1_uid"], r["image_0_uid"])

    split = adapter(data[0], images="none").split(seed=0)
    golds = set()
    for e in split.episodes:
        ref_ids = [p.record_id for p in e.references]
        assert len(set(ref_ids)) == len(ref_ids) and e.target.record_id not in ref_ids, e.sample_id
        assert [(p.preferred.id, p.rejected.id) for p in e.references] == [preferred(by_rid[int(i)]) for i in ref_ids]
        r, t = by_rid[int(e.target.record_id)], e.target
        assert {t.image_a.id, t.image_b.id} == {r["image_0_uid"], r["image_1_uid"]}, e.sample_id
        if r["label_0"] == 0.5:
            assert t.gold == Label.TIE, e.sample_id
        else:
            assert t.gold in (Label.A, Label.B) and (t.image_a.id if t.gold == Label.A else t.image_b.id) == preferred(r)[0]
        golds.add(t.gold)
    assert golds == {Label.A, Label.B, Label.TIE}
    targets = [e.target.record_id for e in split.episodes]
    assert len(targets) == len(set(targets))


def test_rows_contradicting_their_labels_or_the_image_shards_are_skipped_and_counted(tmp_path, rows):
    extra = [pickapic_row(6001, 102, "label_1 is not 1 - label_0", 860, 861, 1.0, label_1=0.5),
             pickapic_row(6002, 102, "a tie naming a best image", 862, 863, 0.5, best_image_uid=uid(862)),
             pickapic_row(6003, 102, "image uids swapped in the image shard", 864, 865, 1.0),
             pickapic_row(6004, 102, "no bytes for image 1", 866, 867, 1.0)]
    write_pickapic(tmp_path / "m", rows + extra, images=False, shards=2, row_group_size=16)
    e = extra[2]
    swapped = dict(e, image_0_uid=e["image_1_uid"], image_1_uid=e["image_0_uid"], jpg_0=e["jpg_1"], jpg_1=e["jpg_0"])
    write_pickapic(tmp_path / "i", rows + extra[:2] + [swapped, dict(extra[3], jpg_1=None)], images=True, shards=3,
                   row_group_size=3)
    split = adapter(tmp_path / "m", tmp_path / "i").split(seed=0)
    for reason, n in (("label_0/label_1 not (1, 0), (0, 1) or (0.5, 0.5)", 1),
                      ("best_image_uid disagrees with the labels", 2),  # and the fixture's 'best disagrees' row
                      ("with-images row has other image uids than the metadata", 1),
                      ("image bytes missing (null jpg_0/jpg_1)", 1)):
        assert split.skipped_records[reason] == n, reason
    used = {e.target.record_id for e in split.episodes} | {r.record_id for e in split.episodes for r in e.references}
    assert {e.user_id for e in split.episodes} == {"101", "102", "104"} and not used & {"6001", "6002", "6003", "6004"}


def test_rows_missing_from_the_image_shards_are_counted_and_images_path_wins(tmp_path, rows):
    """With-images shards beside the metadata lack one row: it is skipped and counted (naming its metadata
    shard); --dataset-option images_path, a complete copy, is used instead of the shards beside the metadata."""
    lost = rows[2]  # a row of user 101
    meta_shards = write_pickapic(tmp_path / "m" / "meta", rows, images=False, shards=2, row_group_size=16)
    write_pickapic(tmp_path / "m" / "images", [r for r in rows if r is not lost], images=True, shards=3, row_group_size=3)
    write_pickapic(tmp_path / "full", rows, images=True, shards=3, row_group_size=3)
    reason = "row not found in the with-images shards"
    partial = adapter(tmp_path / "m").split(seed=0)
    assert partial.skipped_records[reason] == 1
    assert partial.skip_examples[reason] == [f"{meta_shards[0].name} ranking_id={lost['ranking_id']}"]
    full = adapter(tmp_path / "m", tmp_path / "full").split(seed=0)
    assert reason not in full.skipped_records and full.fingerprint == adapter(tmp_path / "m" / "meta", tmp_path / "full").split(seed=0).fingerprint


def test_a_target_image_with_the_bytes_of_a_reference_image_under_another_uid_leaks(tmp_path, rows):
    extra = [pickapic_row(6100 + i, 107, PROMPTS[i], 870 + 2 * i, 871 + 2 * i, 1.0) for i in range(9)]
    for r in extra:
        r["jpg_0"] = jpeg(870)  # nine uids, one image: every target shows a reference image again
    write_pickapic(tmp_path / "m", rows + extra, images=False, shards=2, row_group_size=16)
    write_pickapic(tmp_path / "i", rows + extra, images=True, shards=3, row_group_size=3)
    split = adapter(tmp_path / "m", tmp_path / "i").split(seed=0)
    assert_no_leak(split)
    assert {e.user_id for e in split.episodes} == {"101", "102", "104"}
    assert split.skipped_records["target image appears in the user's references"] == 2  # users 105 and 107


def test_a_run_over_users_scattered_in_row_groups_reads_each_group_once(tmp_path):
    """Episodes ask images user by user, while a user's rows lie in many row groups: each group
    holding kept rows is read once (when hashing), not again for every image a run opens."""
    import random

    rows, n = [], iter(range(1, 1000))
    for u in range(12):
        rows += [pickapic_row(8000 + 10 * u + i, 300 + u, PROMPTS[i], next(n), next(n), float(i % 2)) for i in range(10)]
    random.Random(0).shuffle(rows)  # users interleaved, as the hub's rows
    write_pickapic(tmp_path / "m", rows, images=False, shards=1, row_group_size=1000)
    write_pickapic(tmp_path / "i", rows, images=True, shards=3, row_group_size=4)
    a = adapter(tmp_path / "m", tmp_path / "i")
    split = a.split(seed=0)
    assert split.users == 12
    for e in split.episodes:
        for im in (e.target.image_a, e.target.image_b, *(i for r in e.references for i in (r.preferred, r.rejected))):
            assert im.content_hash == hashlib.sha256(im.read_bytes()).hexdigest()
    groups = sum(pq.ParquetFile(p).num_row_groups for p in (tmp_path / "i").rglob("*.parquet"))
    assert a.provenance()["row_groups_read"] == groups == 30  # every group holds kept rows


def test_row_cache_is_bounded_by_bytes_and_threads_read_a_group_once(data):
    import threading
    import time

    from pigbench.adapters._parquet import RowCache, ShardSet

    shards = ShardSet(sorted(data[1].rglob("*.parquet")))
    found = shards.locate("ranking_id", pq.read_table(shards.paths[0], columns=["ranking_id"])["ranking_id"])
    group = [k for k, loc in found.items() if (loc.shard, loc.group) == (0, 0)]
    read_group = shards.read_group
    shards.read_group = lambda *a: (time.sleep(0.2), read_group(*a))[1]  # the threads ask while it reads
    cache = RowCache(shards, found, ["ranking_id", "jpg_0"], max_bytes=5000)  # 3 or 4 rows of ~1.3 kB
    got = {}
    threads = [threading.Thread(target=lambda k=k: got.__setitem__(k, cache.get(k))) for k in group]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(group) == 3 and shards.row_groups_read == 1 and all(got[k]["ranking_id"] == k for k in group)
    assert cache.get(group[0])["ranking_id"] == group[0] and shards.row_groups_read == 1  # kept: not read again
    for k in found:
        assert cache.get(k)["ranking_id"] == k
        assert cache._bytes <= 5000 and sum(len(v[0]["jpg_0"]) for v in cache._rows.values()) == cache._bytes
    big = RowCache(shards, found, ["ranking_id", "jpg_0"])
    for _ in range(2):  # rows kept again replace their earlier entry: their bytes count once
        list(big.rows())
    assert len(big._rows) == len(found) and big._bytes == sum(len(v[0]["jpg_0"]) for v in big._rows.values())


def scattered_users(tmp_path):
    """12 users of 10 rows, interleaved over 30 row groups of 3 with-images shards."""
    import random

    rows, n = [], iter(range(1, 1000))
    for u in range(12):
        rows += [pickapic_row(8000 + 10 * u + i, 300 + u, PROMPTS[i], next(n), next(n), float(i % 2)) for i in range(10)]
    random.Random(0).shuffle(rows)
    write_pickapic(tmp_path / "m", rows, images=False, shards=1, row_group_size=1000)
    write_pickapic(tmp_path / "i", rows, images=True, shards=3, row_group_size=4)
    return tmp_path / "m", tmp_path / "i"


def all_images(split):
    return [im for e in split.episodes
            for im in (e.target.image_a, e.target.image_b, *(i for r in e.references for i in (r.preferred, r.rejected)))]


def test_image_store_reads_each_group_once_and_a_later_split_reads_none(tmp_path, monkeypatch):
    """With images_cache=DIR the hashing pass stores the kept images, so a run reads no group again even
    when no row stays in memory, and a second adapter on the same split reads no row group at all."""
    import functools

    import pigbench.adapters.pickapic as pickapic

    monkeypatch.setattr(pickapic, "RowCache", functools.partial(pickapic.RowCache, max_bytes=0))  # keeps no row
    meta, images = scattered_users(tmp_path)
    store = tmp_path / "store"
    first = adapter(meta, images, images_cache=str(store))
    split = first.split(seed=0)
    for im in all_images(split):
        data = im.read_bytes()
        assert im.content_hash == hashlib.sha256(data).hexdigest()
        assert (store / im.content_hash[:2] / im.content_hash).read_bytes() == data
    assert first.provenance()["row_groups_read"] == 30  # each group once
    second = adapter(meta, images, images_cache=str(store))
    again = second.split(seed=0)
    assert again.fingerprint == split.fingerprint and again.summary() == split.summary()
    assert [im.stamp() for im in all_images(again)] == [im.stamp() for im in all_images(split)]
    assert all(im.content_hash == hashlib.sha256(im.read_bytes()).hexdigest() for im in all_images(again))
    assert second.provenance()["row_groups_read"] == 0
    subset = adapter(meta, images, images_cache=str(store), users="3")
    assert subset.split(seed=0).users == 3 and subset.provenance()["row_groups_read"] == 0  # its rows were all hashed
    assert len(list(store.glob("index-*.json"))) == 1  # one index per shard set


def test_a_damaged_store_file_or_index_falls_back_to_the_shards(data, tmp_path):
    meta, images = data
    store = tmp_path / "store"
    split = adapter(meta, images, images_cache=str(store)).split(seed=0)
    im = split.episodes[0].target.image_a
    path = store / im.content_hash[:2] / im.content_hash
    good = path.read_bytes()
    path.write_bytes(b"x" * len(good))  # same size: the index still trusts it, the read does not
    fresh = adapter(meta, images, images_cache=str(store))
    im2 = fresh.split(seed=0).episodes[0].target.image_a
    assert fresh.provenance()["row_groups_read"] == 0
    assert im2.read_bytes() == good and path.read_bytes() == good  # read from its row and stored again
    assert fresh.provenance()["row_groups_read"] == 1
    path.write_bytes(good[:10])  # another size: the index is not used, the pass stores it again
    redo = adapter(meta, images, images_cache=str(store))
    assert redo.split(seed=0).fingerprint == split.fingerprint and redo.provenance()["row_groups_read"] > 0
    assert path.read_bytes() == good
    index = next(store.glob("index-*.json"))
    entries = json.loads(index.read_text())
    index.write_text(json.dumps({rid: e[:2] for rid, e in entries.items()}))  # entries without outcomes: not used
    cut = adapter(meta, images, images_cache=str(store))
    assert cut.split(seed=0).fingerprint == split.fingerprint and cut.provenance()["row_groups_read"] > 0
    index.write_text("[[1, ")  # a damaged index: the pass is run again
    assert adapter(meta, images, images_cache=str(store)).split(seed=0).fingerprint == split.fingerprint
    assert json.loads(index.read_text())


def test_concurrent_store_writers_leave_whole_files(tmp_path):
    import threading

    from pigbench.adapters.pickapic import ImageStore

    data = bytes(range(256)) * 4000
    sha = hashlib.sha256(data).hexdigest()
    store, seen = ImageStore(tmp_path / "s"), []

    def work():
        for _ in range(20):
            store.put(sha, data, replace=True)
            seen.append(store.get(sha))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s == data for s in seen)  # never a partial file
    assert [p.name for p in (tmp_path / "s").rglob("*") if p.is_file()] == [sha]  # no temporary file left


def test_images_cache_and_images_path_do_not_change_the_run_key_or_results_file(data, tmp_path):
    """Both name where images are kept; every image is keyed by its SHA-256, so a copy of the shards
    elsewhere, with or without a store, shares the stored predictions."""
    import shutil

    from pigbench.runner import RunConfig, run

    meta, images = data
    copy = shutil.copytree(images, tmp_path / "copy")

    def go(images_path, cache_option):
        return run(RunConfig(evaluator="color-reference", dataset="pickapic", dataset_path=str(meta),
                             dataset_options={"images_path": str(images_path), "images_cache": cache_option},
                             output=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"), progress=False,
                             n_bootstrap=10, max_error_rate=1.0), log=lambda m: None)

    first, second, third = go(images, str(tmp_path / "store")), go(images, "none"), go(copy, "none")
    # every prediction stored is reused (the corrupt image's failed sample is tried again)
    assert second.resumed == third.resumed == first.computed - 1 and second.computed == third.computed == 1
    assert second.results_path == third.results_path == first.results_path
    source = json.loads(third.results_path.read_text())["dataset"]["source"]
    assert source["options"] == {} and source["locations"] == {"images_path": str(copy), "images_cache": "none"}


def test_a_long_option_digest_in_the_results_file_name_leaves_out_images_cache():
    """Options too long or odd for the file name are named by a digest: of the content options only."""
    from pigbench.runner import RunConfig, _variant_suffix, build_evaluator

    def suffix(cache_option):
        config = RunConfig(evaluator="color-reference", dataset="pickapic",
                           dataset_options={"split": "validation_unique", "images_cache": cache_option})
        return _variant_suffix(config, build_evaluator(config))

    assert suffix("none") == suffix("/some/store") and suffix("none").startswith("__opt")


def test_runs_differing_only_in_images_cache_form_one_reference_size_series(data, tmp_path):
    """The results file records the dataset options less images_cache (and images_path), so the report's accuracy-vs-K
    series (one per set of recorded options) does not split runs differing only in where images are kept."""
    from pigbench.report.collect import collect
    from pigbench.report.plots import reference_size_series
    from pigbench.runner import RunConfig, run

    meta, images = data
    for k, cache_option in ((4, str(tmp_path / "store")), (8, "none")):
        out = run(RunConfig(evaluator="color-reference", dataset="pickapic", dataset_path=str(meta), reference_size=k,
                            dataset_options={"images_path": str(images), "images_cache": cache_option},
                            output=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"), progress=False,
                            n_bootstrap=10, max_error_rate=1.0), log=lambda m: None)
        assert json.loads(out.results_path.read_text())["dataset"]["source"]["options"] == {}
    series = reference_size_series(collect(tmp_path / "results"))["pickapic"]
    assert [e.results["split"]["reference_size"] for e in series["color-reference"]] == [4, 8]


def test_an_empty_images_cache_is_refused_not_the_working_directory(data, tmp_path, monkeypatch):
    """images_cache= (an unset shell variable) named Path('') = the working directory, which got a
    folder per hash prefix and the index."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.raises(DatasetError, match=r"pickapic: option images_cache='' names no folder"):
        adapter(*data, images_cache="").split(seed=0)
    assert list(cwd.iterdir()) == []


def test_with_a_store_the_hashing_pass_keeps_no_row_in_memory(data, tmp_path, monkeypatch):
    """Images open from the store's files, so the pass's rows are not kept in memory as well (up to
    1 GiB per process); without a store they are."""
    import pigbench.adapters.pickapic as pickapic

    caches = []

    class Recorded(pickapic.RowCache):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            caches.append(self)

    monkeypatch.setattr(pickapic, "RowCache", Recorded)
    meta, images = data
    adapter(meta, images, images_cache=str(tmp_path / "store")).split(seed=0)
    adapter(meta, images).split(seed=0)
    assert [c._bytes == 0 for c in caches] == [True, False]


def test_an_index_of_other_hashing_rules_is_not_used(data, tmp_path, monkeypatch):
    import pigbench.adapters.pickapic as pickapic

    meta, images = data
    store = tmp_path / "store"
    adapter(meta, images, images_cache=str(store)).split(seed=0)
    monkeypatch.setattr(pickapic, "_INDEX_VERSION", pickapic._INDEX_VERSION + 1)
    later = adapter(meta, images, images_cache=str(store))
    later.split(seed=0)
    assert later.provenance()["row_groups_read"] > 0
    assert len(list(store.glob("index-*.json"))) == 2


def groups_of(a, split_rids):
    """The with-images row groups holding the located rows ``split_rids`` of adapter ``a``."""
    locations = a._shards.locate("ranking_id", __import__("pyarrow").array(sorted(split_rids)))
    return {(loc.shard, loc.group) for loc in locations.values()}


def located_rids(a, k):
    """The ranking ids the hashing pass of a split at reference size ``k`` goes over."""
    rows, _ = a._locate(a._select_users(a._usable_rows(), k, 0))
    return set(rows["ranking_id"].to_pylist())


def test_the_store_index_is_cumulative_across_splits_of_other_rows(tmp_path):
    """The index was keyed by the exact set of located rows, so a split keeping other users (another K,
    users=N, seed) found none and re-read every row group; it now reuses each row hashed before and
    reads only the groups of the others, and a split of rows all seen reads none."""
    rows, n = [], iter(range(1, 1000))
    for u in range(12):  # users 300..305 have 6 rows (kept at K=4 only), 306..311 have 10 (kept at K=4 and 8)
        rows += [pickapic_row(8000 + 10 * u + i, 300 + u, PROMPTS[i], next(n), next(n), float(i % 2))
                 for i in range(6 if u < 6 else 10)]
    write_pickapic(tmp_path / "m", rows, images=False, shards=1, row_group_size=1000)
    write_pickapic(tmp_path / "i", rows, images=True, shards=2, row_group_size=4)  # users in order: groups apart
    meta, images, store = tmp_path / "m", tmp_path / "i", tmp_path / "store"

    at8 = adapter(meta, images, images_cache=str(store))
    first = at8.split(seed=0, reference_size=8)
    rids8 = located_rids(at8, 8)
    assert first.users == 6 and at8.provenance()["row_groups_read"] == len(groups_of(at8, rids8))

    at4 = adapter(meta, images, images_cache=str(store))
    split4 = at4.split(seed=0, reference_size=4)
    rids4 = located_rids(at4, 4)
    new = groups_of(at4, rids4 - rids8)
    assert split4.users == 12 and new and new != groups_of(at4, rids4)
    assert at4.provenance()["row_groups_read"] == len(new)  # only the groups of rows not hashed before
    plain = adapter(meta, images).split(seed=0, reference_size=4)
    assert split4.fingerprint == plain.fingerprint and split4.summary() == plain.summary()
    assert [im.stamp() for im in all_images(split4)] == [im.stamp() for im in all_images(plain)]

    for options, k in (({}, 8), ({}, 4), ({"users": "5"}, 4)):  # every row seen: no group read
        again = adapter(meta, images, images_cache=str(store), **options)
        split = again.split(seed=1, reference_size=k)
        assert again.provenance()["row_groups_read"] == 0
        assert split.fingerprint == adapter(meta, images, **options).split(seed=1, reference_size=k).fingerprint
    assert len(list(store.glob("index-*.json"))) == 1


def test_a_row_relabelled_in_the_metadata_is_hashed_again(data, tmp_path, rows):
    """An index entry is used only for the row at its recorded position with its recorded metadata uids."""
    meta, images = data
    store = tmp_path / "store"
    adapter(meta, images, images_cache=str(store)).split(seed=0)
    changed = [dict(r) for r in rows]
    target = changed[0]["ranking_id"]
    assert changed[0]["label_0"] == 0.0  # image_1 is the best: image_0's uid can change alone
    changed[0]["image_0_uid"] = uid(990)  # metadata only: the with-images row keeps its uid
    write_pickapic(tmp_path / "m2", changed, images=False, shards=2, row_group_size=16)
    later = adapter(tmp_path / "m2", images, images_cache=str(store))
    split = later.split(seed=0)
    assert later.provenance()["row_groups_read"] == 1  # that row's group only
    plain = adapter(tmp_path / "m2", images).split(seed=0)
    assert split.skipped_records == plain.skipped_records and split.skip_examples == plain.skip_examples
    assert split.skip_examples["with-images row has other image uids than the metadata"] == [f"ranking_id={target}"]
    assert split.fingerprint == plain.fingerprint


def test_images_cache_none_stores_nothing(data, tmp_path, monkeypatch):
    """'none' is the word for no store, not a folder named none."""
    meta, images = data
    monkeypatch.chdir(tmp_path)
    a = adapter(meta, images, images_cache="none")
    im = a.split(seed=0).episodes[0].target.image_a
    assert im.content_hash == hashlib.sha256(im.read_bytes()).hexdigest()
    assert not (tmp_path / "none").exists() and not list(tmp_path.rglob("index-*.json"))


def test_a_stored_image_missing_and_its_row_changed_is_an_error_not_other_bytes(data, tmp_path):
    """A store file gone is read again from its row (a store not writable then does not fail the read);
    bytes there of another SHA-256 than the split recorded are an ImageError, not silently another image."""
    import functools

    from pigbench.adapters.pickapic import ImageStore

    meta, images = data
    store = tmp_path / "store"
    im = adapter(meta, images, images_cache=str(store)).split(seed=0).episodes[0].target.image_a
    (store / im.content_hash[:2] / im.content_hash).unlink()
    assert hashlib.sha256(im.read_bytes()).hexdigest() == im.content_hash  # read again from its row
    (store / im.content_hash[:2] / im.content_hash).unlink()

    def unwritable(*args, **kwargs):
        raise DatasetError("cannot write")

    with pytest.MonkeyPatch.context() as mp:  # a store not writable now: the image is read all the same
        mp.setattr(ImageStore, "write", unwritable)
        assert hashlib.sha256(im.read_bytes()).hexdigest() == im.content_hash
    other = functools.partial(im.source.func, *im.source.args[:-1], "0" * 64)  # the split recorded other bytes
    with pytest.raises(ImageError, match="no longer has the bytes"):
        other()


def test_image_shards_rewritten_with_other_bytes_are_hashed_again(tmp_path, rows):
    """The index is keyed by the shards' names and footers: shards of the same names, layout and
    uids but other image bytes do not reuse the earlier hashes."""
    meta, images = tmp_path / "m", tmp_path / "i"
    write_pickapic(meta, rows, images=False, shards=2, row_group_size=16)
    write_pickapic(images, rows, images=True, shards=3, row_group_size=3)
    store = tmp_path / "store"
    first = adapter(meta, images, images_cache=str(store)).split(seed=0).episodes[0].target.image_a
    changed = [dict(r) for r in rows]
    for r in changed:
        if r["image_0_uid"] == first.id:
            r["jpg_0"] = jpeg(990) + b"\0" * 100
        if r["image_1_uid"] == first.id:
            r["jpg_1"] = jpeg(990) + b"\0" * 100
    write_pickapic(images, changed, images=True, shards=3, row_group_size=3)
    later = adapter(meta, images, images_cache=str(store))
    im = next(i for i in all_images(later.split(seed=0)) if i.id == first.id)
    assert later.provenance()["row_groups_read"] > 0
    assert im.content_hash == hashlib.sha256(jpeg(990) + b"\0" * 100).hexdigest() != first.content_hash


def test_store_files_follow_the_umask_so_a_group_can_share_the_store(data, tmp_path):
    """mkstemp made every image and index file 0600 whatever the umask: another user of a store
    shared through $PIGBENCH_CACHE could not read it, hashed everything again and locked the first out."""
    meta, images = data
    old = os.umask(0o002)
    try:
        adapter(meta, images, images_cache=str(tmp_path / "store")).split(seed=0)
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert files and {p.stat().st_mode & 0o777 for p in files} == {0o664}
    assert not [p for p in files if p.name.startswith(".")]


def test_a_store_write_that_fails_is_an_error_naming_the_file_and_the_way_out(data, tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    meta, images = data
    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(DatasetError, match=rf"cannot write the \w+ file {tmp_path / 'store'}/\S+ of the image store "
                                           r"\(\[Errno 28\] No space left on device\); --dataset-option images_cache=DIR"):
        adapter(meta, images, images_cache=str(tmp_path / "store")).split(seed=0)
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]  # no temporary file left


def test_a_split_adding_rows_to_a_large_index_appends_them_and_an_old_index_is_read(tmp_path):
    """Each split hashing new rows rewrote the whole index (about 250 MB for all of Pick-a-Pic v2):
    its entries are now appended to the index's log and the main file is left as it is; an index
    file of the earlier format (the main file alone) is still read."""
    from pigbench.adapters.pickapic import ImageStore

    rows, n = [], iter(range(1, 1000))
    for u in range(12):  # users 300..305 have 6 rows (kept at K=4 only), 306..311 have 10
        rows += [pickapic_row(8000 + 10 * u + i, 300 + u, PROMPTS[i], next(n), next(n), float(i % 2))
                 for i in range(6 if u < 6 else 10)]
    write_pickapic(tmp_path / "m", rows, images=False, shards=1, row_group_size=1000)
    write_pickapic(tmp_path / "i", rows, images=True, shards=2, row_group_size=4)
    meta, images, store = tmp_path / "m", tmp_path / "i", tmp_path / "store"
    at8 = adapter(meta, images, images_cache=str(store))
    at8.split(seed=0, reference_size=8)
    (index,) = store.glob("index-*.json")
    entries = ImageStore(store).load_index(index)
    large = {**{str(10**6 + i): [[0, 0, i], ["u0", "u1"], "image bytes missing (null jpg_0/jpg_1)"] for i in range(2000)},
             **entries}
    for p in store.glob("index-*"):
        p.unlink()
    index.write_text(json.dumps(large))  # as the earlier format wrote it: the main file alone
    before = index.stat()
    at4 = adapter(meta, images, images_cache=str(store))
    at4.split(seed=0, reference_size=4)
    assert at4.provenance()["row_groups_read"] > 0 and len(located_rids(at4, 4)) > len(entries)
    assert index.read_text() == json.dumps(large) and index.stat().st_ino == before.st_ino  # not rewritten
    log = index.with_suffix(".jsonl")
    assert len(log.read_text().splitlines()) == len(located_rids(at4, 4)) - len(entries)  # the new rows' entries
    again = adapter(meta, images, images_cache=str(store))
    again.split(seed=0, reference_size=4)
    assert again.provenance()["row_groups_read"] == 0  # every row found: the old file's and the log's
    logged = {k: e for line in log.read_text().splitlines() for k, e in json.loads(line).items()}
    assert ImageStore(store).load_index(index) == {**large, **logged} and not set(logged) & set(large)


def test_an_index_write_that_fails_is_an_error_naming_the_index_file(data, tmp_path):
    meta, images = data
    store = tmp_path / "store"
    adapter(meta, images, images_cache=str(store)).split(seed=0, reference_size=8)
    (index,) = store.glob("index-*.json")
    index.write_text(json.dumps({str(10**6 + i): [[0, 0, i], ["u0", "u1"], "x"] for i in range(1000)}))  # large: appended to
    index.with_suffix(".jsonl").mkdir()  # the log cannot be appended to
    with pytest.raises(DatasetError, match=rf"cannot write the index file {index} of the image store \(.*\); "
                                           r"--dataset-option images_cache=DIR"):
        adapter(meta, images, images_cache=str(store)).split(seed=0)


def test_a_killed_image_writers_temp_file_in_a_subfolder_is_removed_at_the_next_write_there(tmp_path, monkeypatch):
    """Only the store's root was swept, so temporary files of image writes killed mid-write stayed in the
    <sha[:2]>/ folders for good. The first write into a folder sweeps it (a live writer's file stays), once
    per folder per store, and reading sweeps nothing."""
    from test_atomic_file import _gone_pid

    from pigbench import atomic_file
    from pigbench.adapters import pickapic
    from pigbench.adapters.pickapic import ImageStore

    data = b"image bytes"
    sha = hashlib.sha256(data).hexdigest()
    folder = tmp_path / "s" / sha[:2]
    folder.mkdir(parents=True)
    dead = folder / f".{sha}.{atomic_file.HOST}.{_gone_pid()}.140245.0123456789ab.tmp"
    live = folder / f".{sha}.{atomic_file.HOST}.{os.getpid()}.140245.0123456789ab.tmp"
    dead.write_bytes(b"part")
    live.write_bytes(b"part")
    listed = []
    monkeypatch.setattr(pickapic, "remove_stale_temps", lambda d: listed.append(d) or atomic_file.remove_stale_temps(d))
    store = ImageStore(tmp_path / "s")
    assert dead.exists() and store.get(sha) is None and listed == [tmp_path / "s"]  # opening and reading: root only
    store.put(sha, data)
    assert not dead.exists() and live.exists() and store.get(sha) == data
    other = bytes(range(256))
    while hashlib.sha256(other).hexdigest()[:2] != sha[:2]:  # a second image of the same folder
        other += b"x"
    store.put(sha, data, replace=True)
    store.put(hashlib.sha256(other).hexdigest(), other)
    assert listed == [tmp_path / "s", folder]  # one listing per folder
