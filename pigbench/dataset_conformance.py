"""Conformance checks of a dataset adapter plug-in: what ``pigbench check-dataset`` runs.

Each check exercises one clause of the adapter contract (``docs/architecture.md``) and the split
rules of the protocol (``docs/protocol.md``) on the adapter's split at one seed and reference size,
always with fresh instances:

==============  =============================================================================
options         an unknown ``--dataset-option`` is refused with a :class:`DatasetError` naming
                it; the options given come back whole from ``provenance()`` (content and
                location options), which the results file records
determinism     two fresh instances give the same fingerprint, the same episodes (users,
                sample ids, prompts, image ids and content hashes, golds, references) and the
                same skip counts
sample-ids      every sample id is a non-empty string, unique in the split
gold-labels     every target's gold is ``Label.A``, ``Label.B`` or ``Label.TIE``
leakage         no target's normalized prompt or image (by id or content hash) appears in its
                user's references: :class:`pigbench.splits.ReferenceIndex`, the rule the split
                itself applies (images only for an adapter declaring ``shares_prompts``)
reference-size  every episode has K references (at least one for a dynamic size); a K that no
                user can meet gives no episode and counts every user among the skipped ones
skips           every skip count has a reason, a positive count and an example of where; with
                the shared splitter, every user of ``records()`` is either in the split or
                counted as skipped
images          every image of the first episodes (at most ``max_images``) opens; one that does
                not raises :class:`pigbench.protocol.ImageError` naming it, which a run turns into
                that sample's INVALID: those samples are listed, and the check fails only when
                opening raises anything else (it would stop a run)
==============  =============================================================================

Usage::

    report = run_dataset_checks("my-dataset", path="./data", options={"split": "test"})
    print(report.table())
    assert report.ok
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from pigbench.adapter import DatasetAdapter, DatasetError
from pigbench.check_table import CheckReport, CheckResult, more, short
from pigbench.protocol import Episode, ImageError, ImageRef, Label
from pigbench.registry import adapters
from pigbench.requirements_probe import error_text
from pigbench.splits import ReferenceIndex, SplitResult

UNKNOWN_OPTION = "pigbench_check_unknown_option"
UNMET_REFERENCE_SIZE = 100_000  # more reference records than any user has
MAX_IMAGES = 500

_SPLIT_CHECKS = ("determinism", "sample-ids", "gold-labels", "leakage", "reference-size", "skips", "images")


@dataclass
class DatasetReport(CheckReport):
    """The checks' results on an adapter (``subject``), in table order, and the split they ran on."""

    episodes: int = 0
    users: int = 0
    reference_size: Optional[int] = None  # None: dynamic
    fingerprint: str = ""


def run_dataset_checks(
    dataset: Union[str, type[DatasetAdapter]],
    path: Optional[str] = None,
    options: Optional[Mapping[str, str]] = None,
    seed: int = 0,
    reference_size: Optional[int] = None,
    max_images: int = MAX_IMAGES,
) -> DatasetReport:
    """Run every check on ``dataset`` (a registry name or a DatasetAdapter subclass) read from
    ``path`` with ``--dataset-option`` strings ``options``, at ``seed`` and ``reference_size``
    (None: the adapter's default).

    Raises :class:`pigbench.registry.RegistryError` for an unknown name and :class:`DatasetError`
    when the dataset cannot be read as given (a missing path, a bad option value): those are the
    user's to fix. Everything the adapter does wrong is a failed check.
    """
    cls = adapters.get(dataset) if isinstance(dataset, str) else dataset
    name = dataset if isinstance(dataset, str) else (cls.name or cls.__name__)
    options = dict(options or {})
    report = DatasetReport(name)

    def fresh(opts: Mapping[str, str] = options) -> DatasetAdapter:
        adapter = cls(path, dict(opts))
        adapter.name = name  # a class given directly may have no registry name
        return adapter

    first = fresh()
    try:
        split = first.split(seed=seed, reference_size=reference_size)
    except DatasetError:
        raise
    except Exception as exc:
        report.checks.append(CheckResult("split", "fail", f"split() raised {error_text(exc)}; "
                                                          "raise DatasetError naming the file, row or option"))
        report.checks += [CheckResult(n, "not run", "no split") for n in _SPLIT_CHECKS]
        return report
    k = first.default_reference_size if reference_size is None else reference_size
    report.episodes, report.users, report.reference_size = len(split.episodes), split.users, k
    report.fingerprint = split.fingerprint
    report.checks.append(_check_options(fresh, options, first, seed, reference_size))
    report.checks.append(_check_determinism(fresh, split, seed, reference_size))
    report.checks += [_check_sample_ids(split), _check_gold(split), _check_leakage(split, cls.shares_prompts),
                      _check_reference_size(fresh, split, seed, k),
                      _check_skips(fresh, first, split), _check_images(split, max_images)]
    return report


