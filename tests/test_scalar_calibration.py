"""Pick-a-Pic tie-threshold calibration: unit conversion, grid choice, disjoint split, evaluator round trip."""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass, replace
from typing import Sequence

import pytest

from pigbench.calibration import PICKAPIC_GRID, apply_calibration, calibrate_from_scores, calibrate_tie_threshold, calibration_split, probability_gap_to_tau
from pigbench.evaluator import ScalarConfig, ScalarEvaluator, ScoreRequest
from pigbench.protocol import Episode, ImageRef, Label, Target, label_from_delta


def test_probability_gap_and_raw_threshold_agree():
    for t in (0.0, 0.1, 0.5, 0.9):
        tau = probability_gap_to_tau(t, scale=2.0)
        for delta in (tau * 0.999, tau * 1.001):
            p_a = 1 / (1 + math.exp(-2.0 * delta))
            by_probability = abs(p_a - (1 - p_a)) <= t
            assert by_probability == (label_from_delta(delta, tau) == Label.TIE)
    assert probability_gap_to_tau(1.0) == math.inf


def test_probabilities_need_no_softmax_and_their_tau_is_on_p_a_minus_half():
    # P(A) = 0.54 and 0.46 are gold ties, 0.9 and 0.1 decisive: t = 0.1 (|P(A) - P(B)| <= 0.1) ties
    # exactly the first two; a softmax of the probabilities would have tied all four (gaps <= 0.4).
    scores = [(0.54, 0.46), (0.46, 0.54), (0.9, 0.1), (0.1, 0.9)]
    golds = [Label.TIE, Label.TIE, Label.A, Label.B]
    result = calibrate_from_scores(scores, golds, scale=None)
    assert result.probability_threshold == 0.1 and result.acc_w_tie[1] == 100.0 and result.scale is None
    assert result.tau == 0.05 and probability_gap_to_tau(1.0, None) == 0.5
    # the judges' rule (protocol section 3: delta = P(A) - 0.5) makes the same ties
    assert [label_from_delta(a - 0.5, result.tau) for a, _ in scores] == [Label.TIE, Label.TIE, Label.A, Label.B]


def test_probabilities_are_never_calibrated_to_a_tau_that_ties_every_answer():
    """A gold tie at P(A) = 0.96 (gap 0.92) is tied only by t = 1, i.e. tau = 0.5 on P(A) - 0.5, which
    ties every answer and which a judge's config check refuses: the grid for probabilities stops at 0.9."""
    from pigbench.registry import evaluators

    result = calibrate_from_scores([(0.96, 0.04), (0.1, 0.9)], [Label.TIE, Label.B], scale=None)
    assert result.grid == PICKAPIC_GRID[:-1] and len(result.acc_w_tie) == 10
    assert result.probability_threshold == 0.0 and result.tau == 0.0
    cls = evaluators.get("openai-judge")
    cls.check_requirements(cls.Config(base_url="http://127.0.0.1:1/v1", scoring="probs", tie_threshold=result.tau))
    with pytest.raises(ValueError, match="no probability gap below 1"):
        calibrate_from_scores([(0.96, 0.04)], [Label.TIE], grid=(1.0,), scale=None)
    assert calibrate_from_scores([(0.0, 5.0)], [Label.TIE]).probability_threshold == 1.0  # a softmax's t = 1 stays


def test_grid_picks_the_best_tie_aware_accuracy_first_on_ties():
    # deltas 0.05 and 0.1 are gold ties, 3.0 and -3.0 decisive: any t that ties the small
    # deltas but not the large ones is best; the first such grid value (0.1) is kept.
    scores = [(0.05, 0.0), (0.0, 0.1), (3.0, 0.0), (0.0, 3.0), (1.0, None)]
    golds = [Label.TIE, Label.TIE, Label.A, Label.B, Label.A]
    result = calibrate_from_scores(scores, golds)
    assert result.grid == PICKAPIC_GRID and result.probability_threshold == 0.1
    assert result.acc_w_tie[1] == pytest.approx(100 * 4.5 / 5)
    assert result.acc_w_tie[0] == pytest.approx(100 * 3.5 / 5)  # ties predicted decisively earn 0.5 each
    assert result.tau == pytest.approx(2 * math.atanh(0.1))
    assert result.to_json()["n"] == 5


