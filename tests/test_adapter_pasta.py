"""PASTA adapter on a fixture in the ASSUMED (UNVERIFIED) schema documented in adapters/pasta.py."""

import json

import pytest

from fixtures_adapters import CORRUPT, PROMPTS, jpeg, run_labels
from pigbench.adapter import DatasetError
from pigbench.adapters.pasta import PASTA
from pigbench.protocol import ImageError, Label

# trajectory -> number of turns; tC has too few turns, tD's last turn shows an earlier slate again
TRAJECTORIES = {"tA": 5, "tB": 6, "tC": 3, "tD": 5}


def build(root):
    (root / "img").mkdir(parents=True)
    n, lines = iter(range(2000)), []
    for traj, turns in TRAJECTORIES.items():
        for turn in range(1, turns + 1):
            slates = []
            for s in range(4):
                paths = []
                for j in range(4):
                    rel = f"img/{traj}_{turn}_{s}_{j}.jpg"
                    (root / rel).write_bytes(CORRUPT if (traj, turn, s, j) == ("tA", 5, 2, 1) else jpeg(next(n)))
                    paths.append(rel)
                slates.append(paths)
            if (traj, turn) == ("tD", 5):
                slates[0] = [f"img/tD_2_1_{j}.jpg" for j in range(4)]  # the chosen slate repeats turn 2's slate 1
            prompt = ("  " * (turn % 2)) + PROMPTS[0].replace(" ", " " * turn)  # whitespace variants of one prompt
            lines.append({"trajectory_id": traj, "rater_id": "r1" if traj < "tC" else "r2", "turn": turn, "prompt": prompt,
                          "expanded_prompts": [f"{PROMPTS[0]}, style {s}" for s in range(4)], "images": slates,
                          "chosen": 0 if traj == "tD" else (turn + 1) % 4})
    (root / "pasta_turns.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root


@pytest.fixture
def root(tmp_path):
    return build(tmp_path / "pasta")


def test_last_turn_is_the_target_and_the_four_turns_before_it_the_references(root):
    s = PASTA(str(root)).split(seed=0)
    assert {e.user_id for e in s.episodes} == {"tA", "tB"}
    b = [e for e in s.episodes if e.user_id == "tB"]
    assert len(b) == 3 and {e.target.record_id for e in b} == {"t6"}
    assert [r.record_id for r in b[0].references] == ["tB/t2", "tB/t3", "tB/t4", "tB/t5"]
    assert all(len(r.ranking) == 4 for r in b[0].references)


def test_chosen_slate_beats_each_other_slate_and_there_are_no_ties(root):
    recs = {(r.user_id, r.record_id): r for r in PASTA(str(root)).records()}
    assert recs[("tB", "t6")].ranks == (2, 2, 2, 1)  # the non-chosen slates share rank 2
    for seed in range(3):
        for e in PASTA(str(root)).split(seed=seed).episodes:
            assert e.target.gold in (Label.A, Label.B)
            winner = e.target.image_a if e.target.gold == Label.A else e.target.image_b
            rec = recs[(e.user_id, e.target.record_id)]
            assert winner == rec.images[rec.ranks.index(1)]


def test_too_few_turns_and_leaked_slate(root):
    s = PASTA(str(root)).split(seed=0)
    assert s.skipped_users["fewer than 4 reference turns plus 1 target turn"] == 1  # tC
    assert s.skipped_users["no target left after leakage checks"] == 1  # tD
    assert s.skipped_records["target image appears in the user's references"] == 3
    assert len(PASTA(str(root)).split(seed=0, reference_size=2).episodes) == 12  # tC qualifies; tD's repeated slate is older


def test_whitespace_variant_prompts_do_not_drop_targets(root):
    s = PASTA(str(root)).split(seed=0)
    ep = next(e for e in s.episodes if e.user_id == "tA")
    assert " ".join(ep.target.prompt.split()) == " ".join(ep.references[0].prompt.split())
    assert PASTA(str(root)).provenance()["leakage_rule"].startswith("images only")


def test_slate_is_a_lazy_grid_and_a_corrupt_tile_is_an_image_error(root, tmp_path):
    recs = {(r.user_id, r.record_id): r for r in PASTA(str(root)).records()}
    assert recs[("tA", "t1")].images[0].open().size == (64, 64)
    with pytest.raises(ImageError, match="tA_5_2_1.jpg"):
        recs[("tA", "t5")].images[2].open()
    labels = run_labels(tmp_path, "pasta", root)
    assert "INVALID" in labels["tA"] and labels["tB"] <= {"A", "B"}


def test_a_tile_outside_the_datasets_image_formats_is_an_image_error(root):
    """A slate's tiles are decoded with the same format restriction as other images."""
    from PIL import Image

    Image.new("RGB", (64, 64), (9, 9, 9)).save(root / "img" / "tA_1_0_0.jpg", format="PPM")
    slate = {(r.user_id, r.record_id): r for r in PASTA(str(root)).records()}[("tA", "t1")].images[0]
    with pytest.raises(ImageError, match="tA_1_0_0.jpg"):
        slate.open()


def edit_second_turn(root, edit) -> None:
    """Apply ``edit`` to line 2 of the fixture's turns file (a JSON object) and write it back."""
    path = root / "pasta_turns.jsonl"
    lines = path.read_text().splitlines()
    bad = json.loads(lines[1])
    edit(bad)
    lines[1] = json.dumps(bad)
    path.write_text("\n".join(lines) + "\n")


def test_schema_mismatch_lists_expected_and_found_fields_and_says_unverified(root):
    edit_second_turn(root, lambda turn: turn.pop("chosen"))
    with pytest.raises(DatasetError, match=r"pasta_turns.jsonl:2: does not match the assumed PASTA schema \(missing fields\)"
                                           r".*chosen \(int\).*found: \[.*'turn'\].*unverified"):
        list(PASTA(str(root)).records())


def test_schema_type_mismatch_names_each_field_and_its_expected_type(root):
    edit_second_turn(root, lambda turn: turn.update(turn="2", chosen=True))
    with pytest.raises(DatasetError, match=r"pasta_turns.jsonl:2: does not match the assumed PASTA schema "
                                           r"\(field 'turn' is str, expected int; field 'chosen' is bool, expected int\)"):
        list(PASTA(str(root)).records())


def test_a_target_pair_of_two_identical_slates_is_dropped_and_counted(root):
    path = root / "pasta_turns.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    last = next(x for x in lines if (x["trajectory_id"], x["turn"]) == ("tB", 6))
    twin = next(s for s in range(4) if s != last["chosen"])
    last["images"][twin] = list(last["images"][last["chosen"]])  # a non-chosen slate shows the chosen slate's files
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    s = PASTA(str(root)).split(seed=0)
    for e in s.episodes:
        assert e.target.image_a.content_hash != e.target.image_b.content_hash, e.sample_id
    assert len([e for e in s.episodes if e.user_id == "tB"]) == 2
    assert s.skipped_records["identical images in a target pair"] == 1


@pytest.mark.parametrize("path", ["../outside.jpg", "img/../../outside.jpg", "/etc/outside.jpg"])
def test_an_image_path_leaving_the_dataset_folder_is_refused(root, path):
    (root.parent / "outside.jpg").write_bytes(jpeg(0))
    edit_second_turn(root, lambda turn: turn["images"][1].__setitem__(2, path))
    with pytest.raises(DatasetError, match=rf"pasta_turns.jsonl:2: image path '{path}' must be relative to the dataset folder"):
        list(PASTA(str(root)).records())


def test_turns_are_ordered_by_number_and_a_reference_rejects_the_first_other_slate(root):
    path = root / "pasta_turns.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for x in lines:
        if x["trajectory_id"] == "tB":
            x["turn"] += 4  # turns 5-10: as text, "t10" sorts before "t5"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    b = [e for e in PASTA(str(root)).split(seed=0).episodes if e.user_id == "tB"]
    assert {e.target.record_id for e in b} == {"t10"}
    refs = b[0].references
    assert [r.record_id for r in refs] == ["tB/t6", "tB/t7", "tB/t8", "tB/t9"]
    chosen = [(turn - 4 + 1) % 4 for turn in range(6, 10)]  # build's rule on the original turn numbers: 3, 0, 1, 2
    assert [(r.preferred.id, r.rejected.id) for r in refs] == [
        (f"tB/t{turn}/s{c}", f"tB/t{turn}/s{0 if c else 1}") for turn, c in zip(range(6, 10), chosen)]


def test_a_trajectory_of_exactly_k_turns_is_skipped_not_split_without_references(root):
    s = PASTA(str(root)).split(seed=0, reference_size=3)  # tC has 3 turns: no target beyond 3 references
    assert "tC" not in {e.user_id for e in s.episodes} and all(len(e.references) == 3 for e in s.episodes)
    assert s.skipped_users["fewer than 3 reference turns plus 1 target turn"] == 1


def test_a_repeated_turn_and_a_turn_with_a_missing_image_are_skipped_and_counted(root):
    path = root / "pasta_turns.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    repeat = next(x for x in lines if (x["trajectory_id"], x["turn"]) == ("tB", 3))
    path.write_text("".join(json.dumps(x) + "\n" for x in lines + [dict(repeat, chosen=(repeat["chosen"] + 1) % 4)]))
    (root / "img" / "tB_1_0_0.jpg").unlink()  # turn 1 of tB: not among its references
    a = PASTA(str(root))
    assert ("tB", "t1") not in {(r.user_id, r.record_id) for r in a.records()}
    assert a.skipped == {"repeated (trajectory_id, turn)": 1, "image file missing": 1}
    b = [e for e in a.split(seed=0).episodes if e.user_id == "tB"]
    assert [r.record_id for r in b[0].references] == ["tB/t2", "tB/t3", "tB/t4", "tB/t5"]
    assert b[0].references[1].preferred.id == f"tB/t3/s{repeat['chosen']}"  # the first line of the repeated turn
