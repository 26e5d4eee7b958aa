"""learn-user-pref adapter on pickled DataFrames with the card's 8 columns, written at test time."""

import os
import pickle

import pandas as pd
import pytest

from fixtures_adapters import CORRUPT, PROMPTS, assert_no_leak, jpeg, run_labels
from pigbench.adapter import DatasetError
from pigbench.adapters.learn_user_pref import LearnUserPref
from pigbench.protocol import ImageError, Label


def row(user, prompt, image0, image1, label0, n_refs=8, base=0, ref_prompts=None):
    refs = list(range(base, base + n_refs))
    return {"user_id": user, "reference_list": [jpeg(100 + 2 * i) for i in refs],
            "reference_list_bad": [jpeg(101 + 2 * i) for i in refs],
            "reference_prompt_list": ref_prompts or [PROMPTS[i % len(PROMPTS)] + f" #{i}" for i in refs],
            "image0": image0, "image1": image1, "prompt": prompt, "label0": label0}


def frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "reference_list", "reference_list_bad", "reference_prompt_list",
                                       "image0", "image1", "prompt", "label0"])


TEST_ROWS = [
    row(7, "a red hydrant", jpeg(1), jpeg(2), 1),
    row(7, "orange jello", jpeg(3), CORRUPT, 0),  # corrupt target image
    row(7, "Times Square at night", jpeg(5), jpeg(6), 0.5),  # a tie
    row(8, "too few references", jpeg(7), jpeg(8), 1, n_refs=5),  # a user with too few reference pairs
    row(9, "  A blue cup   on a table ", jpeg(9), jpeg(10), 1, ref_prompts=["a blue cup on a table"] + PROMPTS[1:8]),
    row(9, "a green tractor", jpeg(100), jpeg(11), 0),  # image0 repeats a reference image (same bytes, another row)
    row(9, "a plate of sushi", jpeg(12), jpeg(13), 1),
]


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "lup"
    d.mkdir()
    with (d / "bench_test_w_bad.pkl").open("wb") as fh:
        pickle.dump(frame(TEST_ROWS), fh, protocol=4)
    return d


def split(folder, **kw):
    return LearnUserPref(str(folder), kw.pop("options", None)).split(seed=kw.pop("seed", 0), **kw)


def test_one_episode_per_row_with_its_fixed_references(folder):
    s = split(folder)
    assert_no_leak(s)
    assert [e.target.record_id for e in s.episodes] == ["bench_test_w_bad:0", "bench_test_w_bad:1", "bench_test_w_bad:2",
                                                         "bench_test_w_bad:6"]
    ep = s.episodes[0]
    assert len(ep.references) == 8 and ep.references[0].preferred.read_bytes() == jpeg(100)
    assert ep.references[0].rejected.read_bytes() == jpeg(101) and ep.references[0].prompt == PROMPTS[0] + " #0"
    assert s.users == 2 and s.skipped_users["no usable target row"] == 1


def test_labels_ties_and_ab_order(folder):
    golds = {}
    for seed in range(4):
        for e in split(folder, seed=seed).episodes:
            first = e.target.image_a.read_bytes() in (jpeg(1), jpeg(3), jpeg(5), jpeg(12))
            golds.setdefault(e.target.record_id, set()).add(e.target.gold if first else e.target.gold.swapped())
    assert golds == {"bench_test_w_bad:0": {Label.A}, "bench_test_w_bad:1": {Label.B},
                     "bench_test_w_bad:2": {Label.TIE}, "bench_test_w_bad:6": {Label.A}}


def test_leaks_too_few_references_and_reference_size(folder):
    s = split(folder)
    assert s.skipped_records["fewer than 8 reference pairs"] == 1
    assert s.skipped_records["target prompt appears in the user's references"] == 1  # whitespace duplicate
    assert s.skipped_records["target image appears in the user's references"] == 1
    small = split(folder, reference_size=4)
    assert all(len(e.references) == 4 for e in small.episodes) and small.users == 3