def test_grid_scores_equal_scores_as_a_tie_and_a_missing_score_as_invalid_at_every_threshold():
    # gold ties only: a missing score is INVALID (0.5, not a TIE's 1), equal scores are a TIE even at
    # t = 0 (|p_A - p_B| = 0 <= 0, as label_from_delta's |delta| <= tau), so every t gives 1.5 / 2
    result = calibrate_from_scores([(1.0, None), (0.3, 0.3)], [Label.TIE, Label.TIE])
    assert result.acc_w_tie == (75.0,) * len(PICKAPIC_GRID) and result.probability_threshold == 0.0


def test_the_grid_ties_exactly_the_pairs_its_tau_ties():
    """At scale 1 the grid's gap |p_A - p_B| is tanh(|delta| / 2): delta 0.3 has gap 0.149 (tied from
    t = 0.2 on), delta 2 has gap 0.762 (tied from t = 0.8 on). A gold tie at 0.3 and a decisive pair at 2
    pick t = 0.2, whose tau ties the first and not the second, as the grid did."""
    result = calibrate_from_scores([(0.3, 0.0), (2.0, 0.0)], [Label.TIE, Label.A])
    assert result.acc_w_tie == (75.0, 75.0) + (100.0,) * 6 + (75.0,) * 3 and result.probability_threshold == 0.2
    assert [label_from_delta(d, result.tau) for d in (0.3, 2.0)] == [Label.TIE, Label.A]


def test_a_nan_score_is_invalid_at_every_threshold_not_a_vote_for_b():
    # NaN earns INVALID's 0.5 at every t; delta 2 earns 1 as A until t = 0.8 ties it (0.5)
    result = calibrate_from_scores([(math.nan, 1.0), (2.0, 0.0)], [Label.B, Label.A])
    assert result.acc_w_tie == (75.0,) * 8 + (50.0,) * 3


def test_threshold_one_means_every_pair_is_a_tie_and_serializes():
    result = calibrate_from_scores([(0.0, 5.0)], [Label.TIE])
    assert result.probability_threshold == 1.0 and result.to_json()["tau"] == "inf"


def test_calibration_split_keeps_users_on_one_side():
    eps = [Episode(f"user{i % 17}", (), Target(f"s{i}", "p", ImageRef("a", b"a"), ImageRef("b", b"b"), Label.A))
           for i in range(200)]
    cal, rest = calibration_split(eps, fraction=0.3, seed=1)
    assert len(cal) + len(rest) == 200 and cal and rest
    assert not {e.user_id for e in cal} & {e.user_id for e in rest}
    assert calibration_split(eps, fraction=0.3, seed=1)[0] == cal
    with pytest.raises(ValueError):
        calibration_split(eps, fraction=1.0)


def test_the_seed_picks_which_users_calibrate():
    """The same fraction under another seed holds out other users (the hash is seeded)."""
    eps = [Episode(f"user{i % 17}", (), Target(f"s{i}", "p", ImageRef("a", b"a"), ImageRef("b", b"b"), Label.A))
           for i in range(200)]
    held_out = {seed: {e.user_id for e in calibration_split(eps, fraction=0.3, seed=seed)[0]} for seed in (1, 2)}
    assert held_out == {1: {"user1", "user2", "user4", "user8", "user12"}, 2: {"user1", "user5", "user8"}}


@dataclass(frozen=True)
class _LengthConfig(ScalarConfig):
    pass


class _PromptLength(ScalarEvaluator):
    """Scores an image by its id's length: enough to exercise the round trip. ``scored_count``
    counts the requests it was asked to score."""

    Config = _LengthConfig
    scored_count = 0

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        self.scored_count += len(requests)
        return [float(len(r.image.id)) for r in requests]


