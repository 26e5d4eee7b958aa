"""pigbench's metrics against a reference written straight from the protocol spec, section 4.

The reference below (``spec_*``) was written from ``shared/specs/protocol_and_metrics.md`` and
``docs/protocol.md`` alone, without reading ``pigbench/metrics.py``: plain loops over exact
fractions, one rule per line. Hypothesis generates small prediction sets (single users, users
whose golds are all ties, all-INVALID users, swap flags) and every point metric, diagnostic and
per-user row must equal the reference's. The spec pins the bootstrap only as "a cluster bootstrap
that resamples users, 1,000 resamples, fixed seed, recorded, 95%"; the resampling draws are
implementation-defined, so the CIs are checked by properties: absent exactly when fewer than two
users contribute, seeded and deterministic, inside the range the resampled statistic can take,
narrower with more users.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pigbench.calibration import calibrate_from_scores, label_at_gap
from pigbench.metrics import ACCURACIES, Judged, compute_metrics, credit
from pigbench.protocol import Label, combine_swapped

A, B, T, I = Label.A, Label.B, Label.TIE, Label.INVALID
DECISIVE = (A, B)

# ---------------------------------------------------------------- the reference, from the spec

# Section 4's table, row = prediction, column = gold.
SPEC_CREDIT = {
    A: {A: Fraction(1), B: Fraction(0), T: Fraction(1, 2)},
    B: {A: Fraction(0), B: Fraction(1), T: Fraction(1, 2)},
    T: {A: Fraction(1, 2), B: Fraction(1, 2), T: Fraction(1)},
    I: {A: Fraction(1, 2), B: Fraction(1, 2), T: Fraction(1, 2)},
}


def spec_swap(first: Label, second: Label) -> Label:
    """Section 3: agreeing decisive answers give that side, disagreeing ones give TIE, one INVALID
    uses the other, two give INVALID."""
    if first == I and second == I:
        return I
    if first == I:
        return second
    if second == I:
        return first
    if first == second:
        return first
    return T


def _pct(num: Fraction, den: int) -> Optional[float]:
    return None if den == 0 else float(100 * num / den)


def spec_user_row(pairs: list[tuple[Label, Label]]) -> dict:
    """One user's (gold, pred) pairs -> n, |S|, and the three accuracies (None where undefined)."""
    n = len(pairs)
    in_s = [(g, p) for g, p in pairs if g != T]
    committed = [(g, p) for g, p in in_s if p in DECISIVE]
    return {
        "n": n,
        "n_decisive_gold": len(in_s),
        "acc_w_tie": _pct(sum((SPEC_CREDIT[p][g] for g, p in pairs), Fraction(0)), n),
        "acc_wo_tie": _pct(Fraction(sum(p == g for g, p in in_s)), len(in_s)),
        "decisive_acc": _pct(Fraction(sum(p == g for g, p in committed)), len(committed)),
    }


def spec_metrics(samples: list[Judged]) -> dict:
    """Every point metric of section 4 (no CIs), and for each accuracy the users contributing to it."""
    by_user: dict[str, list[tuple[Label, Label]]] = {}
    for s in samples:
        by_user.setdefault(s.user_id, []).append((s.gold, s.pred))
    pairs = [(s.gold, s.pred) for s in samples]
    n = len(pairs)
    in_s = [(g, p) for g, p in pairs if g != T]
    committed = [(g, p) for g, p in in_s if p in DECISIVE]
    rows = {u: spec_user_row(ps) for u, ps in by_user.items()}
    micro = {
        "acc_w_tie": _pct(sum((SPEC_CREDIT[p][g] for g, p in pairs), Fraction(0)), n),
        "acc_wo_tie": _pct(Fraction(sum(p == g for g, p in in_s)), len(in_s)),
        "decisive_acc": _pct(Fraction(sum(p == g for g, p in committed)), len(committed)),
    }
    out: dict = {
        "n": n,
        "n_decisive_gold": len(in_s),
        "gold_ties": sum(g == T for g, _ in pairs),
        "users": len(by_user),
        "predicted_tie_rate": sum(p == T for _, p in pairs) / n,
        "invalid_rate": sum(p == I for _, p in pairs) / n,
        "coverage": None if not in_s else len(committed) / len(in_s),
        "per_user": rows,
        "contributing": {},
    }
    flags = [s.swap_inconsistent for s in samples if s.swap_inconsistent is not None]
    out["swap_inconsistency_rate"] = sum(flags) / len(flags) if flags else None
    for name in ACCURACIES:
        # macro: the mean of the per-user accuracies over the users that have one
        values = [Fraction(r[name]) for r in rows.values() if r[name] is not None]
        out[name] = {"micro": micro[name], "macro": float(sum(values) / len(values)) if values else None}
        out["contributing"][name] = [u for u, r in rows.items() if r[name] is not None]
    return out


