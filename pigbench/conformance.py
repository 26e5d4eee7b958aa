"""Conformance checks of an evaluator plug-in: what ``pigbench check-evaluator`` runs.

Each check exercises one clause of the evaluator contract (``docs/architecture.md``) on a few
demo episodes (3 targets from each of the first users), always with fresh instances:

=================  ==========================================================================
config             the config survives JSON and ``--option key=value`` round trips; its hash is
                   the same for equal configs and changes with every scalar field
predictions        ``predict`` returns one :class:`Prediction` per episode, in order, with the
                   episode's sample id, a :class:`Label` and JSON-serializable fields, and not
                   every one a failure (INVALID with an error)
batch-size         predictions are identical with batch sizes 1 and 7
determinism        two fresh instances with the same config give identical predictions
look-ahead         with ``prepare_window`` set, predictions are identical when the episodes went
                   to ``prepare`` first (skipped when it is 0)
corrupt-image      a batch in which one target image cannot be decoded: ``predict`` does not
                   raise, that episode is INVALID with its error (if the image was read), and
                   the other episodes are unchanged
reference-free     an evaluator declaring ``uses_references = False`` never reads a reference image
swap               (evaluators the runner's ``--swap`` applies to: not a ScalarEvaluator) the runner's
                   own swap code gives well-formed predictions, identical with batch sizes 1 and
                   7, no order failing that succeeds alone, the first order the plain answer and
                   the second the swapped pair's answer asked alone; for a pigbench Judge, probe
                   backends (:mod:`pigbench.judging.probe_backends`) show that a model always
                   answering the first image combines to TIE and one preferring the same image
                   in either position keeps it
tie-threshold      (configs with a ``tie_threshold``; a judge with ``scoring=text`` is run with
                   ``scoring=probs``) score_a/score_b are finite (with
                   ``scores_are_probabilities``, in [0, 1] and summing to at most 1), and at tau 0
                   and at a tau between two observed gaps the labels are those the calibration
                   tunes for (:func:`pigbench.calibration.label_at_gap`); tau changes no score
                   and no unscored label
requirements       ``check_requirements`` answers within REQUIREMENTS_TIME_LIMIT_S (nothing or a
                   :class:`RequirementError`); a ``model_path`` that does not exist is refused;
                   in a fresh process with the model packages hidden, it raises a
                   RequirementError, or the evaluator really runs without them
                   (:mod:`pigbench.requirements_probe`)
=================  ==========================================================================

"Identical" means equal labels and raw texts, and scores within ``score_tolerance``. A check
that cannot apply (reference-free for an evaluator that uses references, swap for a scalar
scorer, tie-threshold without a ``tie_threshold`` field) is skipped, saying why; checks
that need predictions are "not run" when the evaluator's requirements are not met here, and
then the report is not ok either. Usage::

    report = run_checks("my-reward", options={"tie_threshold": "0.1"})
    print(report.table())
    assert report.ok
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import tempfile
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from PIL import Image

from pigbench.calibration import label_at_gap, probability_gap, probability_gap_to_tau
from pigbench.check_table import CheckReport, CheckResult, more, short
from pigbench.evaluator import Evaluator, EvaluatorConfig, RequirementError, Runtime
from pigbench.judging.backend import Backend
from pigbench.judging.judge import Judge
from pigbench.judging.probe_backends import FirstImageProbe, SameImageProbe
from pigbench.protocol import Episode, ImageRef, Label, Prediction, ReferencePair
from pigbench.registry import adapters, evaluators
from pigbench.requirements_probe import error_text, probe_in_subprocess, timed
from pigbench.runner import predict_batches, supports_swap

BATCH_SIZES = (1, 7)
TARGETS_PER_USER = 3
REQUIREMENTS_TIME_LIMIT_S = 10.0
MISSING_MODEL_PATH = "/nonexistent/pigbench-check-evaluator/model"
PROBABILITY_SUM_SLACK = 1e-6  # P(A) + P(B) may exceed 1 by rounding


@dataclass
class ConformanceReport(CheckReport):
    """The checks' results on an evaluator (``subject``), in table order, and the sample they ran on."""

    episodes: int = 0
    users: int = 0


# --------------------------------------------------------------------------------------------
# Entry point


