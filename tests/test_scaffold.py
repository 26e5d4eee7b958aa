"""The plug-in scaffold: names, refusals, every kind conforms as generated, and the scalar package
installs with pip, registers through its entry point, passes its own tests, check-evaluator and
a runner run."""

import ast
import importlib
import json
import os
import subprocess
import sys

import pytest

from pigbench.cli import main as pigbench
from pigbench.conformance import demo_episodes, run_checks
from pigbench.results import validate_results
from pigbench.scaffold import KINDS, PluginNames, ScaffoldError, plugin_files, write_plugin
from plugin_install import install_for_subprocesses


def test_names_are_derived_from_the_evaluator_name():
    n = PluginNames.of("my-reward2")
    assert (n.dist, n.package, n.class_name, n.env_var) == ("pigbench-my-reward2", "pigbench_my_reward2", "MyReward2",
                                                            "MY_REWARD2_MODEL")


@pytest.mark.parametrize("bad", ["MyReward", "my_reward", "-x", "x--y", "2x", ""])
def test_bad_names_are_refused(bad, tmp_path):
    with pytest.raises(ScaffoldError, match="lower-case letters, digits and single hyphens"):
        write_plugin(bad, out=tmp_path / "p")


def test_taken_name_and_used_directory_are_refused(tmp_path, capsys):
    assert pigbench(["new-evaluator", "color-reference", "--out", str(tmp_path / "a")]) == 2
    assert "'color-reference' is taken (built-in)" in capsys.readouterr().err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    with pytest.raises(ScaffoldError, match="already exists"):
        write_plugin("fresh-name", out=tmp_path / "b")