def test_calibrate_tie_threshold_scores_hidden_gold_and_sets_tau():
    def ep(a: str, b: str, gold: Label) -> Episode:
        return Episode("u", (), Target(a + b, "p", ImageRef(a, a.encode()), ImageRef(b, b.encode()), gold))

    eps = [ep("aa", "bb", Label.TIE), ep("aaaaaa", "b", Label.A), ep("c", "cccccc", Label.B)]
    ev = _PromptLength()
    result = calibrate_tie_threshold(ev, eps)
    assert result.acc_w_tie[result.grid.index(result.probability_threshold)] == 100.0
    scored = ev.scored_count
    apply_calibration(ev, result)
    assert [p.label for p in ev.predict([e.without_gold() for e in eps])] == [Label.TIE, Label.A, Label.B]
    assert ev.scored_count == scored  # the calibrated labels reuse the memoized scores
    assert ev.config.tie_threshold == result.tau and ev.tie_threshold_source["method"] == "pickapic-softmax-grid"


def test_a_sample_without_a_score_does_not_stop_calibration():
    """One failed score (NaN: no score_a) is INVALID (0.5) at every t; the other sample is A (delta 1:
    gap tanh(0.5) = 0.46) until t = 0.5 ties it, so t = 0 is kept at 75%."""
    class _NaNForX(_PromptLength):
        def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
            return [math.nan if r.image.id == "x" else float(len(r.image.id)) for r in requests]

    eps = [Episode("u", (), Target(f"s{a}", "p", ImageRef(a, a.encode()), ImageRef("bb", b"b"), Label.A)) for a in ("x", "aaa")]
    result = calibrate_tie_threshold(_NaNForX(), eps)
    assert result.acc_w_tie == (75.0,) * 5 + (50.0,) * 6 and result.probability_threshold == 0.0


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_score_that_is_not_finite_is_invalid_in_the_run_as_in_calibration(bad):
    """An infinite score decided the pair in the run (inf - 3 > 0: A) yet was stored as no score,
    which calibration read as INVALID: the two disagreed. Both now say INVALID, with the reason."""
    class _BadForX(_PromptLength):
        def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
            return [bad if r.image.id == "x" else float(len(r.image.id)) for r in requests]

    eps = [Episode("u", (), Target(f"s{a}", "p", ImageRef(a, a.encode()), ImageRef("bb", b"b"), Label.A)) for a in ("x", "aaa")]
    first, second = _BadForX().predict([e.without_gold() for e in eps])
    assert (first.label, first.score_a, first.score_b) == (Label.INVALID, None, 2.0)
    assert first.error == f"score is {bad}, not a finite number" and second.label == Label.A and second.error is None
    result = calibrate_tie_threshold(_BadForX(), eps)
    assert result.acc_w_tie == (75.0,) * 5 + (50.0,) * 6


def test_the_evaluators_calibration_scale_turns_cosines_into_logits():
    """Raw cosines differ by ~0.01: with the softmax at scale 1 every grid value above 0 ties them all."""
    def ep(a: str, b: str, gold: Label) -> Episode:
        return Episode("u", (), Target(a + b, "p", ImageRef(a, a.encode()), ImageRef(b, b.encode()), gold))

    class _Cosine(_PromptLength):
        calibration_scale = 100.0

        def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
            return [0.2 + len(r.image.id) / 1000 for r in requests]

    eps = [ep("aa", "ab", Label.TIE), ep("aaaaaaaaaaaaaaaaaaaaaa", "b", Label.A), ep("c", "cccccccccccccccccccccc", Label.B)]
    result = calibrate_tie_threshold(_Cosine(), eps)
    assert result.scale == 100.0 and result.acc_w_tie[result.grid.index(result.probability_threshold)] == 100.0
    assert result.tau == pytest.approx(2 * math.atanh(result.probability_threshold) / 100)
    assert calibrate_from_scores([(0.2, 0.2), (0.221, 0.2), (0.2, 0.221)], [e.target.gold for e in eps]).acc_w_tie[1:] == (
        pytest.approx(100 * 2 / 3),) * 10  # scale 1: every t > 0 ties all three


