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
