"""PIP adapter on user_data/<user_id>.jsonl fixtures with marker lines, plus a regenerated-image folder."""

import json
from pathlib import Path

import pytest

from fixtures_adapters import CORRUPT, PROMPTS, assert_no_leak, jpeg, run_labels
from pigbench.adapter import DatasetError
from pigbench.adapters.pip import PIP
from pigbench.protocol import ImageError

BASE = {"result_url": "https://example.invalid/dead.png", "resolution_power": 1024, "NSFW": "Unlikely", "proportion": "1:1"}


def rec(rid, user, prompt, **kw):
    return {**BASE, "prompt": prompt, "user_id": user, "id": rid, **kw}


def write_user(folder, user, train, test=(), header="train_samples:"):
    lines = [header, *train] + (["test_samples:", *test] if test else [])
    (folder / f"{user}.jsonl").write_text("".join(json.dumps(v) + "\n" for v in lines), encoding="utf-8")


def build(root):
    data, images = root / "user_data", root / "regenerated"
    data.mkdir(parents=True)
    images.mkdir()
    n = iter(range(1000))

    def records(user, prompts, prefix):
        out = []
        for i, p in enumerate(prompts):
            rid = f"{prefix}{i}"
            (images / f"{rid}.jpg").write_bytes(jpeg(next(n)))
            out.append(rec(rid, user, p))
        return out

    a = records("87403", PROMPTS[:10], "a")
    a.append(rec("a_dup", "87403", "  " + PROMPTS[1].replace(" ", "  ")))  # whitespace duplicate: skipped
    (images / "a_dup.jpg").write_bytes(jpeg(next(n)))
    a.append(rec("a_nsfw", "87403", "something else", NSFW="NSFW"))
    a.append(rec("a_noimg", "87403", "a record never regenerated"))
    (images / "a3.jpg").write_bytes(CORRUPT)
    # test records add query/good: good is False when query is the prompt itself (data_process.py)
    write_user(data, "87403", a[:8] + a[10:], [dict(a[8], query=a[8]["prompt"], good=False),
                                                dict(a[9], query=a[9]["prompt"][:12], good=True)])
    write_user(data, "11111", records("11111", PROMPTS[:10], "b"))
    write_user(data, "33333", records("33333", PROMPTS[:7], "c"), header="Preferences:")  # demo.py variant
    write_user(data, "22222", records("22222", PROMPTS[:3], "d"))  # too few records
    e = records("44444", PROMPTS[:6], "e")  # every image of user 44444 has the same bytes: any target leaks
    for r in e:
        (images / f"{r['id']}.jpg").write_bytes(jpeg(999))
    write_user(data, "44444", e)
    return root, images


@pytest.fixture
def pip(tmp_path):
    root, images = build(tmp_path / "pip")
    return root, {"images": str(images)}


def test_markers_are_located_and_test_records_pooled(pip):
    lines = [json.loads(x) for x in (pip[0] / "user_data" / "87403.jsonl").read_text(encoding="utf-8").splitlines()]
    test = lines[lines.index("test_samples:") + 1:]
    assert len(test) == 2 and {(r["query"] == r["prompt"], r["good"]) for r in test} == {(True, False), (False, True)}
    recs = {r.record_id: r for r in PIP(str(pip[0]), pip[1]).records()}
    assert {"a8", "a9", "c0", "c6"} <= set(recs) and recs["a9"].source == "pip:test" and recs["c0"].source == "pip:train"
    assert recs["a8"].source == "pip:test" and recs["a8"].prompt == test[0]["prompt"]  # the prompt, not the query
    assert not {"a_dup", "a_nsfw", "a_noimg"} & set(recs)


def test_pairs_own_image_over_another_users_image_for_the_same_prompt(pip):
    recs = list(PIP(str(pip[0]), pip[1]).records())
    owner = {r.record_id: r.user_id for r in recs}
    for r in recs:
        own, other = r.images
        assert r.ranks == (1, 2) and own.id == f"pip:{r.record_id}"
        assert owner[other.id[4:]] != r.user_id
    by_id = {r.record_id: r for r in recs}
    assert by_id["a0"].images[1].id[4:] in {"b0", "c0", "d0", "e0"}


def test_skips_are_counted(pip):
    a = PIP(str(pip[0]), pip[1])
    list(a.records())
    assert a.skipped == {"repeated prompt within a user": 1, "flagged NSFW": 1, "no regenerated image for the record": 1}


