"""Tie-threshold calibration (protocol section 3): Pick-a-Pic's grid search on a disjoint split.

Pick-a-Pic (yuvalkirstain/PickScore ``trainer/scripts/eval_preference_predictor.py``) turns two
scores into probabilities (p_A, p_B) = softmax([s_A, s_B]), predicts a tie when
|p_A - p_B| <= t, tries t in {0, 0.1, ..., 1.0} on a validation split, and keeps the first t
with the best tie-aware accuracy. Since |p_A - p_B| = tanh(scale * |s_A - s_B| / 2), a probability
threshold t is the raw-score threshold ``tau = 2 * atanh(t) / scale``, where ``scale`` is the
evaluator's :attr:`~pigbench.evaluator.Evaluator.calibration_scale` (1 for PickScore, whose scores
already include exp(logit_scale); the logit scale for raw CLIP cosines). t = 1 gives ``tau = inf``
(every pair a tie). An evaluator whose scores are P(A), P(B) themselves
(:attr:`~pigbench.evaluator.Evaluator.scores_are_probabilities`, a judge with ``scoring=probs``)
needs no softmax: the gap is |P(A) - P(B)|, and since its delta is P(A) - 0.5 (protocol section 3),
``tau = t / 2``; its grid stops at t = 0.9, since t = 1 (tau = 0.5) would tie every answer. ``tau`` is what the evaluator's config ``tie_threshold`` holds.

Usage::

    calibration, targets = calibration_split(episodes, fraction=0.2, seed=0)   # disjoint users
    result = calibrate_tie_threshold(evaluator, calibration)                    # scores calibration only
    apply_calibration(evaluator, result)    # config.tie_threshold = result.tau; scores already computed are reused
    predictions = evaluator.predict([ep.without_gold() for ep in targets])

``apply_calibration`` also sets ``evaluator.tie_threshold_source`` (the calibration record), which
the runner stores in the results. On the command line: ``pigbench run --calibrate-tie-threshold
0.2`` calibrates on the targets of the users a seeded hash holds out, each with probability 0.2
(about 20%), and evaluates the others.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Optional, Sequence

from pigbench.evaluator import Evaluator
from pigbench.metrics import credit
from pigbench.protocol import Episode, Label, combine_swapped

PICKAPIC_GRID: tuple[float, ...] = tuple(i / 10 for i in range(11))


@dataclass(frozen=True)
class TieCalibration:
    """The chosen threshold, in probability-gap and raw-score units, with the whole grid's accuracies."""

    tau: float  # the evaluator's delta units (protocol section 3): predict TIE when |delta| <= tau
    probability_threshold: float
    grid: tuple[float, ...]
    acc_w_tie: tuple[float, ...]  # percent, one per grid value
    n: int
    scale: Optional[float]  # the softmax's scale; None when the scores were probabilities
    method: str = "pickapic-softmax-grid"
    swap: bool = False  # each grid value labelled both A/B orders and combined them (protocol section 3)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["tau"] = self.tau if math.isfinite(self.tau) else "inf"
        return d


def probability_gap_to_tau(t: float, scale: Optional[float] = 1.0) -> float:
    """The threshold on delta equivalent to |p_A - p_B| <= t: under softmax([scale*s_A, scale*s_B]),
    or, with ``scale`` None, for probabilities, whose delta is P(A) - 0.5."""
    if scale is None:
        return t / 2
    return math.inf if t >= 1 else 2 * math.atanh(t) / scale


def probability_gap(sa: float, sb: float, scale: Optional[float]) -> float:
    """|p_A - p_B| for two scores (see :func:`probability_gap_to_tau` for ``scale``)."""
    return abs(sa - sb) if scale is None else math.tanh(abs(scale * (sa - sb)) / 2)


def label_at_gap(sa: Optional[float], sb: Optional[float], t: float, scale: Optional[float]) -> Label:
    """The label of two scores at probability-gap threshold ``t`` (INVALID without both scores): what
    the calibration assumes the evaluator answers with ``tie_threshold = probability_gap_to_tau(t, scale)``
    (the conformance check ``tie-threshold`` holds evaluators to it)."""
    if sa is None or sb is None or math.isnan(sa - sb):
        return Label.INVALID
    if probability_gap(sa, sb, scale) <= t:
        return Label.TIE
    return Label.A if sa > sb else Label.B


Scores = Sequence[tuple[Optional[float], Optional[float]]]