def run_checks(
    evaluator: Union[str, type[Evaluator]],
    options: Optional[Mapping[str, str]] = None,
    dataset: str = "demo",
    dataset_path: Optional[str] = None,
    dataset_options: Optional[Mapping[str, str]] = None,
    episodes: int = 24,
    device: str = "cpu",
    score_tolerance: float = 1e-6,
) -> ConformanceReport:
    """Run every check on ``evaluator`` (a registry name or an Evaluator subclass).

    ``options`` are ``--option`` strings for the evaluator's config. Raises only for an unknown
    evaluator name or an unusable dataset; everything the plug-in does wrong is a failed check.
    """
    cls = evaluators.get(evaluator) if isinstance(evaluator, str) else evaluator
    name = evaluator if isinstance(evaluator, str) else (cls.name or cls.__name__)
    options = dict(options or {})
    report = ConformanceReport(name)
    try:
        config = cls.Config.from_options(options)
    except Exception as exc:
        report.checks.append(CheckResult("config", "fail", f"cannot build the config from {options}: {error_text(exc)}"))
        report.checks += [CheckResult(n, "not run", "no config") for n in _PREDICTION_CHECKS + ("requirements",)]
        return report
    options = {k.replace("-", "_"): v for k, v in options.items()}  # one spelling: the checks add fields by name
    report.checks.append(_check_config(cls, name, options, config))
    requirements, unmet = _check_requirements(cls, name, options, config)
    sample = demo_episodes(dataset, dataset_path, dataset_options, episodes)
    report.episodes, report.users = len(sample), len({e.user_id for e in sample})
    if unmet is not None:
        reason = f"requirements not met here: {unmet}"
        report.checks += [CheckResult(n, "not run", reason) for n in _PREDICTION_CHECKS]
    else:
        runs = _Runs(cls, name, config, device, sample, score_tolerance)
        report.checks += [runs.predictions(), runs.batch_size(), runs.determinism(), runs.look_ahead(),
                          runs.corrupt_image(), runs.reference_free(), runs.swap(), runs.tie_threshold()]
    report.checks.append(requirements)
    return report


_PREDICTION_CHECKS = ("predictions", "batch-size", "determinism", "look-ahead", "corrupt-image", "reference-free",
                      "swap", "tie-threshold")


def demo_episodes(
    dataset: str = "demo", dataset_path: Optional[str] = None,
    dataset_options: Optional[Mapping[str, str]] = None, n: int = 24,
) -> list[Episode]:
    """The first ``n`` episodes of the dataset's seed-0 split, at most 3 targets per user."""
    adapter = adapters.get(dataset)(dataset_path, dict(dataset_options or {}))
    split = adapter.split(seed=0, reference_size=None, max_targets_per_user=TARGETS_PER_USER)
    if len(split.episodes) < 2:
        raise ValueError(f"dataset {dataset!r} gives {len(split.episodes)} episodes; the checks need at least 2")
    return split.episodes[:n]


# --------------------------------------------------------------------------------------------
# config


def _check_config(cls: type[Evaluator], name: str, options: dict[str, str], config: EvaluatorConfig) -> CheckResult:
    try:
        data = json.loads(json.dumps(config.to_json()))
    except (TypeError, ValueError) as exc:
        return CheckResult("config", "fail", f"to_json() is not JSON-serializable: {exc}")
    digest = config.hash(name, cls.version)
    problems = []
    try:
        rebuilt = cls.Config(**data)
    except Exception as exc:
        problems.append(f"Config(**to_json()) fails: {error_text(exc)}")
    else:
        if _canon(rebuilt.to_json()) != _canon(data):
            problems.append("a JSON round trip changes the config")
        if rebuilt.hash(name, cls.version) != digest:
            problems.append("the hash changes after a JSON round trip")
    if cls.Config.from_options(options).hash(name, cls.version) != digest:
        problems.append("two configs built from the same options hash differently")
    fields = dataclasses.fields(cls.Config)
    runtime = set(getattr(cls.Config, "runtime_fields", ()))  # declared not to change outputs
    for f in fields:
        value = getattr(config, f.name)
        text = _option_text(value)
        try:
            back = getattr(cls.Config.from_options({**options, f.name: text}), f.name)
        except Exception as exc:
            problems.append(f"--option {f.name}={text} fails: {error_text(exc)}")
            continue
        if _canon(back) != _canon(value):
            problems.append(f"--option {f.name}={text} gives {back!r}, not {value!r}")
        changed = _changed(value)
        if changed is None or f.name in runtime:
            continue
        try:
            other = dataclasses.replace(config, **{f.name: changed})
        except Exception:  # the config refuses that value: nothing to learn
            continue
        if other.hash(name, cls.version) == digest:
            problems.append(f"changing {f.name} does not change the config hash")
    if problems:
        return CheckResult("config", "fail", "; ".join(problems))
    exempt = f" (but the runtime fields {', '.join(sorted(runtime))})" if runtime else ""
    return CheckResult("config", "pass", f"{len(fields)} field(s) round-trip through JSON and --option; "
                                         f"hash {digest} is stable and changes with each field{exempt}")


