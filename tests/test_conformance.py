"""Conformance checks: sound plug-ins pass, and each deliberately broken plug-in fails its check."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import broken_plugins
from pigbench.conformance import _differences, _option_text, run_checks
from pigbench.evaluator import ScalarEvaluator
from pigbench.protocol import Label, Prediction
from pigbench.registry import evaluators

TESTS = Path(__file__).resolve().parent
EPISODES = 10  # one batch of 7 and one of 3


@pytest.mark.parametrize("name", ["random", "color-reference"])
def test_builtin_weight_free_evaluators_conform(name):
    report = run_checks(name, episodes=EPISODES)
    assert report.ok, report.table()
    assert report.episodes == EPISODES and report.users == 4  # 3 targets per user
    cls = evaluators.get(name)
    expected_skip = ({"reference-free"} if cls.uses_references else set()) | {"look-ahead"}
    expected_skip |= {"swap"} if issubclass(cls, ScalarEvaluator) else {"tie-threshold"}  # random has no tau
    assert {c.name for c in report.checks if c.status == "skip"} == expected_skip


# What the failing check's detail must say, so that the author knows what to fix.
DETAILS = {
    broken_plugins.NonDeterministic: ("determinism", "predictions differ"),
    broken_plugins.ReordersOutputs: ("predictions", "reordered output"),
    broken_plugins.AlwaysFails: ("predictions", "every prediction failed .*KeyError: 'pixel_values'"),
    broken_plugins.CrashesOnCorruptImage: ("corrupt-image", "corrupt-image.png.*Prediction.invalid"),
    broken_plugins.ReadsReferences: ("reference-free", "read reference images .* uses_references = False"),
    broken_plugins.SkipsRequirements: ("requirements", "does not exist\\) passes .* then the evaluator fails: "
                                                      "ModuleNotFoundError: import of safetensors halted"),
    broken_plugins.LossyConfigHash: ("config", "changing temperature does not change the config hash"),
    broken_plugins.LookAheadLeaks: ("look-ahead", "predictions differ"),
    broken_plugins.RawTextNamesBatch: ("batch-size", "raw text differs"),
    broken_plugins.DropsLastPrediction: ("predictions", "returned 6 predictions for 7 episodes"),
    broken_plugins.StringLabels: ("predictions", "label '[A-Z]+' is not a pigbench.protocol.Label"),
    broken_plugins.NumpyScores: ("predictions", "not JSON-serializable"),
    broken_plugins.AnswersOnCorruptImage: ("corrupt-image", "answered B \\(error .+\\); expected INVALID with the error"),
    broken_plugins.WrongErrorForMissingModel: ("requirements", "a missing model_path raises FileNotFoundError: .* not RequirementError"),
    broken_plugins.InvalidWithoutError: ("corrupt-image", "answered INVALID \\(error None\\); expected INVALID with the error"),
    broken_plugins.RemembersBySampleId: ("swap", "the swapped order answered [AB] \\(mapped back\\) after the first, "
                                                 "[AB] when asked alone: an answer reused by sample id"),
    broken_plugins.IgnoresSwap: ("swap", "^with a probe model preferring the same image in either position, 10 of 10 "
                                         "swapped predictions are not [AB]: .* gave TIE"),
    broken_plugins.PercentProbabilities: ("tie-threshold", "scores \\(\\d+.*\\) are not probabilities in \\[0, 1\\]"),
    broken_plugins.IgnoresTieThreshold: ("tie-threshold", "with tie_threshold=0\\.\\d+ it is [AB], but its scores "
                                                          "\\(.*\\) give TIE by label_from_delta\\(score_a - 0\\.5, tau\\)"),
    broken_plugins.ScoreBCopiesScoreA: ("tie-threshold", "P\\(A\\) \\+ P\\(B\\) = 1\\.\\d+ > 1"),
    broken_plugins.ReplacesBackend: ("swap", "a probe model answering the first image: not probed \\(setup\\(\\) "
                                             "replaced the backend\\); a probe model preferring the same image in "
                                             "either position: not probed"),
}


@pytest.mark.parametrize("plugin", list(broken_plugins.EXPECTED_FAILURES), ids=lambda c: c.__name__)
def test_each_defect_is_caught_by_its_check(plugin):
    report = run_checks(plugin, episodes=EPISODES)
    failed = {c.name for c in report.checks if c.status == "fail"}
    assert failed == broken_plugins.EXPECTED_FAILURES[plugin], report.table()
    assert report.ok == (not failed)
    assert all(c.status in ("pass", "skip", "fail") for c in report.checks)
    if plugin in DETAILS:
        check, pattern = DETAILS[plugin]
        assert re.search(pattern, next(c.detail for c in report.checks if c.name == check)), report.table()


def test_unmet_requirements_skip_the_model_checks_and_fail_the_report():
    report = run_checks(broken_plugins.MissingWeights, episodes=EPISODES)
    assert report.status("requirements") == "pass"  # a fast, clear RequirementError is the contract
    assert report.status("config") == "pass"
    not_run = [c for c in report.checks if c.status == "not run"]
    assert len(not_run) == 8 and "weights not found at /models/x" in not_run[0].detail
    assert not report.ok and "DOES NOT CONFORM" in report.table()



def test_a_requirement_error_without_a_message_fails_the_requirements_check():
    report = run_checks(broken_plugins.SilentRequirementError, episodes=EPISODES)
    assert report.status("requirements") == "fail", report.table()
    assert "RequirementError with an empty message" in next(c.detail for c in report.checks if c.name == "requirements")


def test_a_slow_check_requirements_fails_the_requirements_check(monkeypatch):
    monkeypatch.setattr("pigbench.conformance.REQUIREMENTS_TIME_LIMIT_S", -1.0)  # any time is too long
    report = run_checks(broken_plugins.MissingWeights, episodes=EPISODES)
    detail = next(c.detail for c in report.checks if c.name == "requirements")
    assert report.status("requirements") == "fail"
    assert re.search(r"^check_requirements took \d+\.\d s \(limit -1 s\): it must look, not load", detail), detail


def test_differences_compare_each_score_within_the_tolerance():
    base = {"s": Prediction("s", Label.A, score_a=1.0, score_b=2.0)}
    assert _differences(base, {"s": Prediction("s", Label.A, score_a=1.0, score_b=2.5)}, ["s"], 1e-6) == ["s: score_b 2.0 vs 2.5"]
    assert _differences(base, {"s": Prediction("s", Label.A, score_a=1.0, score_b=2.5)}, ["s"], 0.5) == []
    assert _differences(base, {"s": Prediction("s", Label.A, score_a=1.0)}, ["s"], 1e-6) == ["s: score_b 2.0 vs None"]

def test_an_option_spelled_with_dashes_passes_the_config_check():
    """The round trip adds each field by its name: a dashed option given too would be that field twice."""
    report = run_checks("color-reference", options={"min-spread": "0.05"}, episodes=EPISODES)
    assert next(c for c in report.checks if c.name == "config").status == "pass", report.table()


def test_option_text_is_what_from_options_parses():
    assert [_option_text(v) for v in (True, None, (1, 2), {"a": 1}, 0.1, 3, "x")] == [
        "true", "none", "[1, 2]", '{"a": 1}', "0.1", "3", "x"]


def test_cli_prints_table_and_exits_nonzero_on_failure():
    code = ("import sys, broken_plugins; from pigbench.registry import evaluators; "
            "evaluators.register('broken-reorders')(broken_plugins.ReordersOutputs); "
            "from pigbench.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code, "check-evaluator", "broken-reorders", "--episodes", "8"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 1, out.stderr
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()[3:13]}
    assert rows == {"config": "PASS", "predictions": "FAIL", "batch-size": "PASS", "determinism": "PASS",
                    "look-ahead": "SKIP", "corrupt-image": "PASS", "reference-free": "PASS", "swap": "PASS",
                    "tie-threshold": "SKIP", "requirements": "PASS"}
    assert "broken-reorders: DOES NOT CONFORM (7 pass, 1 fail, 2 skip)" in out.stdout
    out = subprocess.run([sys.executable, "-m", "pigbench.cli", "check-evaluator", "colorfulnes"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "did you mean 'colorfulness'" in out.stderr


def test_cli_refuses_an_option_without_a_value_in_one_line(capsys):
    from pigbench.cli import main

    assert main(["check-evaluator", "colorfulness", "--option", "tie_threshold"]) == 2
    assert capsys.readouterr().err == "error: --option expects KEY=VALUE, got 'tie_threshold'\n"


def test_cli_refuses_a_model_path_flag_and_option_that_disagree(capsys):
    """--option model_path=Y used to be dropped silently for --model-path X."""
    from pigbench.cli import main

    assert main(["check-evaluator", "clipscore", "--model-path", "x", "--option", "model_path=y"]) == 2
    out = capsys.readouterr()
    assert out.err == "error: --model-path x and --option model_path=y disagree; give one of them\n" and out.out == ""



def test_cli_refuses_fewer_episodes_than_two_batches_need(capsys):
    """With 7 episodes the batch-size 7 runs are one batch: help says at least 8."""
    from pigbench.cli import main

    assert main(["check-evaluator", "colorfulness", "--episodes", "7"]) == 2
    out = capsys.readouterr()
    assert out.err == "error: --episodes must be more than 7 (one batch of 7)\n" and out.out == ""

@pytest.mark.parametrize("tolerance", ["-1", "nan"])
def test_cli_refuses_a_negative_or_nan_score_tolerance_before_checking(capsys, tolerance):
    """-1 used to fail mid-check with numpy's "tolerances must be non-negative" naming no flag."""
    from pigbench.cli import main

    assert main(["check-evaluator", "colorfulness", "--score-tolerance", tolerance]) == 2
    out = capsys.readouterr()
    assert out.err == f"error: --score-tolerance must be >= 0, got {float(tolerance)}\n" and out.out == ""


def test_cli_refuses_a_device_the_run_would_refuse_instead_of_checking_on_it(capsys):
    from pigbench.cli import main

    assert main(["check-evaluator", "colorfulness", "--device", "nonsense"]) == 2
    out = capsys.readouterr()
    assert out.err.startswith("error: --device 'nonsense' is not a device torch knows") and "conforms" not in out.out


def test_the_probe_hides_the_plugin_distributions_own_requirements(tmp_path, monkeypatch):
    """A plug-in's dependencies (not pigbench's) must be hidden too, or importing them at the top passes."""
    from pigbench.requirements_probe import model_packages

    dist_info = tmp_path / "pigbench_fake_dep-0.1.0.dist-info"  # what pip would install
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: pigbench-fake-dep\nVersion: 0.1.0\n"
                                        "Requires-Dist: pluggy\n")
    (dist_info / "entry_points.txt").write_text("[pigbench.evaluators]\nfake-dep = fake_dep_plugin.evaluator:Fake\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "pluggy" in model_packages("fake_dep_plugin.evaluator")
    assert "pluggy" not in model_packages("other_plugin.evaluator")
