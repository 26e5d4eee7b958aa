"""Deterministic splits, no leakage, seeded A/B order, fingerprint, skip counts."""

import random

import pytest

from pigbench.protocol import ImageRef, Label, PreferenceRecord, normalize_prompt
from pigbench.splits import build_split, reference_pair

from toy import grey


def rec(rid, user, prompt, levels, ranks):
    return PreferenceRecord(rid, user, prompt, tuple(grey(x) for x in levels), tuple(ranks))


def pairwise_user(user, n, start=0):
    return [rec(f"{user}-{i}", user, f"{user} prompt {i}", (start + 2 * i, start + 2 * i + 1), (1, 2)) for i in range(n)]


def test_deterministic_and_independent_of_input_order_and_other_users():
    recs = pairwise_user("a", 10) + pairwise_user("b", 10, start=100)
    s1 = build_split(recs, "ds", seed=0, reference_size=3)
    shuffled = recs[:]
    random.Random(1).shuffle(shuffled)
    s2 = build_split(shuffled, "ds", seed=0, reference_size=3)
    only_a = build_split(pairwise_user("a", 10), "ds", seed=0, reference_size=3)
    assert [e.sample_id for e in s1.episodes] == [e.sample_id for e in s2.episodes]
    assert s1.fingerprint == s2.fingerprint
    a_eps = [e for e in s1.episodes if e.user_id == "a"]
    assert [(e.sample_id, e.references) for e in a_eps] == [(e.sample_id, e.references) for e in only_a.episodes]
    assert build_split(recs, "ds", seed=1, reference_size=3).fingerprint != s1.fingerprint
    assert build_split(recs, "other", seed=0, reference_size=3).fingerprint != s1.fingerprint


def test_reference_size_and_targets():
    s = build_split(pairwise_user("a", 10), "ds", seed=0, reference_size=4)
    assert len(s.episodes) == 6 and all(len(e.references) == 4 for e in s.episodes)
    ref_ids = {r.record_id for r in s.episodes[0].references}
    assert not ref_ids & {e.target.record_id for e in s.episodes}


def test_user_with_too_few_records_is_skipped_and_counted():
    s = build_split(pairwise_user("a", 10) + pairwise_user("tiny", 3, 200), "ds", seed=0, reference_size=3)
    assert {e.user_id for e in s.episodes} == {"a"}
    assert sum(s.skipped_users.values()) == 1
    assert s.users == 1


def test_no_leakage_by_prompt_or_image():
    recs = pairwise_user("a", 6)
    # Same prompt as a record (modulo case/whitespace) and an image shared with another record.
    recs.append(rec("a-dup-prompt", "a", "  A   Prompt 0 ", (90, 91), (1, 2)))
    recs.append(rec("a-dup-image", "a", "fresh prompt", (0, 93), (2, 1)))  # grey0 is in record a-0
    for seed in range(5):
        s = build_split(recs, "ds", seed=seed, reference_size=3)
        for e in s.episodes:
            prompts = {normalize_prompt(r.prompt) for r in e.references}
            images = {i.id for r in e.references for i in (r.preferred, r.rejected)}
            assert normalize_prompt(e.target.prompt) not in prompts
            assert e.target.image_a.id not in images and e.target.image_b.id not in images
        assert len(s.episodes) + sum(s.skipped_records.values()) == len(recs) - 3


def test_ab_order_is_seeded_not_source_order():
    s = build_split(pairwise_user("a", 60), "ds", seed=0, reference_size=2)
    golds = [e.target.gold for e in s.episodes]
    assert Label.A in golds and Label.B in golds  # the preferred image is not always A
    for e in s.episodes:  # gold follows the images
        winner = e.target.image_a if e.target.gold == Label.A else e.target.image_b
        assert int(winner.id[4:]) % 2 == 0  # preferred images have even levels in pairwise_user


def test_ranking_targets_ties_and_dynamic_reference_size():
    recs = [rec(f"s{i}", "u", f"set {i}", (10 * i, 10 * i + 1, 10 * i + 2, 10 * i + 3), (1, 2, 2, 4)) for i in range(6)]
    s = build_split(recs, "ds", seed=0, reference_size=None)
    assert len(s.episodes) == 6  # all pairs of the held-out set
    assert sum(e.target.gold == Label.TIE for e in s.episodes) == 1
    assert all(len(e.references) == 5 for e in s.episodes)
    ref = s.episodes[0].references[0]
    assert len(ref.ranking) == 4 and ref.preferred.id.endswith("0") and ref.rejected.id.endswith("3")


def test_all_tied_record_is_not_a_reference_and_identical_pairs_are_dropped():
    assert reference_pair(rec("t", "u", "p", (1, 2), (1, 1))) is None
    recs = pairwise_user("a", 5) + [rec("same", "a", "same image", (7, 7), (1, 2))]
    s = build_split(recs, "ds", seed=0, reference_size=2)
    assert "same" not in {e.target.record_id for e in s.episodes}
    assert s.skipped_records["identical images in a target pair"] == 1


def test_limit_recomputes_fingerprint():
    s = build_split(pairwise_user("a", 10), "ds", seed=0, reference_size=2)
    full = s.fingerprint
    s.limit(3)
    assert len(s.episodes) == 3 and s.fingerprint != full and s.targets_before_limit == 8
    two = build_split(pairwise_user("a", 10) + pairwise_user("b", 10, start=100), "ds", seed=0, reference_size=2)
    two.limit(3)  # the first three targets are all user a's
    assert two.users == 1 and two.summary()["users"] == 1