def test_an_evaluator_scoring_probabilities_is_calibrated_without_a_softmax():
    """P(A), P(B) as scores (a judge with scoring=probs): the gap is |P(A) - P(B)| and tau = t / 2 on P(A) - 0.5."""
    def ep(a: str, b: str, gold: Label) -> Episode:
        return Episode("u", (), Target(a + b, "p", ImageRef(a, a.encode()), ImageRef(b, b.encode()), gold))

    class _Probabilities(_PromptLength):
        scores_are_probabilities = True
        calibration_scale = 1.0
        p = {"a": 0.54, "b": 0.46, "c": 0.9, "d": 0.1}

        def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
            return [self.p[r.image.id] for r in requests]

    eps = [ep("a", "b", Label.TIE), ep("b", "a", Label.TIE), ep("c", "d", Label.A), ep("d", "c", Label.B)]
    result = calibrate_tie_threshold(_Probabilities(), eps)
    assert result.scale is None and result.probability_threshold == 0.1 and result.tau == 0.05


def test_a_calibrated_tau_of_infinity_makes_every_pair_a_tie():
    result = calibrate_from_scores([(0.0, 5.0)], [Label.TIE])
    ev = _PromptLength()
    apply_calibration(ev, result)
    eps = [Episode("u", (), Target("s", "p", ImageRef("a", b"a"), ImageRef("bbbbbbbb", b"b"), Label.A))]
    assert ev.config.tie_threshold == sys.float_info.max and ev.tie_threshold_source["tau"] == "inf"
    assert [p.label for p in ev.predict([e.without_gold() for e in eps])] == [Label.TIE]


def test_a_fraction_that_leaves_one_side_empty_says_so():
    eps = [Episode("user0", (), Target("s", "p", ImageRef("a", b"a"), ImageRef("b", b"b"), Label.A))]
    with pytest.raises(ValueError, match="of 1 users leaves the (calibration|evaluation) split empty"):
        calibration_split(eps, fraction=0.5)


def test_the_runner_holds_out_the_users_its_seed_picks():
    """--seed picks the calibration users as calibration_split does (users 1, 2, 4, 8, 12 at seed 1; 1, 5, 8 at 2)."""
    from pigbench.distributed import World
    from pigbench.runner import RunConfig, calibrate_on_held_out_users
    from pigbench.splits import SplitResult

    eps = [Episode(f"user{i % 17}", (), Target(f"s{i}", "p", ImageRef("a" * (1 + i % 3), b"a"), ImageRef("bb", b"b"), Label.A))
           for i in range(200)]
    evaluated = {}
    for seed in (1, 2):
        split = SplitResult(list(eps), "d", seed, None)
        config = RunConfig(evaluator="length", dataset="d", seed=seed, calibration_fraction=0.3)
        calibrate_on_held_out_users(_PromptLength(), split, config, lambda m: None, World())
        evaluated[seed] = {e.user_id for e in split.episodes}
    everyone = {f"user{i}" for i in range(17)}
    assert evaluated == {1: everyone - {"user1", "user2", "user4", "user8", "user12"}, 2: everyone - {"user1", "user5", "user8"}}


def test_the_runner_calibrates_on_held_out_users_and_records_how(tmp_path):
    from pigbench.results import validate_results
    from pigbench.runner import RunConfig, run

    def config(**kw) -> RunConfig:
        return RunConfig(evaluator="colorfulness", dataset="demo", output=str(tmp_path / "r"), cache_dir=str(tmp_path / "c"),
                         progress=False, n_bootstrap=50, **kw)

    everyone = run(config())
    out = run(config(calibration_fraction=0.3))
    source = out.results["evaluator"]["tie_threshold_source"]
    assert source["method"] == "pickapic-softmax-grid" and source["n"] > 0 and source["swap"] is False
    swapped = RunConfig(evaluator="toy-pair-brightness", dataset="toy", output=str(tmp_path / "r"), cache_dir=str(tmp_path / "c"),
                        progress=False, n_bootstrap=50, calibration_fraction=0.3, swap=True)
    assert run(swapped).results["evaluator"]["tie_threshold_source"]["swap"] is True
    assert out.results["evaluator"]["tie_threshold"] == probability_gap_to_tau(source["probability_threshold"])
    assert 0 < out.results["split"]["targets"] < everyone.results["split"]["targets"]
    assert source["n"] + out.results["split"]["targets"] == everyone.results["split"]["targets"]
    assert out.results_path.name.endswith("_cal0.3.json") and validate_results(out.results_path) == []
    assert run(config(calibration_fraction=0.3)).resumed == out.results["split"]["targets"]
    from pigbench.report.collect import collect
    from pigbench.report.tables import differing_settings

    entries = collect(tmp_path / "r").for_dataset("demo")
    (calibrated,) = [text for e, text in zip(entries, differing_settings(entries)) if (e.variant or "").endswith("cal0.3")]
    assert (f'tie_threshold="calibrated on {source["n"]} held-out targets by pickapic-softmax-grid, '
            f't={source["probability_threshold"]}"') in calibrated
    with pytest.raises(ValueError, match="both set tau"):
        run(config(calibration_fraction=0.3, tie_threshold=0.5))


