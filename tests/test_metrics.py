"""Every cell of the credit table and the aggregation, on hand-computed examples."""

import math

import pytest

from pigbench.metrics import Judged, compute_metrics, credit, metric_differences
from pigbench.protocol import Label

A, B, T, I = Label.A, Label.B, Label.TIE, Label.INVALID


@pytest.mark.parametrize(
    "pred,gold,expected",
    [
        (A, A, 1.0), (A, B, 0.0), (A, T, 0.5),
        (B, A, 0.0), (B, B, 1.0), (B, T, 0.5),
        (T, A, 0.5), (T, B, 0.5), (T, T, 1.0),
        (I, A, 0.5), (I, B, 0.5), (I, T, 0.5),
    ],
)
def test_credit_table(pred, gold, expected):
    assert credit(pred, gold) == expected


def test_gold_cannot_be_invalid():
    with pytest.raises(ValueError):
        credit(A, I)


def test_aggregation_hand_computed():
    # user u1: (A,A) 1, (B,A) 0, (TIE,TIE) 1, (INVALID,B) 0.5     -> w/tie 2.5/4; S=3: correct 1 -> 1/3
    #          decisive in S: (A,A),(B,A) -> 1/2
    # user u2: (TIE,A) 0.5, (B,B) 1                               -> w/tie 1.5/2; S=2: correct 1 -> 1/2
    #          decisive in S: (B,B) -> 1/1
    samples = [
        Judged("u1", A, A), Judged("u1", A, B), Judged("u1", T, T), Judged("u1", B, I),
        Judged("u2", A, T), Judged("u2", B, B),
    ]
    m = compute_metrics(samples, n_bootstrap=200, seed=1)
    assert m["n"] == 6 and m["n_decisive_gold"] == 5 and m["gold_ties"] == 1 and m["users"] == 2
    assert math.isclose(m["acc_w_tie"]["micro"], 100 * 4.0 / 6)
    assert math.isclose(m["acc_w_tie"]["macro"], 100 * (2.5 / 4 + 1.5 / 2) / 2)
    assert math.isclose(m["acc_wo_tie"]["micro"], 100 * 2 / 5)
    assert math.isclose(m["acc_wo_tie"]["macro"], 100 * (1 / 3 + 1 / 2) / 2)
    assert math.isclose(m["decisive_acc"]["micro"], 100 * 2 / 3)
    assert math.isclose(m["decisive_acc"]["macro"], 100 * (1 / 2 + 1) / 2)
    assert math.isclose(m["predicted_tie_rate"], 2 / 6)
    assert math.isclose(m["invalid_rate"], 1 / 6)
    assert math.isclose(m["coverage"], 3 / 5)  # decisive predictions among the 5 decisive golds
    # acc_wo_tie = decisive_acc * coverage (protocol section 4)
    assert math.isclose(m["acc_wo_tie"]["micro"], m["decisive_acc"]["micro"] * m["coverage"])
    assert m["swap_inconsistency_rate"] is None
    per_user = {r.pop("user_id"): r for r in m["per_user"]}
    assert metric_differences(per_user, {
        "u1": {"n": 4, "n_decisive_gold": 3, "acc_w_tie": 62.5, "acc_wo_tie": 100 / 3, "decisive_acc": 50.0},
        "u2": {"n": 2, "n_decisive_gold": 2, "acc_w_tie": 75.0, "acc_wo_tie": 50.0, "decisive_acc": 100.0},
    }) == []


def test_bootstrap_ci_brackets_estimate_and_is_seeded():
    samples = [Judged(f"u{i % 10}", A, A if i % 3 else B) for i in range(200)]
    m1 = compute_metrics(samples, n_bootstrap=300, seed=5)
    m2 = compute_metrics(samples, n_bootstrap=300, seed=5)
    m3 = compute_metrics(samples, n_bootstrap=300, seed=6)
    lo, hi = m1["acc_w_tie"]["micro_ci95"]
    assert lo <= m1["acc_w_tie"]["micro"] <= hi and lo < hi
    assert metric_differences(m1, m2) == []
    assert m1["acc_w_tie"]["micro_ci95"] != m3["acc_w_tie"]["micro_ci95"]  # the seed drives the resampling


def test_bootstrap_resamples_as_many_users_as_there_are_and_takes_the_2_5_and_97_5_percentiles():
    # One sample per user, u0 right and the others wrong: a resample's accuracy is the share of its
    # draws that are u0. Three users: P(all three draws u0) = 1/27 = 3.7% > 2.5%, so the upper bound
    # is 100 (a 95th percentile would be 66.7); P(no u0) = 8/27, so the lower bound is 0.
    # Four users: P(all four u0) = 0.4% but P(at least three) = 13/256 = 5.1%, so the upper bound
    # is 75 (three draws per resample would give 66.7 or 100, never 75).
    for users, upper in ((3, 100.0), (4, 75.0)):
        samples = [Judged("u0", A, A)] + [Judged(f"u{i}", A, B) for i in range(1, users)]
        m = compute_metrics(samples, n_bootstrap=1000, seed=0)
        assert m["acc_wo_tie"]["micro_ci95"] == [0.0, upper]


