"""The embedded ``demo`` dataset: deterministic, lazily rendered, with the promised shape."""

from collections import Counter

import numpy as np
import pytest

from pigbench.adapter import DatasetError
from pigbench.adapters import demo
from pigbench.protocol import normalize_prompt
from pigbench.registry import adapters


def load(**options):
    return adapters.get("demo")(options={k: str(v) for k, v in options.items()})


def snapshot(records):
    return [(r.record_id, r.user_id, r.prompt, r.ranks, tuple((i.id, i.content_hash) for i in r.images))
            for r in records]


@pytest.fixture(scope="module")
def default_records():
    return list(load().records())


def test_same_options_give_same_records_hashes_and_pixels():
    a, b = list(load(users=4).records()), list(load(users=4).records())
    assert snapshot(a) == snapshot(b)
    for img_a, img_b in zip(a[0].images, b[0].images):
        assert np.array_equal(np.asarray(img_a.open()), np.asarray(img_b.open()))


def test_different_seeds_differ():
    a, b = snapshot(load(users=4).records()), snapshot(load(users=4, seed=1).records())
    assert {h for r in a for _, h in r[4]}.isdisjoint({h for r in b for _, h in r[4]})
    assert [r[3] for r in a] != [r[3] for r in b]


def test_more_users_extend_without_changing_existing_ones():
    few = snapshot(load(users=3).records())
    more = snapshot(load(users=6).records())
    assert more[: len(few)] == few and len(more) > len(few)


def test_counts_ties_and_distinct_prompts(default_records):
    per_user = Counter(r.user_id for r in default_records)
    assert len(per_user) == 40 and all(5 <= n <= 15 for n in per_user.values())
    assert all(len(r.images) == 4 and sorted(r.ranks)[0] == 1 for r in default_records)
    for user in per_user:
        prompts = [normalize_prompt(r.prompt) for r in default_records if r.user_id == user]
        assert len(prompts) == len(set(prompts))
    assert any(len(set(r.ranks)) < 4 for r in default_records)  # some tied ranks
    assert sum(len(set(r.ranks)) < 4 for r in default_records) < len(default_records) / 4  # but occasional


def test_prompts_are_the_shipped_simple_detail_rows(default_records):
    prompts = demo.load_prompts()
    assert len(prompts) > 200 and all(p.challenge == "Simple Detail" and p.category for p in prompts)
    texts = {p.text for p in prompts}
    assert all(r.prompt in texts and r.source == "demo" and r.source_row for r in default_records)


def test_images_of_a_prompt_are_shared_across_users(default_records):
    by_prompt = {}
    for r in default_records:
        by_prompt.setdefault(r.prompt, set()).add(tuple(i.content_hash for i in r.images))
    assert all(len(v) == 1 for v in by_prompt.values())


def test_images_decode_to_rgb_of_the_requested_size():
    record = next(iter(load(users=1, size=40).records()))
    for img in record.images:
        pil = img.open()
        assert pil.mode == "RGB" and pil.size == (40, 40)
        assert img.read_bytes().startswith(b"\x89PNG")
    pixels = [np.asarray(i.open()) for i in record.images]
    assert not np.array_equal(pixels[0], pixels[1])


def test_known_hash_is_the_rendering_parameters():
    small = next(iter(load(users=1).records())).images[0]
    big = next(iter(load(users=1, size=96).records())).images[0]
    assert small.id == big.id and small.content_hash != big.content_hash  # size is a parameter
    assert len(small.known_hash) == 64
    assert small.content_hash == next(iter(load(users=1).records())).images[0].content_hash


def test_records_and_split_render_no_pixel(monkeypatch):
    def fail(*args):
        raise AssertionError("rendered a pixel")

    monkeypatch.setattr(demo, "render", fail)
    split = load(users=60).split(seed=0, reference_size=4)
    assert split.users == 60 and not split.skipped_users
    assert all(len(ep.references) == 4 for ep in split.episodes)


def test_default_split_uses_four_references_and_has_gold_ties():
    split = load().split(seed=0, reference_size=None)
    golds = Counter(ep.target.gold.value for ep in split.episodes)
    assert split.users == 40 and split.reference_size == 4
    assert golds["TIE"] > 0 and golds["A"] > 0 and golds["B"] > 0


@pytest.mark.parametrize("options, message", [
    ({"userz": "3"}, "unknown option"),
    ({"users": "many"}, "not an integer"),
    ({"users": "0"}, "must be >= 1"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(DatasetError, match=message):
        list(adapters.get("demo")(options=options).records())
