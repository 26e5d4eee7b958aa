"""The dataset conformance checks (``pigbench check-dataset``): every built-in adapter conforms on its
test fixture; toy adapters that each break one clause fail that check with a message saying what."""

import dataclasses
import itertools
import pickle
from typing import Iterable, Optional

import pytest

from fixtures_adapters import write_pickapic
from pigbench.adapter import DatasetAdapter, DatasetError
from pigbench.cli import main as pigbench
from pigbench.dataset_conformance import UNKNOWN_OPTION, run_dataset_checks
from pigbench.protocol import Episode, ImageRef, Label, PreferenceRecord
from pigbench.splits import SplitResult, fingerprint
from test_adapter_learn_user_pref import TEST_ROWS, frame
from test_adapter_pasta import build as build_pasta
from test_adapter_pickapic import fixture_rows
from test_adapter_pigbench import build as build_pigbench
from test_adapter_pip import build as build_pip
from toy import grey

CHECKS = ["options", "determinism", "sample-ids", "gold-labels", "leakage", "reference-size", "skips", "images"]


def _pickapic(tmp_path):
    meta, images = tmp_path / "pickapic_v2_no_images", tmp_path / "pickapic_v2"
    write_pickapic(meta, fixture_rows(), images=False, shards=2, row_group_size=16)
    write_pickapic(images, fixture_rows(), images=True, shards=3, row_group_size=3)
    return str(meta), {"images_path": str(images)}


def _pip(tmp_path):
    root, images = build_pip(tmp_path / "pip")
    return str(root), {"images": str(images)}


BUILT_IN = {  # dataset -> (tmp_path -> (path, options)), from the adapters' own test fixtures
    "demo": lambda tmp_path: (None, {"users": "6"}),
    "pigbench": lambda tmp_path: (str(build_pigbench(tmp_path / "pigbench")), {}),
    "pickapic": _pickapic,
    "pip": _pip,
    "pasta": lambda tmp_path: (str(build_pasta(tmp_path / "pasta")), {}),
}


@pytest.mark.parametrize("dataset", sorted(BUILT_IN))
def test_every_built_in_adapter_conforms_on_its_fixture(dataset, tmp_path):
    path, options = BUILT_IN[dataset](tmp_path)
    report = run_dataset_checks(dataset, path, options)
    assert [c.name for c in report.checks] == CHECKS
    assert report.ok, report.table()
    assert report.episodes > 0 and report.fingerprint


def test_learn_user_pref_conforms_and_its_corrupt_image_is_named_per_sample(tmp_path):
    with (tmp_path / "bench_test_w_bad.pkl").open("wb") as fh:  # as test_adapter_learn_user_pref's fixture writes it
        pickle.dump(frame(TEST_ROWS), fh, protocol=4)
    report = run_dataset_checks("pickapic-lup", str(tmp_path))
    assert report.ok, report.table()
    assert report.reference_size == 8
    images = report.detail("images")
    assert "1 do not" in images and "bench_test_w_bad:1" in images, images  # the corrupt target, named


def test_fixture_skips_are_listed_with_their_reasons(tmp_path):
    report = run_dataset_checks("pigbench", str(build_pigbench(tmp_path / "pigbench")))
    # RANKINGS there: u2 and u4 always leak, u3 has one ranked set; u1 is the only user split
    assert report.detail("skips").startswith("3 user(s) and 2 record(s) or pair(s) skipped, each with a reason "
                                              "(no target left after leakage checks 2, fewer than 2 ranked sets 1, ")
    assert report.detail("skips").endswith("; all 4 users of records() accounted for")