def test_a_folder_named_like_an_image_is_not_an_image(pip):
    """A folder ``a_noimg.png`` in the images folder was indexed as the record's image: split raised
    ImageError reading it. It is skipped like any record with no regenerated image."""
    (Path(pip[1]["images"]) / "a_noimg.png").mkdir()
    a = PIP(str(pip[0]), pip[1])
    s = a.split(seed=0, reference_size=4)
    assert s.episodes and "a_noimg" not in {r.record_id for r in a.records()}
    assert a.skipped["no regenerated image for the record"] == 1


def test_a_prompt_whose_first_record_has_no_image_is_kept_from_a_later_one(pip):
    """Repeated prompts were removed before the image check: a prompt whose first record was never
    regenerated was lost though a later repeat had its image; the later record is now kept."""
    root, options = pip
    write_user(root / "user_data", "55555", [rec("f0", "55555", PROMPTS[0]), rec("f1", "55555", " " + PROMPTS[0])])
    (Path(options["images"]) / "f1.jpg").write_bytes(jpeg(500))
    a = PIP(str(root), options)
    assert "f1" in {r.record_id for r in a.records()}
    assert a.skipped == {"repeated prompt within a user": 1, "flagged NSFW": 1, "no regenerated image for the record": 2}


def test_a_repeated_prompt_is_counted_as_nsfw_or_without_image_first(pip):
    """The checks go NSFW, no regenerated image, repeated prompt (the module docstring's order): a repeat
    of a kept prompt that is flagged or was never regenerated is counted for that, not as a repeat."""
    root, options = pip
    write_user(root / "user_data", "55555", [rec("g0", "55555", PROMPTS[0]), rec("g1", "55555", PROMPTS[0], NSFW="NSFW"),
                                             rec("g2", "55555", PROMPTS[0])])
    for rid in ("g0", "g1"):
        (Path(options["images"]) / f"{rid}.jpg").write_bytes(jpeg(600 + int(rid[1])))
    a = PIP(str(root), options)
    assert "g0" in {r.record_id for r in a.records()}
    assert a.skipped == {"repeated prompt within a user": 1, "flagged NSFW": 2, "no regenerated image for the record": 2}


def test_split_reference_size_too_few_and_leaked_targets(pip):
    a = PIP(str(pip[0]), pip[1])
    s = a.split(seed=0, reference_size=None)
    assert_no_leak(s)
    assert {e.user_id for e in s.episodes} == {"87403", "11111", "33333"}
    assert all(len(e.references) == 5 for e in s.episodes)
    assert s.skipped_users["fewer than 5 decisive reference records plus 1 target record"] == 1  # 22222
    assert s.skipped_users["no target left after leakage checks"] == 1  # 44444
    assert s.skipped_records["target image appears in the user's references"] >= 1  # 44444, and negatives from 44444


def test_other_user_negatives(pip):
    recs = list(PIP(str(pip[0]), {**pip[1], "negatives": "other-user"}).records())
    owner = {r.record_id: r.user_id for r in recs}
    assert len(recs) == 36 and all(owner[r.images[1].id[4:]] != r.user_id for r in recs)


def test_corrupt_image_errors_when_opened_and_gives_invalid_in_a_run(pip, tmp_path):
    r = next(r for r in PIP(str(pip[0]), pip[1]).records() if r.record_id == "a3")
    with pytest.raises(ImageError, match="a3.jpg"):
        r.images[0].open()
    labels = run_labels(tmp_path, "pip", pip[0], pip[1])
    assert "INVALID" in labels["87403"] and labels["11111"] <= {"A", "B", "TIE"}


def test_missing_field_names_file_line_and_field(pip):
    path = pip[0] / "user_data" / "11111.jsonl"
    lines = path.read_text().splitlines()
    lines[3] = json.dumps({"id": "bx", "NSFW": "Unlikely"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"11111.jsonl:4: missing field 'prompt'"):
        list(PIP(str(pip[0]), pip[1]).records())


def test_line_not_utf8_is_a_counted_skip_naming_file_and_line(pip):
    path = pip[0] / "user_data" / "11111.jsonl"
    with path.open("ab") as fh:
        fh.write(b'{"prompt": "caf\xe9 au lait", "id": "b_latin1"}\n')
    a = PIP(str(pip[0]), pip[1])
    assert "b_latin1" not in {r.record_id for r in a.records()}
    assert a.skipped["line not UTF-8"] == 1
    assert a.skip_examples["line not UTF-8"] == ["11111.jsonl:12: not UTF-8 (byte 16 is 0xe9: invalid continuation byte)"]


def test_images_folder_is_required_and_options_checked(pip):
    with pytest.raises(DatasetError, match="images=DIR"):
        list(PIP(str(pip[0])).records())
    with pytest.raises(DatasetError, match="negatives"):
        list(PIP(str(pip[0]), {**pip[1], "negatives": "random"}).records())
