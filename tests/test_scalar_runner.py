"""Embedding evaluators through the runner: results, provenance, on-disk embedding cache, resume."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from pigbench.results import validate_results
from pigbench.runner import RunConfig, run
from scalar_fixtures import tiny_clip_dir

pytestmark = pytest.mark.models


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runner") / "clip"
    tiny_clip_dir(folder)
    return folder


def _config(tmp_path, **kw):
    base = dict(dataset="toy", output=str(tmp_path / "results"), cache_dir=str(tmp_path / "cache"),
                progress=False, batch_size=8, n_bootstrap=50)
    return RunConfig(**{**base, **kw})


def test_clip_i_runs_end_to_end_and_caches_embeddings_on_disk(tmp_path, clip_dir):
    out = run(_config(tmp_path, evaluator="clip-i", model_path=str(clip_dir), options={"subtract_rejected": "true"}))
    assert validate_results(out.results_path) == []
    r = out.results
    assert r["evaluator"]["kind"] == "similarity" and r["evaluator"]["config"]["subtract_rejected"] is True
    models = r["evaluator"]["models"]
    assert models["model"] == str(clip_dir) and models["dtype"] == "float32"
    assert models["image_embedding"]["encoded_images"] > 0 and r["failures"]["count"] == 0
    (index,) = (tmp_path / "cache" / "embeddings").rglob("index.tsv")  # one line per stored feature
    assert len(index.read_text().splitlines()) == models["image_embedding"]["encoded_images"]
    assert models["image_embedding"]["encoder_calls"] == len(list(index.parent.glob("*.pt")))  # a file per batch
    # the runner's look-ahead (prepare) embedded every image in one stream: only full batches of 8 but the last
    assert models["image_embedding"]["encoder_calls"] == -(-models["image_embedding"]["encoded_images"] // 8)

    again = run(_config(tmp_path, evaluator="clip-i", model_path=str(clip_dir), options={"subtract_rejected": "true"}))
    assert again.computed == 0 and again.results["metrics"]["n"] == r["metrics"]["n"]


def test_pickscore_runs_with_a_local_processor_option(tmp_path, clip_dir):
    out = run(_config(tmp_path, evaluator="pickscore", model_path=str(clip_dir),
                      options={"processor_path": str(clip_dir)}, tie_threshold=0.5))
    assert validate_results(out.results_path) == []
    assert out.results["evaluator"]["tie_threshold"] == 0.5
    assert out.results["metrics"]["n"] > 0


def test_an_embedding_evaluator_conforms_with_its_look_ahead(clip_dir):
    from pigbench.conformance import run_checks

    report = run_checks("clip-i", options={"model_path": str(clip_dir)}, episodes=10)
    assert report.ok, report.table()
    assert report.status("look-ahead") == "pass"