def test_cli_prints_the_table_and_exits_0_1_or_2(tmp_path, capsys):
    assert pigbench(["check-dataset", "demo", "--dataset-option", "users=4", "--seed", "3", "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert "seed 3, reference size 2" in out and "demo: conforms (8 pass)" in out
    assert "every episode has 2 references" in out
    assert pigbench(["check-dataset", "dmeo"]) == 2
    assert "unknown dataset 'dmeo'; did you mean 'demo'?" in capsys.readouterr().err
    assert pigbench(["check-dataset", "demo", "--dataset-option", "users=zero"]) == 2
    assert "users='zero' is not an integer" in capsys.readouterr().err
    assert pigbench(["check-dataset", "demo", "--k", "-1"]) == 2
    assert "--k must be >= 0" in capsys.readouterr().err


# ---- toy adapters, each breaking one clause ------------------------------------------------------


class Sound(DatasetAdapter):
    """Four users ranking two grey images per prompt: conforms."""

    default_reference_size = 2
    OPTIONS = {"users": "number of users"}

    def records(self) -> Iterable[PreferenceRecord]:
        unknown = set(self.options) - set(self.OPTIONS)
        if unknown:
            raise DatasetError(f"toy: unknown option(s) {', '.join(sorted(unknown))}")
        for u, r in itertools.product(range(int(self.options.get("users", 4))), range(4)):
            n = 8 * u + 2 * r
            yield PreferenceRecord(f"u{u}-r{r}", f"user{u}", f"prompt {u} {r}", (grey(n), grey(n + 1)),
                                   (1, 2) if r % 3 else (2, 1))


def run(cls: type[DatasetAdapter], options: Optional[dict] = None):
    return run_dataset_checks(cls, None, options or {})


def test_the_sound_toy_conforms():
    report = run(Sound, {"users": "3"})
    assert report.ok, report.table()
    assert "all 3 users of records() accounted for" in report.detail("skips")


class Shuffled(Sound):
    """Record ids drawn afresh by every instance: the split differs between two instances."""

    instances = itertools.count()

    def records(self) -> Iterable[PreferenceRecord]:
        salt = next(self.instances)
        for rec in super().records():
            yield dataclasses.replace(rec, record_id=f"{rec.record_id}-{salt}")


def test_a_non_deterministic_adapter_fails_determinism_naming_the_fingerprints():
    report = run(Shuffled)
    assert report.status("determinism") == "fail" and not report.ok
    detail = report.detail("determinism")
    assert detail.startswith("two fresh instances differ: fingerprints ") and "episode(s) differ" in detail, detail
    assert "seed every random choice" in detail


class Leaking(Sound):
    """Its own split, which shows each target's first image in the references too."""

    def split(self, seed: int, reference_size: Optional[int], max_targets_per_user: Optional[int] = None) -> SplitResult:
        result = super().split(seed, reference_size, max_targets_per_user)
        result.episodes = [dataclasses.replace(e, references=(
            dataclasses.replace(e.references[0], rejected=e.target.image_a), *e.references[1:]))
            for e in result.episodes]
        result.fingerprint = fingerprint(result.episodes)
        return result


def test_a_leaking_adapter_fails_leakage_naming_the_sample():
    report = run(Leaking)
    assert report.status("leakage") == "fail"
    detail = report.detail("leakage")
    assert "target(s) leak from their user's references: user0/" in detail
    assert "target image appears in the user's references" in detail


class Sloppy(Sound):
    """Accepts any option, gives duplicate sample ids, an INVALID gold, a short reference list
    without counting it, and a skip count without a reason."""

    def records(self) -> Iterable[PreferenceRecord]:
        self.options = {k: v for k, v in self.options.items() if k in self.OPTIONS}  # the others, silently dropped
        yield from super().records()
        self.skip("", "nowhere")

    def split(self, seed: int, reference_size: Optional[int], max_targets_per_user: Optional[int] = None) -> SplitResult:
        result = super().split(seed, reference_size, max_targets_per_user)
        first, second = result.episodes[:2]
        result.episodes[1] = Episode(second.user_id, second.references,
                                     dataclasses.replace(second.target, sample_id=first.sample_id, gold=Label.INVALID))
        result.episodes[2] = dataclasses.replace(result.episodes[2], references=result.episodes[2].references[:1])
        return result


def test_a_sloppy_adapter_fails_each_check_it_breaks():
    report = run(Sloppy, {"users": "4"})
    failed = {c.name: c.detail for c in report.checks if c.status == "fail"}
    assert set(failed) == {"options", "sample-ids", "gold-labels", "reference-size", "skips"}, report.table()
    assert f"the unknown option {UNKNOWN_OPTION}=1 is accepted" in failed["options"]
    assert "1 repeated: user0/" in failed["sample-ids"]
    assert "<Label.INVALID: 'INVALID'>" in failed["gold-labels"]
    assert "without K = 2 references" in failed["reference-size"] and "has 1" in failed["reference-size"]
    assert "count without a reason" in failed["skips"]


class Unmet(Sound):
    """Gives every user as many references as it has when K is more than that, without counting."""

    def split(self, seed: int, reference_size: Optional[int], max_targets_per_user: Optional[int] = None) -> SplitResult:
        return super().split(seed, min(reference_size or 2, 2), max_targets_per_user)


def test_an_adapter_ignoring_an_unmet_reference_size_fails():
    report = run(Unmet)
    assert report.status("reference-size") == "fail"
    assert "which no user meets, the split has" in report.detail("reference-size")


class LoaderBug(ImageRef):
    """An image whose ``open`` raises a bare RuntimeError (not ImageError): a run would stop there."""

    def open(self, rgba_background=None):
        raise RuntimeError("loader bug")


class BadImage(Sound):
    """One record shows a :class:`LoaderBug` image."""

    def records(self) -> Iterable[PreferenceRecord]:
        for rec in super().records():
            if rec.record_id == "u1-r3":
                rec = dataclasses.replace(rec, images=(rec.images[0], LoaderBug("bad", b"", known_hash="h-bad")))
            yield rec


def test_an_image_raising_other_than_image_error_fails_the_images_check():
    report = run(BadImage)
    detail = report.detail("images")
    assert report.status("images") == "fail" and "image 'bad' of sample user1/u1-r3/0-1 raises RuntimeError" in detail, detail


class Crashing(Sound):
    def split(self, seed: int, reference_size: Optional[int], max_targets_per_user: Optional[int] = None) -> SplitResult:
        raise KeyError("user_id")


def test_a_split_raising_a_bug_fails_and_the_other_checks_are_not_run():
    report = run(Crashing)
    assert report.checks[0].name == "split" and report.status("split") == "fail"
    assert "split() raised KeyError" in report.detail("split")
    assert {c.status for c in report.checks[1:]} == {"not run"}


# ---- more toys (mutation audit): each clause the checks above left unexercised -------------------


class RefusesVaguely(Sound):
    """Refuses an unknown option without saying which."""

    def records(self) -> Iterable[PreferenceRecord]:
        if set(self.options) - set(self.OPTIONS):
            raise DatasetError("toy: bad options")
        yield from super().records()


class ForgetsOptions(Sound):
    """Records no options in its provenance."""

    def provenance(self) -> dict:
        return {**super().provenance(), "options": {}}


class FlipsGold(Sound):
    """Each instance after the first flips its first episode's gold: same sample ids, other contents."""

    instances = itertools.count()

    def split(self, seed: int, reference_size: Optional[int], max_targets_per_user: Optional[int] = None) -> SplitResult:
        result = super().split(seed, reference_size, max_targets_per_user)
        if next(self.instances):
            first = result.episodes[0]
            flipped = Label.B if first.target.gold == Label.A else Label.A
            result.episodes[0] = dataclasses.replace(first, target=dataclasses.replace(first.target, gold=flipped))
        return result


class UncountedUnmet(Sound):
    """Gives no episode when no user has K references, but counts no skipped user."""

    def split(self, seed: int, reference_size: Optional[int], max_targets_per_user: Optional[int] = None) -> SplitResult:
        if (reference_size or 0) > 3:
            return SplitResult([], self.name, seed, reference_size)
        return super().split(seed, reference_size, max_targets_per_user)


class ExtraReference(Sound):
    """Gives its first episode one reference more than K."""

    def split(self, seed: int, reference_size: Optional[int], max_targets_per_user: Optional[int] = None) -> SplitResult:
        result = super().split(seed, reference_size, max_targets_per_user)
        first = result.episodes[0]
        result.episodes[0] = dataclasses.replace(first, references=(*first.references, first.references[0]))
        return result


class BadSkipCounts(Sound):
    """Counts a reason zero times, and another without an example of where."""

    def split(self, seed: int, reference_size: Optional[int], max_targets_per_user: Optional[int] = None) -> SplitResult:
        result = super().split(seed, reference_size, max_targets_per_user)
        result.skipped_records["never happened"] = 0
        result.skipped_records["dropped"] += 2
        return result


class GrowingRecords(Sound):
    """records() of each instance after the first has one user more than the split holds."""

    instances = itertools.count()

    def records(self) -> Iterable[PreferenceRecord]:
        yield from super().records()
        if getattr(self, "_late", None) is None:
            self._late = next(self.instances)
        if self._late:
            yield PreferenceRecord("late", "late-user", "prompt late", (grey(200), grey(201)), (1, 2))


class SharedCorruptImage(Sound):
    """A reference record of user1 (u1-r0, in both its episodes) shows an image that does not decode
    (an ImageError): each sample showing it is named."""

    def records(self) -> Iterable[PreferenceRecord]:
        for rec in super().records():
            if rec.record_id == "u1-r0":
                rec = dataclasses.replace(rec, images=(rec.images[0], ImageRef("corrupt", b"not an image")))
            yield rec


def test_toys_breaking_the_remaining_clauses_fail_their_checks_saying_what():
    refused = run(RefusesVaguely)
    assert refused.status("options") == "fail"
    assert f"the unknown option {UNKNOWN_OPTION}=1 is refused, but the error does not name it: toy: bad options" \
        in refused.detail("options")
    forgot = run(ForgetsOptions, {"users": "3"})
    assert forgot.status("options") == "fail"
    assert "provenance() records the options {}, not the {'users': '3'} given" in forgot.detail("options")
    flips = run(FlipsGold)
    assert flips.status("determinism") == "fail"
    assert "1 episode(s) differ (first: user0/" in flips.detail("determinism"), flips.detail("determinism")
    unmet = run(UncountedUnmet)
    assert unmet.status("reference-size") == "fail"
    assert "has 0 episode(s) and counts 0 skipped user(s) of 4" in unmet.detail("reference-size")
    extra = run(ExtraReference)
    assert extra.status("reference-size") == "fail"
    assert "1 episode(s) without K = 2 references: user0/" in extra.detail("reference-size")
    assert "has 3" in extra.detail("reference-size")
    skips = run(BadSkipCounts)
    assert skips.status("skips") == "fail"
    assert "skipped_records['never happened'] is 0, not a positive count" in skips.detail("skips")
    assert "skipped_records['dropped'] has no example of where" in skips.detail("skips")
    grown = run(GrowingRecords)
    assert grown.status("skips") == "fail"
    assert "records() has 5 users, but the split holds 4 and counts 0 skipped" in grown.detail("skips")


def test_every_sample_showing_a_corrupt_image_is_named():
    report = run(SharedCorruptImage)
    assert report.status("images") == "pass", report.table()
    images = report.detail("images")
    samples = [ep.sample_id for ep in SharedCorruptImage(None, {}).split(0, None).episodes
               if "u1-r0" in {r.record_id for r in ep.references}]
    assert samples == ["user1/u1-r2/0-1", "user1/u1-r3/0-1"]
    assert "1 do not, each named, so a run predicts INVALID for sample(s) user1/u1-r2/0-1, user1/u1-r3/0-1 " \
        "(first: " in images, images


def test_cli_passes_seed_k_and_max_images_and_exits_1_when_a_check_fails(capsys, monkeypatch):
    from pigbench.registry import adapters

    assert pigbench(["check-dataset", "demo", "--dataset-option", "users=4", "--seed", "3", "--k", "0",
                     "--max-images", "3"]) == 0
    out = capsys.readouterr().out
    split = adapters.get("demo")(None, {"users": "4"}).split(seed=3, reference_size=0)
    assert f"fingerprint {split.fingerprint}\n" in out and "every episode has 0 references" in out
    assert "3 image(s) open" in out
    assert pigbench(["check-dataset", "demo", "--max-images", "0"]) == 2
    assert "--max-images must be >= 1, got 0" in capsys.readouterr().err
    monkeypatch.setattr(adapters, "_entries", dict(adapters._entries))  # the registration below is undone
    adapters.register("toy-sloppy")(type("RegisteredSloppy", (Sloppy,), {}))  # Sloppy's own name unchanged
    assert pigbench(["check-dataset", "toy-sloppy"]) == 1
    assert "toy-sloppy: DOES NOT CONFORM (3 pass, 5 fail)" in capsys.readouterr().out