def _option_text(value: Any) -> str:
    """How a user writes ``value`` on the command line (``--option key=<text>``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)


def _changed(value: Any) -> Any:
    """A different value of the same type, or None for types the check does not vary."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "-changed"
    return None


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# --------------------------------------------------------------------------------------------
# predictions, batch size, determinism, corrupt image, reference-free


class _Runs:
    """Fresh instances predicting the sample episodes; the batch-size-7 run is the baseline."""

    def __init__(self, cls: type[Evaluator], name: str, config: EvaluatorConfig, device: str,
                 episodes: list[Episode], tolerance: float) -> None:
        self.cls, self.name, self.config, self.device = cls, name, config, device
        self.episodes, self.tolerance = episodes, tolerance
        self.baseline: Optional[dict[str, Prediction]] = None
        self.baseline_error = "not computed"
        self.baseline_scores = (False, 1.0)  # the baseline instance's scores_are_probabilities, calibration_scale

    def _run(self, episodes: list[Episode], batch_size: int, look_ahead: bool = False, swap: bool = False,
             config: Optional[EvaluatorConfig] = None, backend: Optional[Backend] = None,
             ) -> tuple[list[tuple[list[Episode], Any]], Evaluator]:
        """(batch, what predict returned) per batch, and the instance: a fresh, set-up instance (of
        ``config``, default the checked one) with an empty cache directory (so no run reuses
        another's answers); with ``look_ahead``, all episodes go to ``prepare`` first, as the runner
        announces a window; with ``swap``, the runner's position-swap code asks both orders; a judge
        gets ``backend`` in place of its own. Raises :class:`RunFailed` saying which call failed."""
        with tempfile.TemporaryDirectory(prefix="pigbench-check-") as cache_dir:
            try:
                evaluator = self.cls(config or self.config,
                                     Runtime(device=self.device, batch_size=batch_size, cache_dir=cache_dir))
                evaluator.name = self.name
                if backend is not None:
                    evaluator.backend = backend  # type: ignore[attr-defined]  # a Judge's, set before setup builds one
                evaluator.setup()
            except Exception as exc:
                raise RunFailed(f"constructor or setup() raised {error_text(exc)}") from exc
            if swap:  # the runner's own code: a failing order becomes INVALID with its error, never raises
                return list(predict_batches(evaluator, episodes, batch_size, swap=True)), evaluator
            if look_ahead:
                try:
                    evaluator.prepare([e.without_gold() for e in episodes])
                except Exception as exc:
                    raise RunFailed(f"prepare() raised {error_text(exc)}") from exc
            out = []
            for i in range(0, len(episodes), batch_size):
                batch = [e.without_gold() for e in episodes[i : i + batch_size]]
                try:
                    out.append((batch, evaluator.predict(batch)))
                except Exception as exc:
                    raise RunFailed(f"predict() raised {error_text(exc)} on the batch of episodes "
                                    f"{i}-{i + len(batch) - 1}") from exc
            return out, evaluator

    def predictions(self) -> CheckResult:
        name = "predictions"
        try:
            batches, evaluator = self._run(self.episodes, BATCH_SIZES[-1])
        except RunFailed as exc:
            self.baseline_error = f"on clean episodes, {exc}"
            return CheckResult(name, "fail", self.baseline_error)
        problems = []
        for batch, preds in batches:
            problems += _output_problems(batch, preds)
        self.baseline = _by_id(batches)
        self.baseline_scores = (evaluator.scores_are_probabilities, evaluator.calibration_scale)
        if problems:
            self.baseline_error = "the baseline run returned malformed output"
            return CheckResult(name, "fail", "; ".join(problems[:3]) + more(problems, 3))
        failed = [p.error for p in self.baseline.values() if p.error]
        if len(failed) == len(self.baseline):  # an unparseable answer is INVALID without an error
            return CheckResult(name, "fail", f"every prediction failed on clean episodes (first error: {short(failed[0])})")
        labels = Counter(p.label.value for p in self.baseline.values())
        counts = " / ".join(f"{lab.value} {labels[lab.value]}" for lab in Label)
        return CheckResult(name, "pass", f"{len(self.episodes)} predictions, in order, labels {counts}")

    def batch_size(self) -> CheckResult:
        return self._compare("batch-size", self.episodes, BATCH_SIZES[0],
                             f"identical with batch sizes {BATCH_SIZES[0]} and {BATCH_SIZES[-1]}")

    def determinism(self) -> CheckResult:
        return self._compare("determinism", self.episodes, BATCH_SIZES[-1],
                             "identical across two fresh instances with the same config")

    def look_ahead(self) -> CheckResult:
        if self.cls.prepare_window <= 0:
            return CheckResult("look-ahead", "skip", "declares no look-ahead (prepare_window = 0)")
        return self._compare("look-ahead", self.episodes, BATCH_SIZES[-1],
                             "identical when the runner announces the episodes to prepare() first", look_ahead=True)

    def _compare(self, name: str, episodes: list[Episode], batch_size: int, ok: str,
                 skip_ids: frozenset[str] = frozenset(), look_ahead: bool = False) -> CheckResult:
        if self.baseline is None:
            return CheckResult(name, "not run", self.baseline_error)
        try:
            got = _by_id(self._run(episodes, batch_size, look_ahead)[0])
        except RunFailed as exc:
            return CheckResult(name, "fail", str(exc))
        diffs = _differences(self.baseline, got, [e.sample_id for e in episodes if e.sample_id not in skip_ids],
                             self.tolerance)
        if diffs:
            return CheckResult(name, "fail", f"{len(diffs)} of {len(episodes)} predictions differ: "
                                             + "; ".join(diffs[:2]) + more(diffs, 2))
        return CheckResult(name, "pass", ok)

    def corrupt_image(self) -> CheckResult:
        name = "corrupt-image"
        if self.baseline is None:
            return CheckResult(name, "not run", self.baseline_error)
        k = min(3, len(self.episodes) - 1)  # inside the first batch, not at its start
        reads: list[int] = []
        bad = _corrupt_image(reads)
        episodes = list(self.episodes)
        victim = episodes[k]
        episodes[k] = dataclasses.replace(victim, target=dataclasses.replace(victim.target, image_a=bad))
        try:
            got = _by_id(self._run(episodes, BATCH_SIZES[-1])[0])
        except RunFailed as exc:
            return CheckResult(name, "fail", f"with one corrupt target image, {exc}; predict must return "
                                             "Prediction.invalid(sample_id, error) for that episode instead")
        pred = got.get(victim.sample_id)
        if pred is None:
            return CheckResult(name, "fail", f"no prediction for the episode with the corrupt image ({victim.sample_id})")
        if reads and (pred.label != Label.INVALID or not pred.error):
            return CheckResult(name, "fail", f"read the corrupt image but answered {pred.label.value} "
                                             f"(error {pred.error!r}); expected INVALID with the error")
        others = [e.sample_id for e in self.episodes if e.sample_id != victim.sample_id]
        diffs = _differences(self.baseline, got, others, self.tolerance)
        if diffs:
            return CheckResult(name, "fail", f"the corrupt image changed {len(diffs)} other prediction(s): {diffs[0]}")
        if not reads:
            return CheckResult(name, "pass", "never reads target images; the other predictions are unchanged")
        return CheckResult(name, "pass", f"one INVALID ({short(pred.error)}); the other {len(others)} unchanged")

    def reference_free(self) -> CheckResult:
        name = "reference-free"
        if self.cls.uses_references:
            return CheckResult(name, "skip", "declares uses_references = True")
        reads: list[str] = []
        episodes = [_trip_references(e, reads) for e in self.episodes]
        result = self._compare(name, episodes, BATCH_SIZES[-1], "never reads the user's reference images")
        if reads:
            return CheckResult(name, "fail", f"read reference images {len(reads)} time(s) (first: {reads[0]}) "
                                             "although it declares uses_references = False")
        return result


    def swap(self) -> CheckResult:
        """The runner's ``--swap`` on this evaluator: well-formed at batch sizes 1 and 7 alike, the
        first order the plain answer, the second the answer to the swapped pair asked alone; for a
        judge, probe models show that a position bias cancels and a preference survives."""
        name = "swap"
        if not supports_swap(self.cls):
            return CheckResult(name, "skip", "scores each image alone (a ScalarEvaluator): the runner refuses --swap")
        if self.baseline is None:
            return CheckResult(name, "not run", self.baseline_error)
        try:
            runs = {bs: _by_id(self._run(self.episodes, bs, swap=True)[0]) for bs in BATCH_SIZES}
            alone = _by_id(self._run([e.swapped() for e in self.episodes], BATCH_SIZES[-1])[0])
        except RunFailed as exc:
            return CheckResult(name, "fail", f"under --swap, {exc}")
        got = runs[BATCH_SIZES[-1]]
        problems = []
        for e in self.episodes:
            sid, plain, swapped = e.sample_id, self.baseline[e.sample_id], alone.get(e.sample_id)
            p = got.get(sid)
            if p is None or swapped is None:
                problems.append(f"{sid}: missing")
                continue
            record = p.extra.get("swap", {})
            if p.error is not None and plain.error is None:
                problems.append(f"{sid}: an order failed under --swap ({short(p.error)}), not asked alone")
            elif (record.get("first"), record.get("raw_first")) != (plain.label.value, plain.raw_text):
                problems.append(f"{sid}: its first order answered {record.get('first')} under --swap, "
                                f"{plain.label.value} without it")
            elif (record.get("second_mapped_back"), record.get("raw_second")) != (swapped.label.swapped().value,
                                                                                   swapped.raw_text):
                problems.append(f"{sid}: the swapped order answered {record.get('second_mapped_back')} (mapped back) "
                                f"after the first, {swapped.label.swapped().value} when asked alone: an answer "
                                "reused by sample id, or the order of the images ignored")
        problems += [f"batch size {BATCH_SIZES[0]} vs {BATCH_SIZES[-1]}: {d}"
                     for d in _differences(got, runs[BATCH_SIZES[0]], [e.sample_id for e in self.episodes], self.tolerance)]
        if problems:
            return CheckResult(name, "fail", f"{len(problems)} problem(s) under --swap: "
                                             + "; ".join(problems[:2]) + more(problems, 2))
        probes = self._swap_probes() if issubclass(self.cls, Judge) else []
        failed = [p for p in probes if p.startswith("FAIL ")]
        if failed:
            return CheckResult(name, "fail", "; ".join(p[len("FAIL "):] for p in failed))
        inconsistent = sum(bool(p.extra.get("swap", {}).get("inconsistent")) for p in got.values())
        return CheckResult(name, "pass", "; ".join([f"the runner's --swap gives well-formed predictions, identical with "
                                                    f"batch sizes {BATCH_SIZES[0]} and {BATCH_SIZES[-1]}, the swapped "
                                                    f"order as asked alone ({inconsistent} inconsistent)"] + probes))

    def _swap_probes(self) -> list[str]:
        """A judge's swap with the probe backends (:mod:`pigbench.judging.probe_backends`): one note
        per probe, starting with "FAIL " when the combined labels are not what the rule implies."""
        targets = [(e.target.image_a.id, e.target.image_b.id) for e in self.episodes]
        probes: list[tuple[str, Any, bool]] = [
            ("a probe model answering the first image", FirstImageProbe(), False),
            ("a probe model preferring the same image in either position", SameImageProbe(targets), True),
        ]
        notes = []
        for what, backend, keeps in probes:
            try:
                got = _by_id(self._run(self.episodes, BATCH_SIZES[-1], swap=True, backend=backend)[0])
            except RunFailed as exc:
                notes.append(f"FAIL with {what}, {exc}")
                continue
            if not backend.answered:
                notes.append(f"{what}: not probed (setup() replaced the backend)")
                continue
            both = [(sid, p) for sid, p in got.items()
                    if {p.extra["swap"]["first"], p.extra["swap"]["second_mapped_back"]} <= {"A", "B"}]
            if not both:
                notes.append(f"{what}: not probed (no order read its answer, 'Image 1 is better.' with <answer>A</answer> or the same for 2 and B, as A or B)")
                continue
            wrong = [(sid, p) for sid, p in both
                     if (p.label.value == p.extra["swap"]["first"]) != keeps or p.extra["swap"]["inconsistent"] == keeps]
            if wrong:
                sid, p = wrong[0]
                expected = p.extra["swap"]["first"] if keeps else "TIE (inconsistent)"
                notes.append(f"FAIL with {what}, {len(wrong)} of {len(both)} swapped predictions are not {expected}: "
                             f"{sid} gave {p.label.value} (first order {p.extra['swap']['first']}, second mapped back "
                             f"{p.extra['swap']['second_mapped_back']}); the swapped order's answer is not about the "
                             "swapped images, or it is mapped back twice")
            else:
                notes.append(f"{what}: {'kept' if keeps else 'cancelled'} in {len(both)} of {len(both)}")
        return notes

    def tie_threshold(self) -> CheckResult:
        """Scores and ``tie_threshold`` as the calibration reads them: finite (probabilities in [0, 1],
        summing to at most 1), and the labels at tau those of :func:`~pigbench.calibration.label_at_gap`,
        the only labels a changed tau changes."""
        name = "tie-threshold"
        if not hasattr(self.config, "tie_threshold"):
            return CheckResult(name, "skip", "no tie_threshold in its config: --tie-threshold and "
                                             "--calibrate-tie-threshold are refused")
        config, via = self.config, ""
        if getattr(config, "scoring", None) == "text":  # a judge: only scoring=probs gives scores
            if not getattr(self.cls, "answer_options", ()):
                return CheckResult(name, "skip", "scoring=text gives no scores and this judge has no "
                                                 "single-token answers for scoring=probs")
            config, via = dataclasses.replace(config, scoring="probs"), " (with scoring=probs)"
        if self.baseline is None:
            return CheckResult(name, "not run", self.baseline_error)
        if config is self.config and config.tie_threshold == 0:  # the baseline run is the run at tau 0
            at_zero, (probabilities, scale) = self.baseline, self.baseline_scores
        else:
            try:
                batches, evaluator = self._run(self.episodes, BATCH_SIZES[-1], config=dataclasses.replace(config, tie_threshold=0.0))
                at_zero = _by_id(batches)
            except RunFailed as exc:
                return CheckResult(name, "fail", f"with tie_threshold=0{via}, {exc}")
            probabilities, scale = evaluator.scores_are_probabilities, evaluator.calibration_scale
        scale = None if probabilities else scale
        scored = {sid: p for sid, p in at_zero.items()
                  if p.error is None and p.score_a is not None and p.score_b is not None}
        if not scored:
            return CheckResult(name, "fail", f"its config has a tie_threshold but no prediction{via} has score_a and "
                                             "score_b: tau has nothing to act on, and --calibrate-tie-threshold refuses it")
        problems = _score_problems(scored, probabilities)
        if problems:
            return CheckResult(name, "fail", "; ".join(problems[:2]) + more(problems, 2))
        gaps = sorted({probability_gap(p.score_a, p.score_b, scale) for p in scored.values()} | {0.0})
        gaps = [g for g in gaps if g < 1]
        k = max(1, len(gaps) // 2)
        t = (gaps[k - 1] + gaps[k]) / 2 if len(gaps) > 1 else 0.0  # between two gaps: no label on the edge
        tau = probability_gap_to_tau(t, scale)
        try:
            at_tau = _by_id(self._run(self.episodes, BATCH_SIZES[-1], config=dataclasses.replace(config, tie_threshold=tau))[0])
        except RunFailed as exc:
            return CheckResult(name, "fail", f"with tie_threshold={tau:.4g}{via}, {exc}")
        rule = "label_from_delta(score_a - 0.5, tau)" if probabilities else "label_from_delta(score_a - score_b, tau)"
        for threshold, gap, preds in ((0.0, 0.0, at_zero), (tau, t, at_tau)):
            for sid, p in preds.items():
                first = at_zero[sid]
                if sid not in scored:  # no scores: tau has nothing to change
                    if (p.label, p.score_a, p.score_b) != (first.label, first.score_a, first.score_b):
                        problems.append(f"{sid}: with tie_threshold={threshold:.4g} it is {p.label.value}, with 0 "
                                        f"{first.label.value}, though it has no scores")
                    continue
                expected = label_at_gap(p.score_a, p.score_b, gap, scale)
                if _score_difference(first, p, self.tolerance):
                    problems.append(f"{sid}: tie_threshold={threshold:.4g} changed its scores")
                elif p.label != expected:
                    problems.append(f"{sid}: with tie_threshold={threshold:.4g} it is {p.label.value}, but its scores "
                                    f"({p.score_a:.4g}, {p.score_b:.4g}) give {expected.value} by {rule}, the rule "
                                    "--calibrate-tie-threshold tunes tau for")
        if problems:
            return CheckResult(name, "fail", "; ".join(problems[:2]) + more(problems, 2))
        ties = sum(p.label == Label.TIE for p in at_tau.values()) - sum(p.label == Label.TIE for p in at_zero.values())
        kind = "probabilities" if probabilities else f"scores (calibration scale {scale:.4g})"
        return CheckResult(name, "pass", f"{len(scored)} predictions{via} with finite {kind}; labels follow {rule} "
                                         f"at tau 0 and {tau:.4g} ({ties} more tie(s)), unscored ones unchanged")


def _score_problems(scored: dict[str, Prediction], probabilities: bool) -> list[str]:
    """Scores that are not finite, or, for ``scores_are_probabilities``, not P(A), P(B) in [0, 1]
    summing to at most 1 (+ PROBABILITY_SUM_SLACK)."""
    problems = []
    for sid, p in scored.items():
        pair = (p.score_a, p.score_b)
        if not all(math.isfinite(x) for x in pair):
            problems.append(f"{sid}: scores {pair} are not finite")
        elif probabilities and not all(0 <= x <= 1 for x in pair):
            problems.append(f"{sid}: scores {pair} are not probabilities in [0, 1] (scores_are_probabilities = True)")
        elif probabilities and sum(pair) > 1 + PROBABILITY_SUM_SLACK:
            problems.append(f"{sid}: P(A) + P(B) = {sum(pair):.6g} > 1")
    return problems


def _output_problems(batch: list[Episode], preds: Any) -> list[str]:
    """What is wrong with ``predict``'s output for ``batch``: count, order, types, labels, JSON."""
    if not isinstance(preds, list):
        return [f"predict returned {type(preds).__name__}, not a list"]
    if len(preds) != len(batch):
        return [f"predict returned {len(preds)} predictions for {len(batch)} episodes"]
    problems = []
    for pos, (ep, p) in enumerate(zip(batch, preds)):
        if not isinstance(p, Prediction):
            problems.append(f"position {pos}: {type(p).__name__}, not a Prediction")
        elif p.sample_id != ep.sample_id:
            problems.append(f"position {pos}: sample {p.sample_id!r}, expected {ep.sample_id!r} (reordered output)")
        elif not isinstance(p.label, Label):
            problems.append(f"sample {p.sample_id!r}: label {p.label!r} is not a pigbench.protocol.Label")
        else:
            try:
                json.dumps(p.to_json())
            except (TypeError, ValueError) as exc:
                problems.append(f"sample {p.sample_id!r}: not JSON-serializable ({exc})")
    return problems


def _by_id(batches: list[tuple[list[Episode], Any]]) -> dict[str, Prediction]:
    return {p.sample_id: p for _, preds in batches for p in preds if isinstance(p, Prediction)}


def _differences(expected: dict[str, Prediction], got: dict[str, Prediction], ids: list[str], tol: float) -> list[str]:
    out = []
    for sid in ids:
        a, b = expected.get(sid), got.get(sid)
        if a is None or b is None:
            out.append(f"{sid}: missing")
        elif a.label != b.label:
            out.append(f"{sid}: {a.label.value} vs {b.label.value}")
        elif a.raw_text != b.raw_text:
            out.append(f"{sid}: raw text differs")
        elif difference := _score_difference(a, b, tol):
            out.append(f"{sid}: {difference}")
    return out


def _score_difference(a: Prediction, b: Prediction, tol: float) -> Optional[str]:
    """The first score of ``a`` and ``b`` that differs (one missing, or beyond ``tol`` relative and
    absolute), as "score_a X vs Y"; None when both scores agree."""
    for side in ("score_a", "score_b"):
        x, y = getattr(a, side), getattr(b, side)
        if (x is None) != (y is None) or (x is not None and not math.isclose(x, y, rel_tol=tol, abs_tol=tol)):
            return f"{side} {x!r} vs {y!r}"
    return None


def _corrupt_image(reads: list[int]) -> ImageRef:
    """A truncated PNG; ``reads`` grows each time its bytes are fetched (its hash is known)."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buf, format="PNG")
    data = buf.getvalue()[:60]

    def load() -> bytes:
        reads.append(1)
        return data

    return ImageRef("conformance/corrupt-image.png", load, known_hash=hashlib.sha256(data).hexdigest())


class RunFailed(RuntimeError):
    """A check's run of the evaluator raised; the message says in which call."""


class ReferenceRead(RuntimeError):
    """Raised by the reference images of the reference-free check."""


def _trip_references(episode: Episode, reads: list[str]) -> Episode:
    """The episode with every reference image replaced by one that records and refuses any read."""

    def tripwire(image: ImageRef) -> ImageRef:
        def load() -> bytes:
            reads.append(image.id)
            raise ReferenceRead(f"reference image {image.id!r} read by a reference-free evaluator")

        return ImageRef(image.id, load)  # no known hash: even hashing it reads it

    refs = tuple(ReferencePair(r.prompt, tripwire(r.preferred), tripwire(r.rejected), r.record_id)
                 for r in episode.references)
    return dataclasses.replace(episode, references=refs)


# --------------------------------------------------------------------------------------------
# requirements


def _check_requirements(
    cls: type[Evaluator], name: str, options: dict[str, str], config: EvaluatorConfig
) -> tuple[CheckResult, Optional[str]]:
    """The requirements check, and the RequirementError message if this config's requirements
    are not met here (then the evaluator cannot be run)."""
    notes, problems = [], []
    unmet = None
    outcome, seconds = timed(cls.check_requirements, config)
    if isinstance(outcome, RequirementError):
        unmet = str(outcome) or "RequirementError without a message"
        if not str(outcome).strip():
            problems.append("RequirementError with an empty message")
    elif isinstance(outcome, Exception):
        problems.append(f"check_requirements raised {error_text(outcome)}; raise RequirementError naming what is missing")
        unmet = error_text(outcome)
    notes.append(f"this config: {'met' if unmet is None else 'not met'} ({seconds:.2f} s)")
    if seconds > REQUIREMENTS_TIME_LIMIT_S:
        problems.append(f"check_requirements took {seconds:.1f} s (limit {REQUIREMENTS_TIME_LIMIT_S:.0f} s): it must look, not load")

    if any(f.name == "model_path" for f in dataclasses.fields(cls.Config)):
        missing = dataclasses.replace(config, model_path=MISSING_MODEL_PATH)
        outcome, seconds = timed(cls.check_requirements, missing)
        if isinstance(outcome, RequirementError):
            notes.append(f"missing model_path refused ({seconds:.2f} s)")
        elif outcome is None:
            problems.append(f"model_path={MISSING_MODEL_PATH} (does not exist) passes check_requirements; "
                            "the run would fail later, inside setup()")
        else:
            problems.append(f"a missing model_path raises {error_text(outcome)}, not RequirementError")

    probe = probe_in_subprocess(cls, options, run_model=unmet is None)
    verdict = probe.get("outcome")
    hidden = _listing(probe.get("hidden", []))
    if verdict == "requirement-error":
        notes.append(f"without {hidden}: RequirementError ({probe['seconds']:.2f} s)")
    elif verdict in ("runs-without", "met-not-run"):
        notes.append(f"without {hidden}: {'runs' if verdict == 'runs-without' else 'requirements met'}")
    elif verdict == "import-failed":
        problems.append(f"importing the plug-in fails without {hidden} ({probe['error']}): "
                        "import heavy packages inside functions")
    elif verdict == "import-error-later":
        problems.append(f"check_requirements passes without {hidden}, then the evaluator fails: {probe['error']}")
    else:
        problems.append(f"with {hidden} hidden: {probe.get('error', verdict)}")
    if verdict in ("requirement-error", "runs-without", "met-not-run") and probe.get("seconds", 0) > REQUIREMENTS_TIME_LIMIT_S:
        problems.append(f"check_requirements took {probe['seconds']:.1f} s without {hidden}")
    if problems:
        return CheckResult("requirements", "fail", "; ".join(problems)), unmet
    return CheckResult("requirements", "pass", "; ".join(notes)), unmet


def _listing(names: list[str], shown: int = 3) -> str:
    """"torch, transformers, open_clip (+10 more)": the best-known names first."""
    first = sorted(names, key=lambda n: (n not in ("torch", "transformers", "open_clip"), n))
    return (", ".join(first[:shown]) or "nothing") + (f" (+{len(first) - shown} more)" if len(first) > shown else "")