def test_macro_ci_depends_on_per_user_accuracies_not_on_user_sizes():
    # Same users and per-user accuracies, but u0 has five targets instead of one: the macro average
    # and its bootstrap (same seed, same user weights) are unchanged, the micro ones move.
    small = [Judged("u0", A, A), Judged("u1", A, B), Judged("u2", A, A), Judged("u3", A, B), Judged("u4", A, B)]
    large = [Judged("u0", A, A)] * 4 + small
    m_small, m_large = (compute_metrics(s, n_bootstrap=500, seed=3) for s in (small, large))
    assert m_small["acc_wo_tie"]["macro"] == m_large["acc_wo_tie"]["macro"] == 40.0
    assert m_small["acc_wo_tie"]["macro_ci95"] == m_large["acc_wo_tie"]["macro_ci95"]
    assert m_small["acc_wo_tie"]["micro_ci95"] != m_large["acc_wo_tie"]["micro_ci95"]


def test_a_user_without_decisive_gold_is_left_out_of_the_macro_wo_tie_average_and_its_ci():
    # v's only target is a gold tie: it has no acc_wo_tie, so the macro average is u's alone (100),
    # and with one user left there is no interval; acc_w_tie has both users (u 100, v 100).
    m = compute_metrics([Judged("u", A, A), Judged("v", T, T)], n_bootstrap=200, seed=0)
    assert m["acc_wo_tie"]["macro"] == 100.0 and m["acc_wo_tie"]["macro_ci95"] is None
    assert m["acc_wo_tie"]["micro_ci95"] is None
    assert m["acc_w_tie"]["macro"] == 100.0 and m["acc_w_tie"]["macro_ci95"] == [100.0, 100.0]


def test_a_single_user_gets_no_ci_not_a_zero_width_one():
    """Resampling one user always draws that user: [50, 50] would read as certainty."""
    m = compute_metrics([Judged("u", A, A), Judged("u", A, B)], n_bootstrap=50)
    assert m["acc_w_tie"]["micro"] == 50.0
    assert all(m[name][f"{avg}_ci95"] is None for name in ("acc_w_tie", "acc_wo_tie", "decisive_acc") for avg in ("micro", "macro"))
    two = compute_metrics([Judged("u", A, A), Judged("v", A, B)], n_bootstrap=200)
    assert two["acc_w_tie"]["micro_ci95"] == [0.0, 100.0]


def test_all_gold_ties_has_no_wo_tie_accuracy():
    m = compute_metrics([Judged("u", T, T), Judged("v", T, A)], n_bootstrap=20)
    assert m["acc_wo_tie"]["micro"] is None and m["acc_wo_tie"]["micro_ci95"] is None
    assert m["coverage"] is None


@pytest.mark.parametrize("n_bootstrap,seed", [(-1, 0), (10, -1)])
def test_a_negative_resample_count_or_seed_is_refused_by_name(n_bootstrap, seed):
    """A negative seed failed inside numpy as "expected non-negative integer", naming neither."""
    with pytest.raises(ValueError, match=rf"n_bootstrap >= 0 and seed >= 0, got {n_bootstrap} and {seed}$"):
        compute_metrics([Judged("u", A, A), Judged("v", A, B)], n_bootstrap=n_bootstrap, seed=seed)


def test_swap_inconsistency_rate():
    m = compute_metrics([Judged("u", A, A, True), Judged("u", A, A, False), Judged("v", B, A, False)], n_bootstrap=10)
    assert math.isclose(m["swap_inconsistency_rate"], 1 / 3)
    # the rate is over the samples that ran a swap, not over all samples
    m = compute_metrics([Judged("u", A, A, True), Judged("u", A, A, False), Judged("v", B, A)], n_bootstrap=10)
    assert math.isclose(m["swap_inconsistency_rate"], 1 / 2)


def test_metric_differences_name_each_differing_leaf_by_its_dotted_path():
    from pigbench.metrics import MISSING

    stored = {"acc": {"micro": 68.8, "micro_ci95": [60.0, 75.0], "macro": None}, "per_user": [{"n": 3}, {"n": 4}],
              "old": 1}
    recomputed = {"acc": {"micro": 70.2, "micro_ci95": [60.0 + 1e-9, 75.5], "macro": 50.0, "extra": True},
                  "per_user": [{"n": 3}, {"n": 5}]}
    assert metric_differences(stored, recomputed, "metrics") == [
        ("metrics.acc.micro", 68.8, 70.2), ("metrics.acc.micro_ci95[1]", 75.0, 75.5), ("metrics.acc.macro", None, 50.0),
        ("metrics.acc.extra", MISSING, True), ("metrics.per_user[1].n", 4, 5), ("metrics.old", 1, MISSING)]
    assert metric_differences([1, 2], [1, 2, 3], "ci") == [("ci", [1, 2], [1, 2, 3])]  # lengths differ: the whole list
    assert metric_differences(stored, stored) == []
