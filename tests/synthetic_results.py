"""Synthetic results files for the report and leaderboard tests.

:func:`make_results` writes a results JSON and its predictions JSONL through
:func:`pigbench.results.write_results`, with metrics from :func:`pigbench.metrics.compute_metrics`,
so the files pass ``validate_results``. Evaluator names, rationales and dimension names are free
text (the tests plant XSS payloads in them); predictions can carry rationales and dimensions the
way reasoning evaluators store them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import shutil
from pathlib import Path
from typing import Callable, Optional

from pigbench.metrics import compute_metrics
from pigbench.results import judged_from_rows, write_results

DIMENSIONS = ("Color palette", "Colour harmony", "Composition", "Lighting mood", "Texture detail",
              "Subject focus", "Background clutter", "Photorealism", "Warm tones", "Minimalist style")


def make_results(
    root: Path, evaluator: str, dataset: str = "synth", *, kind: str = "scalar", uses_references: bool = False,
    variant: Optional[str] = None, users: int = 6, per_user: int = 10, accuracy: float = 0.7,
    reference_size: int | str = 4, seed: int = 0, config: Optional[dict] = None,
    rationale: Optional[Callable[[int], str]] = None, dimensions: int = 0, dimension_names=DIMENSIONS,
    n_bootstrap: int = 50, extra: Optional[dict] = None, prompt: str = "a red hydrant on the grass",
) -> Path:
    """Write a valid results file under ``root/<dataset>/`` and return its path.

    Each prediction is right with probability ``accuracy`` (a wrong one is the other side or TIE).
    ``rationale(i)`` gives the i-th prediction's rationale; ``dimensions`` > 0 adds that many
    dimensions per prediction, drawn from a per-user subset of ``dimension_names``."""
    rng = random.Random(f"{evaluator}/{dataset}/{variant}/{seed}")
    rows = []
    for u in range(users):
        user_dims = rng.sample(list(dimension_names), k=min(len(dimension_names), dimensions + 2)) if dimensions else []
        for t in range(per_user):
            i = len(rows)
            gold = rng.choices(["A", "B", "TIE"], weights=[45, 45, 10])[0]
            label = gold if rng.random() < accuracy else rng.choice([x for x in ("A", "B", "TIE") if x != gold])
            pred: dict = {"sample_id": f"u{u}/t{t}", "label": label}
            if kind in ("scalar", "similarity"):
                delta = {"A": 1.0, "B": -1.0, "TIE": 0.0}[label] * (0.5 + rng.random())
                pred.update(score_a=round(0.5 + delta / 2, 6), score_b=round(0.5 - delta / 2, 6))
            if rationale:
                pred["rationale"] = rationale(i)
            if user_dims:
                pred["dimensions"] = [
                    {"name": name, "definition": f"how well the image shows {name.lower()}",
                     "score_a": rng.randint(1, 10), "score_b": rng.randint(1, 10)}
                    for name in rng.sample(user_dims, k=dimensions)
                ]
            if extra:
                pred["extra"] = extra
            rows.append({"sample_id": pred["sample_id"], "user_id": f"user{u}", "prompt": prompt, "gold": gold,
                         "prediction": pred})
    metrics = compute_metrics(judged_from_rows(rows), n_bootstrap=n_bootstrap, seed=0)
    config = {"tie_threshold": 0.0} if config is None else config
    results = {
        "schema_version": "1.0",
        "evaluator": {"name": evaluator, "variant": variant, "version": "1", "kind": kind,
                      "uses_references": uses_references, "description": f"synthetic {kind} evaluator",
                      "config": config,
                      "config_hash": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
                      "tie_threshold": config.get("tie_threshold"), "tie_threshold_source": "fixed",
                      "swap": False, "models": {"model": "synthetic/none"}},
        "dataset": {"name": dataset, "source": {"generator": "tests/synthetic_results.py"},
                    "description": f"synthetic dataset {dataset}", "license": "CC0-1.0"},
        "split": {"seed": seed, "reference_size": reference_size, "fingerprint": f"fp-{dataset}-{reference_size}-{seed}",
                  "users": users, "targets": len(rows), "targets_before_limit": len(rows),
                  "skipped_users": {}, "skipped_records": {}, "skip_examples": {}},
        "metrics": metrics,
        "failures": {"count": 0, "reasons": {}},
        "provenance": {"pigbench_version": "0.1.0", "git_commit": None, "git_dirty": None,
                       "created_at": "2026-01-01T00:00:00+00:00", "command": "synthetic",
                       "hardware": {"platform": "test"}, "device": "cpu", "batch_size": 1,
                       "wall_time_s": 0.0, "resumed_samples": 0},
    }
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", evaluator) + (f"__{variant}" if variant else "")
    path = root / re.sub(r"[^A-Za-z0-9_-]+", "_", dataset) / f"{safe}.json"
    write_results(path, results, rows)
    return path


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