def test_the_uncut_split_is_the_one_before_the_first_cut():
    """The run key hashes ``uncut``: a --limit run then cut again by the calibration's held-out users
    must still name the whole split, as the full calibrated run does, or it shares no predictions."""
    s = build_split(pairwise_user("a", 10) + pairwise_user("b", 10, start=100), "ds", seed=0, reference_size=2)
    whole, whole_fp = s.episodes, s.fingerprint
    assert s.uncut is None
    s.limit(12)
    s.keep(s.episodes[8:])  # the held-out user's targets leave
    assert len(s.episodes) == 4 and s.fingerprint != whole_fp
    assert s.uncut == whole and s.uncut_fingerprint == whole_fp


def test_negative_reference_size_rejected():
    with pytest.raises(ValueError):
        build_split([], "ds", seed=0, reference_size=-1)


def test_dynamic_split_skips_a_user_without_a_decisive_reference_set_and_counts_tied_sets():
    tied = [rec(f"t{i}", "tied", f"tied {i}", (10 * i, 10 * i + 1, 10 * i + 2, 10 * i + 3), (1, 1, 1, 1)) for i in range(4)]
    mixed = [rec(f"m{i}", "mixed", f"mixed {i}", (500 + 10 * i, 501 + 10 * i, 502 + 10 * i, 503 + 10 * i),
                 (1, 2, 3, 4) if i % 2 else (2, 2, 2, 2)) for i in range(6)]
    for seed in range(4):
        s = build_split(tied + mixed, "ds", seed=seed, reference_size=None)
        assert {e.user_id for e in s.episodes} == {"mixed"} and s.users == 1
        assert all(len(e.references) >= 2 for e in s.episodes)
        assert s.skipped_users["no decisive ranked set besides the held-out one"] == 1
        held_out = s.episodes[0].target.record_id
        tied_refs = sum(1 for r in mixed if r.record_id != held_out and len(set(r.ranks)) == 1)
        assert s.skipped_records["tied ranked set: no reference pair"] == tied_refs


def test_which_image_is_a_depends_on_the_seed():
    # reference size 0: every record is a target under any seed, so only the A/B coin can differ
    a_images = [{e.sample_id: e.target.image_a.id for e in build_split(pairwise_user("a", 40), "ds", seed, 0).episodes}
                for seed in (0, 1)]
    assert a_images[0].keys() == a_images[1].keys() and a_images[0] != a_images[1]


def test_a_target_sharing_content_or_a_ranked_image_with_a_reference_is_dropped():
    # "copy" has another id but the content hash of grey0 (r0's preferred image); "mid" shows grey11,
    # the middle of r1's ranking (neither its preferred nor its rejected image). With reference size 3
    # every record that is not a reference is checked against all images the references show.
    recs = [rec(f"r{i}", "u", f"set {i}", (10 * i, 10 * i + 1, 10 * i + 2), (1, 2, 3)) for i in range(4)]
    copy = ImageRef("copy-of-grey0", grey(0).source, known_hash="h-grey0")
    recs.append(PreferenceRecord("copy", "u", "copy prompt", (copy, grey(90)), (1, 2)))
    recs.append(rec("mid", "u", "mid prompt", (11, 91), (1, 2)))
    checked = set()
    for seed in range(8):
        s = build_split(recs, "ds", seed=seed, reference_size=3)
        refs = {r.record_id for r in s.episodes[0].references} if s.episodes else set()
        targets = {e.target.record_id for e in s.episodes}
        for dup, source in (("copy", "r0"), ("mid", "r1")):
            if source in refs and dup not in refs:
                assert dup not in targets
                checked.add(dup)
    assert checked == {"copy", "mid"}  # both cases occurred among the seeds


def test_the_fingerprint_covers_the_golds():
    recs = pairwise_user("a", 6)
    flipped = [rec(r.record_id, r.user_id, r.prompt, (2 * i, 2 * i + 1), (2, 1)) for i, r in enumerate(recs)]
    s, t = (build_split(x, "ds", seed=0, reference_size=2) for x in (recs, flipped))
    assert [e.sample_id for e in s.episodes] == [e.sample_id for e in t.episodes]
    assert s.fingerprint != t.fingerprint


def test_max_targets_per_user_keeps_exactly_that_many():
    s = build_split(pairwise_user("a", 10) + pairwise_user("b", 10, start=100), "ds", seed=0, reference_size=2,
                    max_targets_per_user=3)
    assert [e.user_id for e in s.episodes] == ["a"] * 3 + ["b"] * 3


def test_dynamic_split_keeps_a_user_with_two_ranked_sets_and_skips_one_with_one():
    two = [rec(f"t{i}", "two", f"two {i}", (10 * i, 10 * i + 1, 10 * i + 2), (1, 2, 3)) for i in range(2)]
    one = [rec("o0", "one", "one 0", (50, 51, 52), (1, 2, 3))]
    s = build_split(two + one, "ds", seed=0, reference_size=None)
    assert [e.user_id for e in s.episodes] == ["two"] * 3 and all(len(e.references) == 1 for e in s.episodes)
    assert s.skipped_users == {"fewer than 2 ranked sets": 1}


def test_a_target_pair_of_the_same_content_under_two_ids_is_dropped():
    twin = ImageRef("twin-of-grey7", grey(7).source, known_hash="h-grey7")
    recs = pairwise_user("a", 5) + [PreferenceRecord("same", "a", "same content", (grey(7), twin), (1, 2))]
    s = build_split(recs, "ds", seed=0, reference_size=2)
    assert "same" not in {e.target.record_id for e in s.episodes}
    assert s.skipped_records["identical images in a target pair"] == 1
