"""The results tree the report and leaderboard tests share (:func:`build_results_tree`), and the
XSS payload they plant in its free text; its synthetic runs are written by
:func:`pigbench.synthetic_results.make_results`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from pigbench.synthetic_results import make_results

XSS = '<script>window.__xss=1</script><img src=x onerror="alert(1)">'


def build_results_tree(root: Path, cache: Path) -> dict[str, Path]:
    """The results directory the report and leaderboard tests share, and its notable files:

    * runner output on the demo dataset (``random``, ``color-reference``; 4 users, 32 px images)
      and a toy reference-size sweep (``toy-brightness`` at K = 1, 2, 3);
    * synthetic runs: a reasoning evaluator with rationales and dimensions and an ablation variant,
      a scalar and a similarity evaluator on a second dataset, and a run whose evaluator name,
      rationale, dimension names and prompt carry XSS payloads;
    * ``bad/tampered.json``: a copy of a valid run with one stored metric changed (must be rejected).
    """
    from pigbench.runner import RunConfig, run
    from pigbench.sweep import sweep

    base = RunConfig(dataset="demo", output=str(root), cache_dir=str(cache), progress=False, n_bootstrap=100,
                     dataset_options={"users": "4", "size": "32"})
    files = {
        "random": run(dataclasses.replace(base, evaluator="random")).results_path,
        "color-reference": run(dataclasses.replace(base, evaluator="color-reference")).results_path,
    }
    toy = dataclasses.replace(base, evaluator="toy-brightness", dataset="toy", dataset_options={})
    for k, outcome in sweep(toy, [1, 2, 3], log=lambda m: None).items():
        files[f"toy-k{k}"] = outcome.results_path
    files["reasoner"] = make_results(
        root, "reasoner", "synth", kind="reasoning", uses_references=True, users=8, per_user=10, accuracy=0.8,
        dimensions=3, rationale=lambda i: f"A fits the user's liking for warm tones (case {i}).",
        config={"tie_threshold": 0.0, "dimensions": True})
    files["reasoner-ablation"] = make_results(
        root, "reasoner", "synth", kind="reasoning", uses_references=True, users=8, per_user=10, accuracy=0.65,
        variant="no-dims", config={"tie_threshold": 0.0, "dimensions": False})
    files["scorer"] = make_results(root, "scorer", "synth", kind="scalar", users=8, per_user=10, accuracy=0.6)
    files["matcher"] = make_results(root, "matcher", "synth", kind="similarity", uses_references=True, users=8,
                                    per_user=10, accuracy=0.7)
    files["xss"] = make_results(
        root, "evil" + XSS, "synth", kind="reasoning", uses_references=True, users=3, per_user=4, dimensions=2,
        dimension_names=("Mood " + XSS, "Light </script><script>window.__xss=3</script>", "Palette"),
        rationale=lambda i: "Because " + XSS, prompt="a cat " + XSS)
    tampered = root / "bad" / "tampered.json"
    tampered.parent.mkdir()
    source = files["scorer"]
    shutil.copyfile(source.with_name(source.stem + ".predictions.jsonl"), tampered.with_name("scorer.predictions.jsonl"))
    results = json.loads(source.read_text())
    results["metrics"]["acc_w_tie"]["micro"] += 5.0
    tampered.write_text(json.dumps(results))
    files["tampered"] = tampered
    return files