def _check_options(fresh: Any, options: dict[str, str], adapter: DatasetAdapter, seed: int,
                   reference_size: Optional[int]) -> CheckResult:
    name = "options"
    problems = []
    try:
        fresh({**options, UNKNOWN_OPTION: "1"}).split(seed=seed, reference_size=reference_size)
    except DatasetError as exc:
        if UNKNOWN_OPTION not in str(exc):
            problems.append(f"the unknown option {UNKNOWN_OPTION}=1 is refused, but the error does not name it: "
                            f"{short(str(exc))}")
    except Exception as exc:
        problems.append(f"the unknown option {UNKNOWN_OPTION}=1 raises {error_text(exc)}, not a DatasetError naming it")
    else:
        problems.append(f"the unknown option {UNKNOWN_OPTION}=1 is accepted: a misspelt option would be ignored "
                        "silently; refuse it (pigbench.adapter_options.check_options)")
    try:
        provenance = adapter.provenance()
        recorded = {**provenance.get("options", {}), **provenance.get("locations", {})}
    except Exception as exc:
        problems.append(f"provenance() raised {error_text(exc)}")
    else:
        if recorded != options:
            problems.append(f"provenance() records the options {recorded}, not the {options} given: "
                            "the results file would not recreate this split")
    if problems:
        return CheckResult(name, "fail", "; ".join(problems))
    given = ", ".join(f"{k}={v}" for k, v in options.items()) or "none given"
    return CheckResult(name, "pass", f"an unknown option is refused naming it; the options ({given}) "
                                     "round-trip through provenance()")


def _episode_key(ep: Episode) -> tuple:
    """What an episode shows an evaluator, and its gold, as comparable values."""
    t = ep.target

    def image(im: ImageRef) -> tuple[str, str]:
        return im.id, im.content_hash

    refs = tuple((r.record_id, r.prompt, image(r.preferred), image(r.rejected), tuple((image(i), rank) for i, rank in r.ranking))
                 for r in ep.references)
    return ep.user_id, t.sample_id, t.prompt, image(t.image_a), image(t.image_b), t.gold, t.record_id, refs


def _check_determinism(fresh: Any, split: SplitResult, seed: int, reference_size: Optional[int]) -> CheckResult:
    name = "determinism"
    try:
        other = fresh().split(seed=seed, reference_size=reference_size)
    except Exception as exc:
        return CheckResult(name, "fail", f"a second fresh instance's split() raised {error_text(exc)}")
    problems = []
    if other.fingerprint != split.fingerprint:
        problems.append(f"fingerprints {split.fingerprint} vs {other.fingerprint}")
    if len(other.episodes) != len(split.episodes):
        problems.append(f"{len(split.episodes)} vs {len(other.episodes)} episodes")
    try:
        diffs = [f"position {i}: {a.sample_id} vs {b.sample_id}" if a.sample_id != b.sample_id else a.sample_id
                 for i, (a, b) in enumerate(zip(split.episodes, other.episodes)) if _episode_key(a) != _episode_key(b)]
    except ImageError as exc:  # a content hash that cannot be read: the images check lists those
        diffs = []
        problems.append(f"cannot compare images: {short(str(exc))}")
    if diffs:
        problems.append(f"{len(diffs)} episode(s) differ (first: {', '.join(diffs[:2])}{more(diffs, 2)})")
    for label, a, b in (("skipped users", split.skipped_users, other.skipped_users),
                        ("skipped records", split.skipped_records, other.skipped_records)):
        if dict(a) != dict(b):
            problems.append(f"{label} {dict(a)} vs {dict(b)}")
    if problems:
        return CheckResult(name, "fail", "two fresh instances differ: " + "; ".join(problems)
                           + " (order records by a stable key; seed every random choice)")
    return CheckResult(name, "pass", f"two fresh instances give fingerprint {split.fingerprint} and the same "
                                     f"{len(split.episodes)} episodes and skip counts")