def test_a_calibrated_sweep_is_one_curve_though_each_size_calibrates_its_own_tau(tmp_path):
    """Each K of a calibrated sweep gets its own tau, hence its own config hash; the accuracy-vs-K
    plot still draws its runs as one series, apart from the fixed-tau runs."""
    from pigbench.report.collect import collect
    from pigbench.report.plots import reference_size_series
    from pigbench.runner import RunConfig
    from pigbench.sweep import sweep

    def base(**kw) -> RunConfig:
        return RunConfig(evaluator="colorfulness", dataset="demo", output=str(tmp_path / "r"), cache_dir=str(tmp_path / "c"),
                         progress=False, n_bootstrap=20, **kw)

    calibrated = sweep(base(calibration_fraction=0.3), [1, 4], log=lambda m: None)
    sources = [o.results["evaluator"]["tie_threshold_source"] for o in calibrated.values()]
    assert [s["held_out_fraction"] for s in sources] == [0.3, 0.3]
    assert len({o.results["evaluator"]["config_hash"] for o in calibrated.values()}) == 2  # t = 1.0 at K=1, 0.7 at K=4
    fixed = sweep(base(), [1, 4], log=lambda m: None)
    series = reference_size_series(collect(tmp_path / "r"))["demo"]
    assert len(series) == 2
    (calibrated_label,) = [label for label in series if "tau calibrated" in label]
    assert [e.relpath for e in series[calibrated_label]] == \
        [f"demo/{o.results_path.name}" for o in calibrated.values()]
    (fixed_label,) = [label for label in series if label != calibrated_label]
    assert [e.relpath for e in series[fixed_label]] == [f"demo/{o.results_path.name}" for o in fixed.values()]


def test_calibration_without_any_score_is_refused_not_recorded_as_calibrated(tmp_path, monkeypatch):
    """An evaluator that gives no scores (a judge answering in text), or whose every calibration
    prediction failed, has nothing to tune: the run stops instead of recording t = 0 as calibrated."""
    from pigbench.judging.fake_server import FakeServer
    from pigbench.runner import RunConfig, run

    def config(evaluator: str, **kw) -> RunConfig:
        return RunConfig(evaluator=evaluator, dataset="toy", output=str(tmp_path / "r"), cache_dir=str(tmp_path / "c"),
                         progress=False, n_bootstrap=20, calibration_fraction=0.3, **kw)

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeServer(lambda body: "<answer>A</answer>") as server:
        with pytest.raises(ValueError, match="openai-judge: cannot calibrate .* gives no scores .* scoring=probs"):
            run(config("openai-judge", options={"base_url": server.url}))
    monkeypatch.setenv("TOY_SERVER_DOWN", "1")
    with pytest.raises(ValueError, match="every prediction failed .ConnectionError: the scoring server does not answer"):
        run(config("toy-brightness"))
    assert not list((tmp_path / "r").rglob("*.json"))


def test_calibration_refusal_for_a_plugin_without_scoring_option_names_what_to_fill():
    """A plug-in judge deriving from Evaluator has no ``scoring`` option: the refusal must say to fill
    score_a/score_b, not send its author to ``--option scoring=probs`` (an unknown option there)."""
    from pigbench.evaluator import Evaluator, EvaluatorConfig
    from pigbench.protocol import Prediction

    @dataclass(frozen=True)
    class _Config(EvaluatorConfig):
        tie_threshold: float = 0.0

    class _TextOnly(Evaluator):
        kind = "judge"
        Config = _Config

        def predict(self, episodes: Sequence[Episode]):
            return [Prediction(e.sample_id, Label.A) for e in episodes]

    evaluator = _TextOnly()
    evaluator.name = "pair-judge"
    eps = [Episode("u", (), Target("t", "p", ImageRef("a", b"a"), ImageRef("b", b"b"), Label.A))]
    with pytest.raises(ValueError, match="pair-judge: cannot calibrate") as err:
        calibrate_tie_threshold(evaluator, eps)
    assert "scoring=probs" not in str(err.value) and "score_a" in str(err.value)