@pytest.mark.parametrize("kind", KINDS)
def test_generated_files_are_complete(kind):
    files = plugin_files(PluginNames.of("my-reward"), kind)
    assert set(files) == {"pyproject.toml", "README.md", "pigbench_my_reward/__init__.py",
                          "pigbench_my_reward/evaluator.py", "tests/test_pigbench_my_reward.py"}
    assert '[project.entry-points."pigbench.evaluators"]\nmy-reward = "pigbench_my_reward.evaluator:MyReward"' \
        in files["pyproject.toml"]
    module = files["pigbench_my_reward/evaluator.py"]
    tree = ast.parse(module)
    assert "TODO" in module and "class MyReward(" in module and "${" not in module
    # a run with --model-path writes my-reward__cfg<hash>.json: the README must not send validate to my-reward.json
    assert "--model-path <weights>" in files["README.md"] and "my-reward.json" not in files["README.md"]
    top_level = {alias.name.partition(".")[0] for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                 for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert top_level <= {"__future__", "dataclasses", "typing", "os", "re", "numpy", "PIL", "pigbench"}, top_level


def _load_generated(kind: str, tmp_path, monkeypatch, name: str = ""):
    name = name or f"scaffold-{kind}"
    root, _ = write_plugin(name, kind, tmp_path / name)
    monkeypatch.syspath_prepend(str(root))  # the probe subprocess inherits sys.path
    names = PluginNames.of(name)
    return getattr(importlib.import_module(f"{names.package}.evaluator"), names.class_name)


@pytest.mark.parametrize("kind", ["similarity", "judge", "reasoning"])  # scalar: the install test below
def test_every_kind_conforms_as_generated(kind, tmp_path, monkeypatch):
    cls = _load_generated(kind, tmp_path, monkeypatch)
    report = run_checks(cls, episodes=8)
    assert report.ok, report.table()
    assert cls.kind == kind and cls.uses_references
    if kind != "similarity":  # the placeholder leaves a backend set before setup() (the swap probes') in place
        swap = next(c.detail for c in report.checks if c.name == "swap")
        assert "first image: cancelled in 8 of 8" in swap and "either position: kept in 8 of 8" in swap, swap
        assert report.status("tie-threshold") == "pass"


def test_reasoning_template_keeps_rationale_and_dimensions(tmp_path, monkeypatch):
    cls = _load_generated("reasoning", tmp_path, monkeypatch, name="scaffold-reasoning-output")
    evaluator = cls()
    (pred,) = evaluator.predict([e.without_gold() for e in demo_episodes(dataset_options={"users": "1"}, n=1)])
    assert pred.label.value in ("A", "B") and [d.name for d in pred.dimensions] == ["brightness", "contrast"]
    assert pred.rationale.startswith("- brightness: A ") and "<answer>" not in pred.rationale
    prompt_text = " ".join(p.value for p in evaluator.build_prompt(demo_episodes(n=1)[0]).parts if p.type == "text")
    assert "'- <aspect>: A <score>, B <score>'" in prompt_text


@pytest.mark.parametrize("kind", ["judge", "reasoning"])
def test_judge_placeholders_give_answer_probabilities_for_calibration(kind, tmp_path, monkeypatch):
    # the templates offer --option scoring=probs and the calibration reads those scores; the placeholder
    # gave none, so `--calibrate-tie-threshold` failed on a package run as generated
    from pigbench.calibration import calibrate_tie_threshold

    cls = _load_generated(kind, tmp_path, monkeypatch, name=f"scaffold-{kind}-probs")
    evaluator = cls(cls.Config(scoring="probs"))
    evaluator.setup()
    episodes = demo_episodes(n=12)
    preds = evaluator.predict([e.without_gold() for e in episodes])
    assert all(p.score_a is not None and abs(p.score_a + p.score_b - 1) < 1e-9 for p in preds), preds
    assert all(p.label.value == ("A" if p.score_a > 0.5 else "B" if p.score_a < 0.5 else "TIE") for p in preds)
    assert all(f"<answer>{p.label.value}</answer>" in p.raw_text for p in preds if p.label.value != "TIE")  # as answered
    assert {p.label.value for p in preds} >= {"A", "B"}
    assert calibrate_tie_threshold(evaluator, episodes).n == len(episodes)


@pytest.mark.slow
def test_scaffold_installs_registers_and_runs(tmp_path):
    root, _ = write_plugin("tiny-reward", "scalar", tmp_path / "pkg")
    site = tmp_path / "site"
    call = install_for_subprocesses(root, site)
    assert (next(site.glob("pigbench_tiny_reward-*.dist-info")) / "entry_points.txt").exists()

    listing = call("-m", "pigbench.cli", "list", "evaluators", "--verbose")
    assert "tiny-reward" in listing and "entry point of package 'pigbench-tiny-reward'" in listing
    table = call("-m", "pigbench.cli", "check-evaluator", "tiny-reward", "--episodes", "8")
    assert "tiny-reward: conforms (8 pass, 2 skip)" in table
    tests = call("-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests"), cwd=root)
    assert "2 passed" in tests
    call("-m", "pigbench.run", "--evaluator", "tiny-reward", "--dataset", "demo", "--limit", "20", "--no-progress",
         "--output", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"))
    (results,) = (tmp_path / "results" / "demo").glob("tiny-reward*.json")
    assert validate_results(results) == []
    assert json.loads(results.read_text())["evaluator"]["models"] == {"model_path": "placeholder"}


def test_installed_plugin_clashing_with_a_builtin_is_an_error_naming_both(tmp_path):
    dist_info = tmp_path / "site" / "pigbench_clash-0.1.0.dist-info"  # what pip would install
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: pigbench-clash\nVersion: 0.1.0\n")
    (dist_info / "entry_points.txt").write_text("[pigbench.evaluators]\nrandom = pigbench_clash.evaluator:Random\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    for command in (["-m", "pigbench.run", "--evaluator", "color-reference", "--limit", "5", "--output", str(tmp_path)],
                    ["-m", "pigbench.cli", "check-evaluator", "color-reference"],
                    ["-m", "pigbench.cli", "list"],
                    ["-m", "pigbench.cli", "new-evaluator", "fresh-name", "--out", str(tmp_path / "fresh")]):
        done = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 2, done.stderr
        assert ("evaluator name 'random' is registered twice: by built-in (pigbench.evaluators.random_choice:RandomChoice)"
                " and by entry point of package 'pigbench-clash' (pigbench_clash.evaluator:Random)") in done.stderr