def _check_sample_ids(split: SplitResult) -> CheckResult:
    name = "sample-ids"
    bad = [repr(ep.sample_id) for ep in split.episodes if not isinstance(ep.sample_id, str) or not ep.sample_id]
    dupes = [f"{sid} ({n} times)" for sid, n in Counter(ep.sample_id for ep in split.episodes).items() if n > 1]
    problems = ([f"{len(bad)} empty or not a string: {', '.join(bad[:3])}{more(bad, 3)}"] if bad else []) + \
               ([f"{len(dupes)} repeated: {', '.join(dupes[:3])}{more(dupes, 3)}"] if dupes else [])
    if problems:
        return CheckResult(name, "fail", "sample ids " + "; ".join(problems))
    return CheckResult(name, "pass", f"{len(split.episodes)} unique sample ids")


def _check_gold(split: SplitResult) -> CheckResult:
    name = "gold-labels"
    golds = (Label.A, Label.B, Label.TIE)
    bad = [f"{ep.sample_id}: {ep.target.gold!r}" for ep in split.episodes
           if not isinstance(ep.target.gold, Label) or ep.target.gold not in golds]
    if bad:
        return CheckResult(name, "fail", f"{len(bad)} gold(s) not Label.A, Label.B or Label.TIE: "
                                         f"{', '.join(bad[:3])}{more(bad, 3)}")
    counts = Counter(ep.target.gold for ep in split.episodes)
    return CheckResult(name, "pass", " / ".join(f"{g.value} {counts[g]}" for g in golds))


def _check_leakage(split: SplitResult, shares_prompts: bool) -> CheckResult:
    name = "leakage"
    indexes: dict[int, ReferenceIndex] = {}  # a user's episodes usually share one references tuple
    leaks = []
    try:
        for ep in split.episodes:
            index = indexes.get(id(ep.references))
            if index is None:
                index = indexes[id(ep.references)] = ReferenceIndex(ep.references)
            reason = index.leak(ep.target.prompt, (ep.target.image_a, ep.target.image_b), not shares_prompts)
            if reason is not None:
                leaks.append(f"{ep.sample_id}: {reason}")
    except ImageError as exc:
        return CheckResult(name, "fail", f"an image's content hash cannot be read, so leakage cannot be ruled out: "
                                         f"{short(str(exc))}")
    if leaks:
        return CheckResult(name, "fail", f"{len(leaks)} target(s) leak from their user's references: "
                                         f"{'; '.join(leaks[:2])}{more(leaks, 2)} (drop and count them, as "
                                         "pigbench.splits.ReferenceIndex.leak says)")
    if shares_prompts:
        return CheckResult(name, "pass", f"no target's image (by id or content hash) in its user's references "
                                         f"({len(split.episodes)} targets; prompts not compared: the adapter declares "
                                         "shares_prompts, a deviation from the protocol)")
    return CheckResult(name, "pass", f"no target's prompt or image (by id or content hash) in its user's references "
                                     f"({len(split.episodes)} targets)")