def test_a_swap_run_calibrates_for_the_combined_label_of_both_orders():
    """A scorer with a +1 bias for whatever stands in slot A. One order alone: the TIE pair (1+1 vs 1,
    gap tanh(0.5) = 0.46) is A until t = 0.5, so t = 0.5 is best (100%). With both orders the TIE pair
    is A then B, combined TIE at every t, and the decisive pairs (gaps tanh(2), tanh(1) = 0.76) stay
    decisive up to t = 0.7: t = 0 is best. A swap run must be tuned for the label it will give."""
    def ep(a: str, b: str, gold: Label) -> Episode:
        return Episode("u", (), Target(a + b, "p", ImageRef(a, a.encode()), ImageRef(b, b.encode()), gold))

    class _SlotABias(_PromptLength):
        def predict(self, episodes: Sequence[Episode]):
            return [replace(p, score_a=p.score_a + 1) for p in super().predict(episodes)]

    eps = [ep("x", "y", Label.TIE), ep("aaaa", "b", Label.A), ep("c", "cccc", Label.B)]
    one_order = calibrate_tie_threshold(_SlotABias(), eps)
    assert one_order.probability_threshold == 0.5 and not one_order.swap
    assert one_order.acc_w_tie == pytest.approx((250 / 3,) * 5 + (100.0,) * 3 + (250 / 3,) * 2 + (200 / 3,))
    both = calibrate_tie_threshold(_SlotABias(), eps, swap=True)
    assert both.probability_threshold == 0.0 and both.swap and both.to_json()["swap"] is True
    assert both.acc_w_tie == pytest.approx((100.0,) * 8 + (200 / 3,) * 3)
    with pytest.raises(ValueError, match="as many scores as golds"):  # zip would calibrate on the first two alone
        calibrate_from_scores([(1.0, 0.0)] * 3, [Label.A] * 3, swapped_scores=[(1.0, 0.0)] * 2)


def test_under_several_ranks_rank_0_calibrates_and_the_others_take_its_tau(monkeypatch):
    """Every rank calibrated on its own: repeated work, and a tau that GPU nondeterminism could tip on
    one rank gave that rank another run key, which stops the run. Rank 0's result is broadcast now."""
    from pigbench import calibration
    from pigbench.distributed import World
    from pigbench.runner import RunConfig, calibrate_on_held_out_users
    from pigbench.splits import SplitResult

    class Rank1(World):
        def broadcast(self, obj):
            assert obj is None  # rank 1 computed nothing
            return rank0_result

        @contextlib.contextmanager
        def together(self, peer_error):
            yield

    eps = [Episode(f"user{i % 17}", (), Target(f"s{i}", "p", ImageRef("a" * (1 + i % 3), b"a"), ImageRef("bb", b"b"), Label.A))
           for i in range(200)]
    config = RunConfig(evaluator="length", dataset="d", seed=1, calibration_fraction=0.3)
    rank0 = _PromptLength()
    calibrate_on_held_out_users(rank0, SplitResult(list(eps), "d", 1, None), config, lambda m: None, World())
    rank0_result = calibration.calibrate_tie_threshold(_PromptLength(), calibration.calibration_split(eps, 0.3, 1)[0])
    monkeypatch.setattr(calibration, "calibrate_tie_threshold", lambda *a, **k: pytest.fail("rank 1 calibrated"))
    rank1, logged = _PromptLength(), []
    calibrate_on_held_out_users(rank1, SplitResult(list(eps), "d", 1, None), config, logged.append, Rank1(rank=1, size=2))
    assert rank1.config.tie_threshold == rank0.config.tie_threshold and rank1.scored_count == 0 and logged == []