# ---------------------------------------------------------------- generated prediction sets

labels = st.sampled_from([A, B, T, I])
golds = st.sampled_from([A, B, T])


@st.composite
def user_targets(draw, user: str, swap: bool) -> list[Judged]:
    """One user's targets; some users only have gold ties or only INVALID predictions."""
    kind = draw(st.sampled_from(["mixed", "mixed", "mixed", "gold_ties", "all_invalid", "all_tie_pred"]))
    k = draw(st.integers(min_value=0, max_value=6))  # 0: the user has no targets at all (absent)
    out = []
    for _ in range(k):
        gold = T if kind == "gold_ties" else draw(golds)
        pred = I if kind == "all_invalid" else T if kind == "all_tie_pred" else draw(labels)
        flag = draw(st.one_of(st.none(), st.booleans())) if swap else None
        out.append(Judged(user, gold, pred, flag))
    return out


@st.composite
def prediction_sets(draw, max_users: int = 6) -> list[Judged]:
    swap = draw(st.booleans())
    n_users = draw(st.integers(min_value=1, max_value=max_users))
    samples: list[Judged] = []
    for u in range(n_users):
        samples += draw(user_targets(f"u{u}", swap))
    if not samples:  # at least one target: an empty set is its own test below
        samples = [Judged("u0", draw(golds), draw(labels))]
    # targets of different users interleave in a results file
    return draw(st.permutations(samples))


def _close(a: Optional[float], b: Optional[float]) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


# ---------------------------------------------------------------- exhaustive small tables


@pytest.mark.parametrize("pred", [A, B, T, I])
@pytest.mark.parametrize("gold", [A, B, T])
def test_the_credit_table_equals_the_spec(pred, gold):
    assert credit(pred, gold) == SPEC_CREDIT[pred][gold]


@pytest.mark.parametrize("first", [A, B, T, I])
@pytest.mark.parametrize("second", [A, B, T, I])
def test_swap_combination_equals_the_spec(first, second):
    assert combine_swapped(first, second) == spec_swap(first, second)


# ---------------------------------------------------------------- point metrics, generated


@settings(max_examples=200, deadline=None)
@given(prediction_sets())
def test_point_metrics_equal_the_spec_reference(samples):
    got = compute_metrics(samples, n_bootstrap=0)
    ref = spec_metrics(samples)
    for key in ("n", "n_decisive_gold", "gold_ties", "users"):
        assert got[key] == ref[key], key
    for key in ("predicted_tie_rate", "invalid_rate", "coverage", "swap_inconsistency_rate"):
        assert _close(got[key], ref[key]), (key, got[key], ref[key])
    for name in ACCURACIES:
        for avg in ("micro", "macro"):
            assert _close(got[name][avg], ref[name][avg]), (name, avg, got[name][avg], ref[name][avg])
    # the identity section 4 states, wherever all three are defined
    if ref["coverage"] is not None and ref["decisive_acc"]["micro"] is not None:
        assert _close(got["acc_wo_tie"]["micro"], got["decisive_acc"]["micro"] * got["coverage"])
    rows = {r["user_id"]: r for r in got["per_user"]}
    assert len(rows) == len(got["per_user"]) == ref["users"]  # one row per user
    for user, ref_row in ref["per_user"].items():
        row = rows[user]
        assert row["n"] == ref_row["n"] and row["n_decisive_gold"] == ref_row["n_decisive_gold"]
        for name in ACCURACIES:
            assert _close(row[name], ref_row[name]), (user, name, row[name], ref_row[name])


@settings(max_examples=100, deadline=None)
@given(prediction_sets(), st.randoms(use_true_random=False))
def test_point_metrics_do_not_depend_on_sample_order(samples, rnd):
    shuffled = list(samples)
    rnd.shuffle(shuffled)
    a, b = compute_metrics(samples, n_bootstrap=0), compute_metrics(shuffled, n_bootstrap=0)
    a.pop("per_user"), b.pop("per_user")
    assert a == b


def test_empty_prediction_set_and_invalid_gold_are_refused():
    with pytest.raises(ValueError):
        compute_metrics([])
    with pytest.raises(ValueError):
        compute_metrics([Judged("u", I, A)], n_bootstrap=0)



# ---------------------------------------------------------------- the bootstrap, by its properties


