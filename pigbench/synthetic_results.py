"""Synthetic results files: valid runs of made-up evaluators, written without a model or a dataset.

:func:`make_results` writes a results JSON and its predictions JSONL through
:func:`pigbench.results.write_results`, with metrics from :func:`pigbench.metrics.compute_metrics`,
so the files pass ``validate_results``. Evaluator names, rationales and dimension names are free
text; predictions can carry rationales and dimensions the way reasoning evaluators store them.
The report and leaderboard tests (``tests/synthetic_results.py``) and the report benchmark
(``benchmarks/report_scale.py``) build their results trees with it. The same arguments write the
same bytes.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Callable, Optional

from pigbench.metrics import compute_metrics
from pigbench.results import judged_from_rows, write_results

DIMENSIONS = ("Color palette", "Colour harmony", "Composition", "Lighting mood", "Texture detail",
              "Subject focus", "Background clutter", "Photorealism", "Warm tones", "Minimalist style")


def make_results(
    root: Path, evaluator: str, dataset: str = "synth", *, kind: str = "scalar", uses_references: bool = False,
    variant: Optional[str] = None, users: int = 6, per_user: int = 10, predictions: Optional[int] = None,
    accuracy: float = 0.7,
    reference_size: int | str = 4, seed: int = 0, config: Optional[dict] = None,
    rationale: Optional[Callable[[int], str]] = None, dimensions: int = 0, dimension_names=DIMENSIONS,
    n_bootstrap: int = 50, extra: Optional[dict] = None, prompt: str = "a red hydrant on the grass",
) -> Path:
    """Write a valid results file under ``root/<dataset>/`` and return its path.

    ``users`` users of ``per_user`` targets each; or, with ``predictions``, that many targets,
    ``per_user`` to a user in turn (the last user may have fewer; ``users`` is then not used).
    Each prediction is right with probability ``accuracy`` (a wrong one is the other side or TIE).
    ``rationale(i)`` gives the i-th prediction's rationale; ``dimensions`` > 0 adds that many
    dimensions per prediction, drawn from a per-user subset of ``dimension_names``."""
    rng = random.Random(f"{evaluator}/{dataset}/{variant}/{seed}")
    rows = []
    for i in range(users * per_user if predictions is None else predictions):
        u, t = divmod(i, per_user)
        if t == 0:
            user_dims = rng.sample(list(dimension_names), k=min(len(dimension_names), dimensions + 2)) if dimensions else []
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
        "dataset": {"name": dataset, "source": {"generator": "pigbench/synthetic_results.py"},
                    "description": f"synthetic dataset {dataset}", "license": "CC0-1.0"},
        "split": {"seed": seed, "reference_size": reference_size, "fingerprint": f"fp-{dataset}-{reference_size}-{seed}",
                  "users": len({r["user_id"] for r in rows}), "targets": len(rows), "targets_before_limit": len(rows),
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