def calibrate_from_scores(
    scores: Scores,
    golds: Sequence[Label],
    grid: Sequence[float] = PICKAPIC_GRID,
    scale: Optional[float] = 1.0,
    swapped_scores: Optional[Scores] = None,
) -> TieCalibration:
    """Pick the grid value with the best tie-aware accuracy (first one on ties, as Pick-a-Pic).
    ``scale``: the softmax's, or None for scores that are probabilities (:func:`probability_gap_to_tau`).
    ``swapped_scores``: each sample's scores in the other A/B order, mapped back to (A, B), for a
    position-swap run: at each grid value both orders are labelled and combined by
    :func:`~pigbench.protocol.combine_swapped`, the rule the evaluation applies. For probabilities the
    grid stops below t = 1, which would tie every answer (tau = 0.5, refused by a judge's config check);
    the result's ``grid`` holds the values tried."""
    if scale is None:
        grid = [t for t in grid if t < 1]
        if not grid:
            raise ValueError("the grid has no probability gap below 1; t = 1 or more would tie every answer")
    if len(scores) != len(golds) or not golds or (swapped_scores is not None and len(swapped_scores) != len(golds)):
        raise ValueError(f"need as many scores as golds (and at least one): {len(scores)} vs {len(golds)}")
    accs = []
    for t in grid:
        preds = [label_at_gap(sa, sb, t, scale) for sa, sb in scores]
        if swapped_scores is not None:
            preds = [combine_swapped(p, label_at_gap(sa, sb, t, scale)) for p, (sa, sb) in zip(preds, swapped_scores)]
        accs.append(100 * sum(credit(pred, gold) for pred, gold in zip(preds, golds)) / len(golds))
    best = max(range(len(grid)), key=lambda i: (accs[i], -i))
    return TieCalibration(
        tau=probability_gap_to_tau(grid[best], scale), probability_threshold=grid[best],
        grid=tuple(grid), acc_w_tie=tuple(accs), n=len(golds), scale=scale, swap=swapped_scores is not None,
    )


def calibrate_tie_threshold(
    evaluator: Evaluator, episodes: Sequence[Episode], grid: Sequence[float] = PICKAPIC_GRID, swap: bool = False
) -> TieCalibration:
    """Score the calibration ``episodes`` (gold hidden from the evaluator) and tune the threshold;
    with ``swap`` (a position-swap run) in both A/B orders, tuned for the combined label.

    The evaluator must fill ``score_a``/``score_b`` (scalar and similarity evaluators do; judges with
    ``scoring=probs``); its ``calibration_scale`` and ``scores_are_probabilities`` say how they become
    probabilities, read after scoring (a model may set its scale when loaded). ValueError when no
    episode got both scores (an evaluator that gives none, or every prediction failed): there would
    be nothing to tune, and the grid's first value would be recorded as calibrated.
    """
    predictions = evaluator.predict([ep.without_gold() for ep in episodes])
    if not any(p.score_a is not None and p.score_b is not None for p in predictions):
        errors = Counter(p.error.splitlines()[0] for p in predictions if p.error)
        fix = ("a judge needs --option scoring=probs" if hasattr(evaluator.config, "scoring")
               else "its predict must set them on each prediction")
        why = (f"every prediction failed ({errors.most_common(1)[0][0]})" if sum(errors.values()) == len(predictions)
               else f"it gives no scores (score_a, score_b); {fix}")
        raise ValueError(f"{evaluator.name}: cannot calibrate the tie threshold on {len(episodes)} targets: {why}")
    swapped = None
    if swap:
        seconds = evaluator.predict([ep.without_gold().swapped() for ep in episodes])
        swapped = [(p.score_b, p.score_a) for p in seconds]  # mapped back to (A, B)
    scale = None if evaluator.scores_are_probabilities else evaluator.calibration_scale
    return calibrate_from_scores([(p.score_a, p.score_b) for p in predictions], [ep.target.gold for ep in episodes], grid, scale,
                                 swapped)


def apply_calibration(evaluator: Evaluator, result: TieCalibration) -> None:
    """Set the evaluator's tie threshold to the calibrated tau and record where it came from. A tau
    of infinity (t = 1: every pair a tie) is set as the largest float, which has the same effect on
    finite score differences and stays a number in JSON."""
    if not hasattr(evaluator.config, "tie_threshold"):
        raise TypeError(f"{type(evaluator).__name__} has no tie_threshold to calibrate")
    tau = result.tau if math.isfinite(result.tau) else sys.float_info.max
    evaluator.config = replace(evaluator.config, tie_threshold=tau)
    evaluator.tie_threshold_source = result.to_json()


def describe_calibration(record: Mapping[str, Any]) -> str:
    """A calibration record (:meth:`TieCalibration.to_json`, a results file's ``tie_threshold_source``)
    in words, for tables and pages."""
    return (f"calibrated on {record.get('n')} held-out targets by {record.get('method', 'an unnamed method')}, "
            f"t={record.get('probability_threshold')}")


def calibration_split(episodes: Sequence[Episode], fraction: float, seed: int = 0) -> tuple[list[Episode], list[Episode]]:
    """(calibration, evaluation): whole users go to one side by a seeded hash, so the sets are disjoint."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")

    def in_calibration(user: str) -> bool:
        h = int(hashlib.sha256(f"pigbench-calibration:{seed}:{user}".encode()).hexdigest()[:15], 16)
        return h / 16**15 < fraction

    calibration = [ep for ep in episodes if in_calibration(ep.user_id)]
    evaluation = [ep for ep in episodes if not in_calibration(ep.user_id)]
    if not calibration or not evaluation:
        users = len({ep.user_id for ep in episodes})
        side = "calibration" if not calibration else "evaluation"
        raise ValueError(f"a calibration fraction of {fraction} of {users} users leaves the {side} split empty; "
                         "use more users (or another fraction)")
    return calibration, evaluation