def test_data_info_counts_the_references_of_every_target(folder, capsys):
    import json

    from pigbench.cli import main

    assert main(["data", "info", "pickapic-lup", "--path", str(folder), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    pairs = {(e.user_id, r.record_id) for e in split(folder).episodes for r in e.references}
    assert info["target_records"] == 4 and info["reference_records"] == len(pairs) == 4 * 8  # each row its own 8


def test_image_ids_are_content_hashes_shared_across_rows(folder):
    recs = list(LearnUserPref(str(folder)).records())
    assert recs[0].images[0].id.startswith("sha256:") and recs[0].images[0] == recs[0].images[0]
    s = split(folder)
    assert s.episodes[0].references[0].preferred.id == s.episodes[1].references[0].preferred.id


def test_corrupt_image_errors_only_when_opened(folder, tmp_path):
    ep = next(e for e in split(folder).episodes if e.target.record_id.endswith(":1"))
    bad = ep.target.image_a if ep.target.image_a.read_bytes() == CORRUPT else ep.target.image_b
    with pytest.raises(ImageError, match=bad.id):
        bad.open()
    labels = run_labels(tmp_path, "pickapic-lup", folder)
    assert "INVALID" in labels["7"] and labels["9"] <= {"A", "B", "TIE"}


def test_missing_user_id_is_a_counted_skip_and_ids_keep_their_integer_spelling(tmp_path):
    rows = [dict(r) for r in TEST_ROWS]
    rows[6]["user_id"] = float("nan")  # pandas stores the column as floats: 7.0, 8.0, 9.0, nan
    (tmp_path / "bench_test_w_bad.pkl").write_bytes(pickle.dumps(frame(rows)))
    s = split(tmp_path)
    assert {e.user_id for e in s.episodes} == {"7"} and s.episodes[0].sample_id.startswith("7/")
    assert s.skipped_records["missing user_id"] == 1 and s.skip_examples["missing user_id"] == ["bench_test_w_bad:6"]
    assert {r.user_id for r in LearnUserPref(str(tmp_path)).records()} == {"7", "8", "9"}


def test_prompt_that_is_not_a_string_is_a_counted_skip(tmp_path):
    rows = [dict(r) for r in TEST_ROWS]
    rows[0]["prompt"] = 42
    rows[2]["reference_prompt_list"] = [None] + rows[2]["reference_prompt_list"][1:]
    (tmp_path / "bench_test_w_bad.pkl").write_bytes(pickle.dumps(frame(rows)))
    s = split(tmp_path)
    assert [e.target.record_id for e in s.episodes] == ["bench_test_w_bad:1", "bench_test_w_bad:6"]
    assert s.skipped_records["prompt is not a string"] == 1 and s.skip_examples["prompt is not a string"] == ["bench_test_w_bad:0: 42"]
    assert s.skip_examples["reference prompt is not a string"] == ["bench_test_w_bad:2 reference 0: None"]
    assert "bench_test_w_bad:0" not in {r.record_id for r in LearnUserPref(str(tmp_path)).records()}


def test_missing_reference_list_is_a_counted_skip(tmp_path):
    rows = [dict(r) for r in TEST_ROWS]
    rows[0]["reference_list"] = None  # a missing cell of the object column
    rows[2]["reference_prompt_list"] = float("nan")
    (tmp_path / "bench_test_w_bad.pkl").write_bytes(pickle.dumps(frame(rows)))
    s = split(tmp_path)
    assert [e.target.record_id for e in s.episodes] == ["bench_test_w_bad:1", "bench_test_w_bad:6"]
    assert s.skipped_records["reference lists missing or not lists"] == 2
    assert s.skip_examples["reference lists missing or not lists"] == ["bench_test_w_bad:0", "bench_test_w_bad:2"]


def test_missing_column_names_file_and_column(tmp_path):
    (tmp_path / "bench_test_w_bad.pkl").write_bytes(pickle.dumps(frame(TEST_ROWS).drop(columns=["label0"])))
    with pytest.raises(DatasetError, match=r"bench_test_w_bad.pkl: missing column 'label0'"):
        split(tmp_path)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


def test_restricted_unpickler_refuses_code_and_trust_flag_is_explicit(tmp_path):
    (tmp_path / "bench_test_w_bad.pkl").write_bytes(pickle.dumps({"x": Exploit()}))
    with pytest.raises(DatasetError, match=r"refused to unpickle the global (posix|nt)\.system.*trust_pickle=true"):
        split(tmp_path)
    with pytest.raises(DatasetError, match="not a boolean"):
        split(tmp_path, options={"trust_pickle": "maybe"})


@pytest.mark.parametrize("options", [{}, {"trust_pickle": "false"}])
def test_without_trust_pickle_a_frame_holding_more_than_plain_data_is_refused_and_with_it_loads(tmp_path, options):
    """What trust_pickle=true is for: a trusted frame with a column beyond the restricted set (here
    datetime.date objects) is refused by default and with trust_pickle=false, naming the global and the
    option; with trust_pickle=true plain pickle loads it."""
    import datetime

    extra = frame(TEST_ROWS).assign(created=[datetime.date(2023, 5, 1)] * len(TEST_ROWS))
    (tmp_path / "bench_test_w_bad.pkl").write_bytes(pickle.dumps(extra))
    with pytest.raises(DatasetError, match=r"bench_test_w_bad\.pkl: refused to unpickle the global datetime\.date: .*"
                                           r"--dataset-option trust_pickle=true"):
        split(tmp_path, options=options)
    assert len(split(tmp_path, options={"trust_pickle": "true"}).episodes) == 4


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_dataframe_pickles_of_every_protocol_load_restricted(tmp_path, protocol):
    (tmp_path / "bench_test_w_bad.pkl").write_bytes(pickle.dumps(frame(TEST_ROWS), protocol=protocol))
    assert len(split(tmp_path).episodes) == 4
    assert len(split(tmp_path, options={"trust_pickle": "true"}).episodes) == 4


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_pil_image_pickles_load_but_a_pickle_calling_a_pil_class_on_a_path_is_refused(tmp_path, protocol):
    import io

    from PIL import Image

    decoded = lambda b: Image.open(io.BytesIO(b))  # noqa: E731  a JpegImageFile, as a pickled PIL image is
    rows = [dict(r, image0=decoded(r["image0"])) if r["image0"] != CORRUPT else r for r in TEST_ROWS]
    (tmp_path / "bench_test_w_bad.pkl").write_bytes(pickle.dumps(frame(rows), protocol=protocol))
    ep = split(tmp_path).episodes[0]
    assert {ep.target.image_a.open().size, ep.target.image_b.open().size} == {(32, 32)}

    class OpensFile:  # the pickle of JpegImageFile("<path>"): PIL opens any file it is given
        def __reduce__(self):
            return Image.open(io.BytesIO(jpeg(0))).__class__, (str(tmp_path / "private.jpg"),)

    (tmp_path / "private.jpg").write_bytes(jpeg(1))
    (tmp_path / "bench_test_w_bad.pkl").write_bytes(pickle.dumps(frame([dict(TEST_ROWS[0], image0=OpensFile())]),
                                                                 protocol=protocol))
    with pytest.raises(DatasetError, match=r"refused to unpickle the global PIL\.JpegImagePlugin\.JpegImageFile\(\.\.\.\)"):
        split(tmp_path)


def test_a_pickled_arrow_array_with_offsets_outside_its_buffers_is_refused_before_it_is_read(tmp_path):
    import struct

    import pyarrow as pa
    from pyarrow.lib import _restore_array

    from pigbench.adapters._safe_pickle import load_restricted

    class Crafted:  # a string array whose last offset points 1 GiB past its 2-byte data buffer
        def __reduce__(self):
            offsets = pa.py_buffer(struct.pack("<3i", 0, 1, 1 << 30))
            return _restore_array, ((pa.string(), 2, 0, 0, [None, offsets, pa.py_buffer(b"xy")], [], None),)

    (tmp_path / "bench_test_w_bad.pkl").write_bytes(pickle.dumps({"prompt": Crafted()}))
    with pytest.raises(DatasetError, match=r"bench_test_w_bad.pkl: cannot unpickle: ArrowInvalid: .*out of bounds"):
        load_restricted(tmp_path / "bench_test_w_bad.pkl")


def test_train_shards_are_merged_in_shard_order(tmp_path):
    for i, rows in ((0, TEST_ROWS[:3]), (1, TEST_ROWS[3:5]), (2, TEST_ROWS[5:]), (10, TEST_ROWS[:1])):
        (tmp_path / f"bench_train_w_bad_split_{i}.pkl").write_bytes(pickle.dumps(frame(rows)))
    s = split(tmp_path, options={"split": "train"})  # 0, 1, 2, 10: numeric order, not the names' (10 before 2)
    assert [e.target.record_id for e in s.episodes] == ["bench_train_w_bad_split_0:0", "bench_train_w_bad_split_0:1",
                                                         "bench_train_w_bad_split_0:2", "bench_train_w_bad_split_2:1",
                                                         "bench_train_w_bad_split_10:0"]


def test_a_file_named_for_another_split_is_an_error_naming_it(tmp_path):
    """--dataset-path naming a train file was read as the default split=test with no warning; a file whose
    name tells another split is now an error naming it and the split asked for."""
    for name in ("bench_train_w_bad.pkl", "bench_train_w_bad_split_1.pkl"):
        (tmp_path / name).write_bytes(pickle.dumps(frame(TEST_ROWS)))
        with pytest.raises(DatasetError, match=rf"{name}: a 'train' file by its name, not of the 'test' split asked for"):
            split(tmp_path / name)
        assert split(tmp_path / name, options={"split": "train"}).users == 2
    (tmp_path / "bench_test_w_bad.pkl").write_bytes(pickle.dumps(frame(TEST_ROWS)))
    with pytest.raises(DatasetError, match=r"bench_test_w_bad.pkl: a 'test' file by its name, not of the 'train' split"):
        split(tmp_path / "bench_test_w_bad.pkl", options={"split": "train"})


def test_hub_miss_offline_says_what_to_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("PIGBENCH_LUP_PATH", raising=False)
    with pytest.raises(DatasetError, match=r"hf download wenyii/learn-user-pref .*bench_test_w_bad.pkl"):
        LearnUserPref().split(seed=0)


def test_encoded_bytes_held_as_uint8_arrays_are_the_same_images(tmp_path):
    import hashlib

    import numpy as np

    rows = [dict(r) for r in TEST_ROWS]
    as_array = lambda b: np.frombuffer(b, np.uint8)  # noqa: E731  what io.BytesIO reads in the authors' eval.py
    rows[0] = dict(rows[0], image0=as_array(rows[0]["image0"]),
                   reference_list=[as_array(b) for b in rows[0]["reference_list"]])
    (tmp_path / "bench_test_w_bad.pkl").write_bytes(pickle.dumps(frame(rows)))
    ep = next(e for e in split(tmp_path).episodes if e.target.record_id == "bench_test_w_bad:0")
    first = ep.target.image_a if ep.target.image_a.read_bytes() == jpeg(1) else ep.target.image_b
    assert first.read_bytes() == jpeg(1) and first.open().size == (32, 32)
    assert ep.references[0].preferred.read_bytes() == jpeg(100)
    assert ep.references[0].preferred.id == "sha256:" + hashlib.sha256(jpeg(100)).hexdigest()[:16]


@pytest.mark.parametrize("pixels", [(2, 2, 5), (0, 0), (1, 2, 2, 3)])
def test_a_pixel_array_pil_cannot_read_is_a_counted_skip(tmp_path, pixels):
    """A uint8 array of 5 channels (or empty, or 4-D) raised PIL's TypeError out of ``split``."""
    import numpy as np

    rows = [dict(TEST_ROWS[0], image1=np.zeros(pixels, np.uint8))] + TEST_ROWS[2:3]
    (tmp_path / "bench_test_w_bad.pkl").write_bytes(pickle.dumps(frame(rows)))
    s = split(tmp_path)
    assert [e.target.record_id for e in s.episodes] == ["bench_test_w_bad:1"]
    assert s.skipped_records == {"target image is not bytes, a PIL image or an array": 1}


@pytest.mark.parametrize("k", [8, 4])
def test_references_are_the_first_k_pairs_each_with_its_own_prompt(folder, k):
    ep = split(folder, reference_size=k).episodes[0]  # row 0: references 0-7
    assert [(r.prompt, r.preferred.read_bytes(), r.rejected.read_bytes()) for r in ep.references] == [
        (PROMPTS[i] + f" #{i}", jpeg(100 + 2 * i), jpeg(101 + 2 * i)) for i in range(k)]


def test_identical_target_images_and_unequal_reference_lists_are_counted_skips(tmp_path):
    short = row(7, "orange jello", jpeg(3), jpeg(4), 1)
    short["reference_list_bad"] = short["reference_list_bad"][:7]
    with (tmp_path / "bench_test_w_bad.pkl").open("wb") as fh:
        pickle.dump(frame([row(7, "a red hydrant", jpeg(1), jpeg(1), 1), short,
                           row(7, "a plate of sushi", jpeg(5), jpeg(6), 0)]), fh)
    s = split(tmp_path)
    assert [e.target.record_id for e in s.episodes] == ["bench_test_w_bad:2"]
    assert s.skipped_records["identical images in a target pair"] == 1
    assert s.skipped_records["reference lists of different lengths"] == 1