def _resample_range(samples: list[Judged], name: str, avg: str) -> tuple[float, float]:
    """The smallest and largest value a user-resample of ``name`` can take: every resample's micro
    average is a weighted mean of the contributing users' accuracies, its macro average a plain mean
    of them, so both lie between the lowest and the highest per-user accuracy."""
    ref = spec_metrics(samples)
    values = [ref["per_user"][u][name] for u in ref["contributing"][name]]
    return min(values), max(values)


@settings(max_examples=200, deadline=None)
@given(prediction_sets(), st.integers(min_value=0, max_value=2**32 - 1))
def test_bootstrap_ci_presence_range_and_determinism(samples, seed):
    got = compute_metrics(samples, n_bootstrap=200, seed=seed)
    again = compute_metrics(samples, n_bootstrap=200, seed=seed)
    assert got == again  # the seed fixes every resample
    assert got["bootstrap"]["resamples"] == 200 and got["bootstrap"]["seed"] == seed  # recorded
    ref = spec_metrics(samples)
    for name in ACCURACIES:
        contributing = ref["contributing"][name]
        for avg in ("micro", "macro"):
            ci = got[name][f"{avg}_ci95"]
            if len(contributing) < 2:  # one user resampled has no spread
                assert ci is None, (name, avg, contributing, ci)
                continue
            assert ci is not None and len(ci) == 2, (name, avg)
            lo, hi = ci
            low, high = _resample_range(samples, name, avg)
            assert low - 1e-9 <= lo <= hi <= high + 1e-9, (name, avg, ci, (low, high))


@settings(max_examples=50, deadline=None)
@given(prediction_sets())
def test_no_resamples_means_no_intervals(samples):
    got = compute_metrics(samples, n_bootstrap=0)
    assert all(got[name][f"{avg}_ci95"] is None for name in ACCURACIES for avg in ("micro", "macro"))


def test_default_bootstrap_is_the_spec_1000_resamples_at_95_percent_over_users():
    got = compute_metrics([Judged("u", A, A), Judged("v", A, B)])
    assert got["bootstrap"] == {"resamples": 1000, "seed": 0, "unit": "user", "level": 0.95}


def test_ci_width_shrinks_with_more_users_on_average():
    """The same per-user pattern repeated over 4x the users: the interval is about half as wide."""

    def users(count: int) -> list[Judged]:
        out = []
        for u in range(count):  # per user accuracies 100, 50, 0, 50, ... with 1-3 targets each
            pattern = [[(A, A)], [(A, A), (B, A)], [(B, B), (B, B), (A, B)], [(T, T), (A, T)]][u % 4]
            out += [Judged(f"u{u}", g, p) for p, g in pattern]
        return out

    def mean_width(samples: list[Judged], name: str, avg: str) -> float:
        widths = []
        for seed in range(5):
            lo, hi = compute_metrics(samples, n_bootstrap=400, seed=seed)[name][f"{avg}_ci95"]
            widths.append(hi - lo)
        return sum(widths) / len(widths)

    few, many = users(8), users(32)
    for name in ACCURACIES:
        for avg in ("micro", "macro"):
            assert mean_width(many, name, avg) < 0.75 * mean_width(few, name, avg), (name, avg)


# ---------------------------------------------------------------- calibration's accuracy


scores = st.one_of(st.none(), st.floats(min_value=-5, max_value=5, allow_nan=False))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(scores, scores, scores, scores, golds), min_size=1, max_size=12), st.booleans(), st.booleans())
def test_calibration_grid_accuracy_is_the_spec_acc_w_tie(rows, probabilities, swap):
    """Each grid value's accuracy is section 4's acc_w_tie of the labels that threshold gives (with a
    swap, of section 3's combination of both orders' labels)."""
    scale = None if probabilities else 1.0
    pairs = [(sa, sb) for sa, sb, _, _, _ in rows]
    swapped = [(sa, sb) for _, _, sa, sb, _ in rows] if swap else None
    gold = [g for *_, g in rows]
    result = calibrate_from_scores(pairs, gold, scale=scale, swapped_scores=swapped)
    for t, acc in zip(result.grid, result.acc_w_tie):
        preds = [label_at_gap(sa, sb, t, scale) for sa, sb in pairs]
        if swapped is not None:
            preds = [spec_swap(p, label_at_gap(sa, sb, t, scale)) for p, (sa, sb) in zip(preds, swapped)]
        expected = spec_metrics([Judged("u", g, p) for g, p in zip(gold, preds)])["acc_w_tie"]["micro"]
        assert _close(acc, expected), (t, acc, expected)
    best = max(result.acc_w_tie)
    assert result.probability_threshold == result.grid[result.acc_w_tie.index(best)]  # first best, as Pick-a-Pic