def _check_reference_size(fresh: Any, split: SplitResult, seed: int, k: Optional[int]) -> CheckResult:
    name = "reference-size"
    wrong = [f"{ep.sample_id} has {len(ep.references)}" for ep in split.episodes
             if (len(ep.references) != k if k is not None else not ep.references)]
    if wrong:
        wanted = f"K = {k}" if k is not None else "at least 1 (dynamic size)"
        return CheckResult(name, "fail", f"{len(wrong)} episode(s) without {wanted} references: "
                                         f"{', '.join(wrong[:3])}{more(wrong, 3)}")
    try:
        unmet = fresh().split(seed=seed, reference_size=UNMET_REFERENCE_SIZE)
    except DatasetError as exc:
        unmet_note = f"K = {UNMET_REFERENCE_SIZE} refused ({short(str(exc), 80)})"
    except Exception as exc:
        return CheckResult(name, "fail", f"split(reference_size={UNMET_REFERENCE_SIZE}) raised {error_text(exc)}")
    else:
        skipped = sum(unmet.skipped_users.values())
        if unmet.episodes or skipped < split.users:
            return CheckResult(name, "fail", f"with K = {UNMET_REFERENCE_SIZE}, which no user meets, the split has "
                                             f"{len(unmet.episodes)} episode(s) and counts {skipped} skipped user(s) "
                                             f"of {split.users}: a user short of K references must be skipped and "
                                             "counted, not given fewer")
        unmet_note = f"K = {UNMET_REFERENCE_SIZE} leaves no episode and counts all {split.users} users as skipped"
    size = f"{k} references" if k is not None else "1 or more references (dynamic size)"
    return CheckResult(name, "pass", f"every episode has {size}; {unmet_note}")


def _check_skips(fresh: Any, adapter: DatasetAdapter, split: SplitResult) -> CheckResult:
    name = "skips"
    problems = []
    for what, counter in (("skipped_users", split.skipped_users), ("skipped_records", split.skipped_records)):
        for reason, count in counter.items():
            if not isinstance(reason, str) or not reason.strip():
                problems.append(f"{what} has a count without a reason ({reason!r}: {count})")
            elif not isinstance(count, int) or count <= 0:
                problems.append(f"{what}[{reason!r}] is {count!r}, not a positive count")
            elif not split.skip_examples.get(reason):
                problems.append(f"{what}[{reason!r}] has no example of where (skip(reason, where) records one)")
    note = ""
    if type(adapter).split is DatasetAdapter.split:  # the shared splitter: every user of records() is accounted for
        try:
            users = {r.user_id for r in fresh().records()}
        except Exception as exc:
            problems.append(f"records() of a fresh instance raised {error_text(exc)}")
        else:
            skipped = sum(split.skipped_users.values())
            if len(users) != split.users + skipped:
                problems.append(f"records() has {len(users)} users, but the split holds {split.users} and counts "
                                f"{skipped} skipped")
            note = f"; all {len(users)} users of records() accounted for"
    if problems:
        return CheckResult(name, "fail", "; ".join(problems[:3]) + more(problems, 3))
    reasons = split.skipped_users + split.skipped_records
    listing = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common(3)) + more(list(reasons), 3)
    return CheckResult(name, "pass", f"{sum(split.skipped_users.values())} user(s) and "
                                     f"{sum(split.skipped_records.values())} record(s) or pair(s) skipped, "
                                     f"each with a reason ({listing or 'none'}){note}")


def _check_images(split: SplitResult, max_images: int) -> CheckResult:
    name = "images"
    seen: set[str] = set()
    failed: dict[str, list[str]] = {}  # image id -> samples showing it
    errors: dict[str, str] = {}
    for ep in split.episodes:
        shown = (ep.target.image_a, ep.target.image_b,
                 *(im for r in ep.references for im in r.images()))
        for im in shown:
            if im.id in failed:
                failed[im.id].append(ep.sample_id)
            if im.id in seen or len(seen) >= max_images:
                continue
            seen.add(im.id)
            try:
                im.open()
            except ImageError as exc:
                failed[im.id], errors[im.id] = [ep.sample_id], str(exc)
            except Exception as exc:
                return CheckResult(name, "fail", f"image {im.id!r} of sample {ep.sample_id} raises {error_text(exc)} "
                                                 "when opened, not an ImageError naming it: a run would stop there")
    if not failed:
        return CheckResult(name, "pass", f"{len(seen)} image(s) open")
    samples = sorted({s for ids in failed.values() for s in ids})
    first = next(iter(errors.values()))
    return CheckResult(name, "pass", f"{len(seen) - len(failed)} of {len(seen)} image(s) open; {len(failed)} do not, "
                                     f"each named, so a run predicts INVALID for sample(s) {', '.join(samples[:3])}"
                                     f"{more(samples, 3)} (first: {short(first, 100)})")
