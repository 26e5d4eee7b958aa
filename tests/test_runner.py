"""Runner end to end on the toy plug-ins: results, resume after SIGKILL, failures, swap, validation."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pigbench.metrics import metric_differences
from pigbench.results import validate_results
from pigbench.runner import RunAborted, RunConfig, _variant_suffix, build_evaluator, check_device, run

TESTS = Path(__file__).resolve().parent


def config(tmp_path, **kw):
    base = dict(evaluator="toy-brightness", dataset="toy", output=str(tmp_path / "results"),
                cache_dir=str(tmp_path / "cache"), progress=False, batch_size=4, n_bootstrap=200)
    base.update(kw)
    return RunConfig(**base)


def predictions(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_run_writes_valid_results_with_provenance(tmp_path):
    out = run(config(tmp_path))
    r = out.results
    assert out.results_path == tmp_path / "results" / "toy" / "toy-brightness.json"
    assert validate_results(out.results_path) == []
    assert r["metrics"]["n"] == r["split"]["targets"] == 12 * 5
    assert r["metrics"]["acc_w_tie"]["micro"] > 60  # brightness agrees with ~80% of choices
    assert r["split"]["reference_size"] == 3 and len(r["split"]["fingerprint"]) == 16
    prov = r["provenance"]
    assert prov["batch_size"] == 4 and prov["pigbench_version"] and "platform" in prov["hardware"]
    assert r["evaluator"]["config_hash"] and r["evaluator"]["config"]["tie_threshold"] == 0.0
    rows = predictions(out.results_path.with_name("toy-brightness.predictions.jsonl"))
    assert len({row["sample_id"] for row in rows}) == len(rows) == 60
    assert all(row["prediction"]["score_a"] is not None for row in rows)


def test_a_limited_run_records_how_many_targets_the_split_had(tmp_path):
    r = run(config(tmp_path, limit=7)).results
    assert (r["metrics"]["n"], r["split"]["targets"], r["split"]["targets_before_limit"]) == (7, 7, 60)


def test_the_full_run_reuses_the_predictions_of_a_limited_run_before_it(tmp_path):
    """--limit 7 (a smoke test) changed the split fingerprint in the run key, so the full run after
    it predicted its first 7 targets (the same episodes) again."""
    smoke = run(config(tmp_path, limit=7))
    full = run(config(tmp_path))
    assert (full.resumed, full.computed) == (smoke.computed, 60 - 7) == (7, 53)
    assert full.results["provenance"]["resumed_samples"] == 7
    alone = run(config(tmp_path / "alone"))  # the same run, uninterrupted, in a cache of its own
    assert alone.resumed == 0 and full.results["split"] == alone.results["split"]
    assert metric_differences(full.results["metrics"], alone.results["metrics"]) == []
    assert (predictions(full.results_path.with_name("toy-brightness.predictions.jsonl"))
            == predictions(alone.results_path.with_name("toy-brightness.predictions.jsonl")))
    bigger = run(config(tmp_path, limit=20))  # every target is in the store now
    assert (bigger.resumed, bigger.computed) == (20, 0)
    assert bigger.results_path.name == "toy-brightness__limit20.json" and validate_results(bigger.results_path) == []
    split = bigger.results["split"]
    assert (split["targets"], split["targets_before_limit"]) == (20, 60)
    assert split["fingerprint"] != alone.results["split"]["fingerprint"]
    assert split == run(config(tmp_path / "fresh", limit=20)).results["split"]


def test_a_limited_run_of_another_split_is_not_reused(tmp_path):
    """Only runs of the same whole split share a limited run's predictions, not one with another
    --seed or --reference-size (the same sample id there can be another episode)."""
    run(config(tmp_path, limit=7, seed=1))
    run(config(tmp_path, limit=7, reference_size=2))
    later = ({}, {"seed": 2, "limit": 7}, {"seed": 1}, {"reference_size": 2})
    assert [run(config(tmp_path, **kw)).resumed for kw in later] == [0, 0, 7, 7]


def test_rerun_reuses_store_and_gives_identical_metrics(tmp_path):
    first = run(config(tmp_path))
    second = run(config(tmp_path))
    assert second.computed == 0 and second.resumed == first.computed
    assert (first.results["provenance"]["resumed_samples"], second.results["provenance"]["resumed_samples"]) == (0, 60)
    assert first.results["provenance"]["world_size"] == second.results["provenance"]["world_size"] == 1
    assert metric_differences(first.results["metrics"], second.results["metrics"]) == []


def test_a_rerun_with_every_prediction_stored_records_the_model_provenance_too(tmp_path, monkeypatch):
    from toy import ToyBrightness

    monkeypatch.setattr(ToyBrightness, "setup", lambda self: setattr(self, "loaded", "rev-1"))
    monkeypatch.setattr(ToyBrightness, "provenance", lambda self: {"revision": getattr(self, "loaded", None)})
    first = run(config(tmp_path))
    second = run(config(tmp_path))  # killed after the last batch was stored, say, or run again to rewrite the file
    assert second.computed == 0
    assert second.results["evaluator"]["models"] == first.results["evaluator"]["models"] == {"revision": "rev-1"}


def test_the_recorded_command_of_a_module_run_is_the_command_that_ran(tmp_path):
    args = ["--evaluator", "random", "--limit", "5", "--output", str(tmp_path), "--cache-dir", str(tmp_path / "c"),
            "--no-progress"]
    subprocess.run([sys.executable, "-m", "pigbench.run", *args], check=True, capture_output=True, timeout=120)
    results = json.loads((tmp_path / "demo" / "random__limit5.json").read_text())
    assert results["provenance"]["command"] == " ".join(["python -m pigbench.run", *args])  # not "run.py ..."


def test_tie_threshold_changes_config_hash_and_variant(tmp_path):
    out = run(config(tmp_path, tie_threshold=1000.0))
    assert out.results["metrics"]["predicted_tie_rate"] == 1.0
    assert "cfg" in out.results_path.name


def test_failing_samples_are_invalid_and_counted(tmp_path):
    out = run(config(tmp_path, options={"fail_levels": "[0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]"}))
    fails = out.results["failures"]
    assert fails["count"] > 0 and any("cannot score image" in reason for reason in fails["reasons"])
    assert out.results["metrics"]["invalid_rate"] == fails["count"] / out.results["metrics"]["n"]
    assert validate_results(out.results_path) == []


def test_rerunning_a_finished_run_with_a_few_failed_samples_is_not_aborted(tmp_path):
    """A rerun predicts only the failed samples again; when they fail again, the budget is the
    whole run's share (9 of 60), not the remainder's (9 of 9), and the results are the first run's."""
    cfg = config(tmp_path, options={"fail_levels": "[0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]"})
    first = run(cfg)
    failed = first.results["failures"]["count"]
    assert 0 < failed <= cfg.max_error_rate * first.results["metrics"]["n"]
    again = run(cfg)
    assert (again.computed, again.resumed) == (failed, first.results["metrics"]["n"] - failed)
    assert again.results["failures"] == first.results["failures"]
    assert metric_differences(again.results["metrics"], first.results["metrics"]) == []
    with pytest.raises(RunAborted, match=r"samples failed \(more than 10%\)"):  # a budget the run does exceed
        run(config(tmp_path, options=cfg.options, max_error_rate=0.1))
    n = first.results["metrics"]["n"]
    exact = run(config(tmp_path, options=cfg.options, max_error_rate=failed / n))  # a share equal to the budget is within it
    assert exact.results["failures"]["count"] == failed


def test_unparseable_answers_are_invalid_but_not_failures(tmp_path):
    """An answer that does not parse is a result (INVALID, counted in answer_quality), not a failed
    sample: it neither spends the error budget nor is counted in failures."""
    import time

    from pigbench.evaluator import Evaluator
    from pigbench.protocol import Label, Prediction
    from pigbench.runner import _predict_all, build_evaluator, load_split, write_run_results
    from pigbench.store import PredictionStore

    class MumblingJudge(Evaluator):
        def predict(self, episodes):
            return [Prediction(e.sample_id, Label.INVALID, raw_text="hmm", extra={"invalid_reason": "no answer"})
                    for e in episodes]

    cfg = config(tmp_path, min_samples_for_error_rate=1, max_error_rate=0.0)
    adapter, split = load_split(cfg)
    with PredictionStore(tmp_path / "s.sqlite") as store:
        _predict_all(MumblingJudge(), split.episodes, store, cfg, lambda m: None)  # not aborted
        stored = store.load()
    results, _ = write_run_results(cfg, build_evaluator(cfg), adapter, split, stored, 0, time.time())
    assert results["failures"] == {"count": 0, "reasons": {}} and results["metrics"]["invalid_rate"] == 1.0
    assert results["answer_quality"]["unparseable_reasons"] == {"no answer": 60}


def test_error_budget_stops_run_and_keeps_finished_work(tmp_path):
    levels = json.dumps(list(range(0, 250, 2)))  # every image fails
    with pytest.raises(RunAborted, match="samples failed"):
        run(config(tmp_path, options={"fail_levels": levels}, max_error_rate=0.2, min_samples_for_error_rate=8))
    stores = list((tmp_path / "cache" / "runs").glob("*.sqlite"))
    assert len(stores) == 1
    assert sqlite3.connect(stores[0]).execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 8


def test_a_small_run_whose_samples_mostly_fail_is_aborted_at_its_end(tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_SERVER_DOWN", "1")
    with pytest.raises(RunAborted, match="^5 of 5 samples failed"):
        run(config(tmp_path, limit=5))  # fewer samples than min_samples_for_error_rate


def test_failed_samples_are_predicted_again_on_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("TOY_SERVER_DOWN", "1")
    with pytest.raises(RunAborted, match="reuses the successful ones and predicts the failed ones again"):
        run(config(tmp_path))
    monkeypatch.delenv("TOY_SERVER_DOWN")
    out = run(config(tmp_path))
    assert out.resumed == 0 and out.computed == out.results["split"]["targets"]
    assert out.results["failures"]["count"] == 0 and out.results["metrics"]["invalid_rate"] == 0.0
    again = run(config(tmp_path))
    assert again.computed == 0 and again.resumed == out.computed


def test_dataset_options_are_part_of_what_a_resumed_run_reuses(tmp_path):
    base = dict(evaluator="color-reference", dataset="demo", limit=20)
    first = run(config(tmp_path, **base))
    smaller = run(config(tmp_path, **base, dataset_options={"size": "32"}))  # same split, other pixels
    assert smaller.results["split"]["fingerprint"] == first.results["split"]["fingerprint"]
    assert (smaller.computed, smaller.resumed) == (20, 0)
    assert smaller.results_path.name == "color-reference__limit20_opt-size32.json"


def three_set_dataset(tmp_path, images: int) -> tuple[Path, list[dict], list[dict], RunConfig]:
    """A PIGBench-format dataset of 3 four-image sets ranked by 2 users, over ``images`` distinct
    PNGs (the sets use the first 12): its folder, instances, rankings and a color-reference config."""
    from PIL import Image

    from pigbench.adapters.pigbench_format import write_dataset

    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (8, 8), (10 * i, 255 - 10 * i, 7 * i)).save(root / "images" / f"{i}.png")
    instances = [dict(instance_id=f"i{j}", base_prompt=f"prompt {j}", category="c", challenge="c", prompts=["p"] * 4,
                      images=[f"images/{4 * j + k}.png" for k in range(4)], generator="g", seeds=[0, 1, 2, 3])
                 for j in range(3)]
    rankings = [dict(user_id=f"u{u}", instance_id=f"i{j}", ranks=[1, 2, 3, 4] if u else [4, 3, 2, 1])
                for u in range(2) for j in range(3)]
    write_dataset(root, instances, rankings)
    return root, instances, rankings, config(tmp_path, evaluator="color-reference", dataset="pigbench", dataset_path=str(root))


def test_a_dataset_whose_prompts_or_image_files_changed_is_predicted_again(tmp_path):
    """The fingerprint (sample ids, reference ids, golds) does not see an instance pointed at other
    image files or an edited prompt: the run key must, or the old predictions were reused."""
    from pigbench.adapters.pigbench_format import write_dataset

    root, instances, rankings, cfg = three_set_dataset(tmp_path, 24)
    first = run(cfg)
    assert (first.computed, run(cfg).computed) == (12, 0)
    write_dataset(root, [dict(d, images=[f"images/{12 + 4 * j + k}.png" for k in range(4)])
                         for j, d in enumerate(instances)], rankings)
    other_images = run(cfg)
    assert other_images.results["split"]["fingerprint"] == first.results["split"]["fingerprint"]
    assert (other_images.computed, other_images.resumed) == (12, 0)
    write_dataset(root, [dict(instances[0], base_prompt="an edited prompt"), *instances[1:]], rankings)
    assert run(cfg).computed == 12


def test_image_files_written_again_with_other_pixels_are_predicted_again(tmp_path):
    """The key named image files by path only: images rendered anew into the same files (PIP's, which
    each user renders) reused the predictions of the old pixels. Their stamps are in the key now."""
    from PIL import Image

    root, _, _, cfg = three_set_dataset(tmp_path, 12)
    assert (run(cfg).computed, run(cfg).computed) == (12, 0)
    Image.effect_noise((8, 8), 60).convert("RGB").save(root / "images" / "5.png")
    again = run(cfg)
    assert (again.computed, again.resumed) == (12, 0)


def test_image_stamps_tell_contents_apart_without_decoding(tmp_path):
    """ImageRef.stamp: a known hash wins over the file's size, a file's size changes the stamp, a
    missing file is "missing", in-memory bytes are hashed."""
    from pigbench.protocol import ImageRef

    path = tmp_path / "a.png"
    path.write_bytes(b"12345")
    assert ImageRef("a", path).stamp() == "5" and ImageRef("a", str(path)).stamp() == "5"
    assert ImageRef("a", path, known_hash="h1").stamp() == "h1"  # pixels rewritten at the same size: the hash tells
    assert ImageRef("a", tmp_path / "none.png").stamp() == "missing"
    assert ImageRef("a", b"one").stamp() != ImageRef("a", b"two").stamp()
    assert ImageRef("a", lambda: b"one").stamp() == ""


def test_the_inputs_digest_stamps_every_image_of_an_episode(tmp_path):
    """A target's images, a reference's preferred and rejected image and its ranking's images, rewritten
    with other contents, each change the run key's inputs digest."""
    from pigbench.protocol import Episode, ImageRef, Label, ReferencePair, Target
    from pigbench.runner import _inputs_digest

    names = ("ta", "tb", "rp", "rr", "rank")
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    im = {n: ImageRef(n, tmp_path / n) for n in names}
    ref = ReferencePair("p", im["rp"], im["rr"], ranking=((im["rank"], 1), (im["rr"], 2)))
    episodes = [Episode("u", (ref,), Target("s", "q", im["ta"], im["tb"], Label.A))]
    first = _inputs_digest(episodes)
    for n in names:
        (tmp_path / n).write_bytes(b"xy")
        assert _inputs_digest(episodes) != first, n
        (tmp_path / n).write_bytes(b"x")
    assert _inputs_digest(episodes) == first


def test_dtype_auto_keys_the_store_by_device_type(tmp_path):
    """dtype=auto is float16 on CUDA and float32 on CPU: a GPU run reused a CPU run's stored predictions."""
    from pigbench.evaluator import Runtime
    from pigbench.registry import evaluators
    from pigbench.runner import load_split, run_key

    _, split = load_split(config(tmp_path))
    cls = evaluators.get("pickscore")

    def key(device, **options):
        ev = cls(cls.Config.from_options(options), Runtime(device=device))
        ev.name = "pickscore"
        return run_key(ev, split, False, {})

    assert key("cpu") != key("cuda") == key("cuda:1")
    assert key("cpu", dtype="float32") == key("cuda", dtype="float32")


def test_model_files_saved_again_or_chosen_by_an_environment_variable_change_the_run_key(tmp_path, monkeypatch):
    """The config hash holds a model's path, not its files: a checkpoint saved again at the same
    --model-path, or $PIGBENCH_PICKSCORE_PATH pointing elsewhere, reused the old predictions."""
    from pigbench.evaluator import Runtime
    from pigbench.registry import evaluators
    from pigbench.runner import load_split, run_key

    _, split = load_split(config(tmp_path))
    cls = evaluators.get("pickscore")
    monkeypatch.delenv("PIGBENCH_PICKSCORE_PATH", raising=False)

    def key(**options):
        ev = cls(cls.Config.from_options(options), Runtime(device="cpu"))
        ev.name = "pickscore"
        return run_key(ev, split, False, {})

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"first")
    first = key(model_path=str(model))
    assert key(model_path=str(model)) == first
    (model / "model.safetensors").write_bytes(b"other")  # same size, saved again
    os.utime(model / "model.safetensors", ns=(1, 10**18))
    assert key(model_path=str(model)) != first
    hub = key()
    monkeypatch.setenv("PIGBENCH_PICKSCORE_PATH", "someone/another-pickscore")
    assert key() != hub
    monkeypatch.setenv("PIGBENCH_PICKSCORE_PATH", str(model))
    assert key() != hub


def cache_snapshot(hub, repo_id, commit):
    """A fake hub cache entry: ``repo_id``'s refs/main names ``commit``, whose snapshot folder exists."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def test_a_new_hub_commit_in_the_cache_changes_the_run_key(tmp_path, monkeypatch):
    """A hub id counted by its text only: after the cache downloaded a new commit of the model, the
    predictions of the old weights were reused. Uncached hub ids and local paths keep their keys."""
    import hashlib

    from pigbench.evaluator import Runtime
    from pigbench.file_stamp import local_files_stamp
    from pigbench.registry import evaluators
    from pigbench.runner import load_split, run_key

    _, split = load_split(config(tmp_path))
    cls = evaluators.get("pickscore")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("PIGBENCH_PICKSCORE_PATH", raising=False)

    def key(**options):
        ev = cls(cls.Config.from_options(options), Runtime(device="cpu"))
        ev.name = "pickscore"
        return run_key(ev, split, False, {})

    text = key(model_path="someorg/pickscore")
    assert local_files_stamp(["someorg/pickscore"]) == hashlib.sha256(b'[["someorg/pickscore"], []]').hexdigest()[:12]
    cache_snapshot(tmp_path / "hub", "someorg/pickscore", "a" * 40)
    commit_a = key(model_path="someorg/pickscore")
    assert commit_a != text and key(model_path="someorg/pickscore") == commit_a
    cache_snapshot(tmp_path / "hub", "someorg/pickscore", "b" * 40)
    assert key(model_path="someorg/pickscore") not in (text, commit_a)
    (tmp_path / "hub" / "models--someorg--pickscore" / "refs" / "main").write_text("c" * 40)  # no such snapshot
    assert key(model_path="someorg/pickscore") == text
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "other-hub"))
    assert key(model_path="someorg/pickscore") == text

    monkeypatch.chdir(tmp_path)  # a local folder org/model is stamped by its files, whatever the cache holds
    (tmp_path / "org" / "model").mkdir(parents=True)
    (tmp_path / "org" / "model" / "model.safetensors").write_bytes(b"w")
    local = key(model_path="org/model")
    cache_snapshot(tmp_path / "other-hub", "org/model", "a" * 40)
    assert key(model_path="org/model") == local


def test_the_hub_cache_is_found_where_huggingface_hub_looks_and_only_uncached_hub_ids_count_as_downloads(tmp_path, monkeypatch):
    """A wrong cache folder (HF_HOME itself, not HF_HOME/hub) stamps no commit, and every run of a
    hub model would set up before its key; a local folder or a plain name is no download."""
    from pigbench.file_stamp import hub_cache_dir, hub_commit, uncached_hub_ids

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "legacy"))
    assert hub_cache_dir() == tmp_path / "legacy"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hub_cache_dir() == tmp_path / "hub"

    cache_snapshot(tmp_path / "hub", "someorg/cached", "a" * 40)
    (tmp_path / "hub" / "models--someorg--cached" / "refs" / "main").write_text("a" * 40 + "\n")  # a trailing newline
    assert hub_commit("someorg/cached") == "a" * 40
    (tmp_path / "local").mkdir()
    assert uncached_hub_ids(["someorg/cached", "someorg/uncached", str(tmp_path / "local"), "gpt-4o", "", "someorg/uncached"]) == [
        "someorg/uncached"]


def test_a_served_models_name_is_not_stamped_from_this_machines_hub_cache(tmp_path, monkeypatch):
    """With backend=openai the model is the server's: downloading a model of the same name into the
    local cache changed the key and threw away the served run's predictions. A local judge stamps it."""
    from pigbench.evaluator import Runtime
    from pigbench.registry import evaluators
    from pigbench.runner import load_split, run_key

    _, split = load_split(config(tmp_path))
    cls = evaluators.get("qwen2-vl-judge")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))

    def key(backend):
        ev = cls(cls.Config(backend=backend, model_path="Qwen/Qwen2-VL-7B-Instruct"), Runtime(device="cpu"))
        ev.name = "qwen2-vl-judge"
        return run_key(ev, split, False, {})

    before = key("openai"), key("local")
    cache_snapshot(tmp_path / "hub", "Qwen/Qwen2-VL-7B-Instruct", "a" * 40)
    assert key("openai") == before[0] and key("local") != before[1]


def test_a_run_that_downloads_a_hub_model_is_resumed_by_the_next_run_until_a_new_commit(tmp_path, monkeypatch):
    """The key was computed before setup() downloaded the model: the next run, whose key stamps the
    cached commit, predicted everything again. Now the first run sets up before its key."""
    from pigbench.registry import evaluators
    from toy import ToyBrightness

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    commit = ["a" * 40]
    calls = []

    def setup(self):  # what a model loader does with a hub id: download its current commit into the cache
        calls.append(self)
        cache_snapshot(hub, "someorg/toy-model", commit[0])

    name = "toy-hub-model"
    evaluators.register(name)(type("HubToy", (ToyBrightness,), {"setup": setup,
                                                                "model_sources": lambda self: ["someorg/toy-model"]}))
    first = run(config(tmp_path, evaluator=name))
    assert first.computed == 60 and len(calls) == 1
    second = run(config(tmp_path, evaluator=name))
    assert (second.computed, second.resumed, len(calls)) == (0, 60, 2)
    commit[0] = "b" * 40
    cache_snapshot(hub, "someorg/toy-model", commit[0])
    assert run(config(tmp_path, evaluator=name)).computed == 60


def test_pigreward_contexts_are_keyed_by_the_reasoner_files(tmp_path):
    """Cached user contexts of a reasoner saved again at the same local path were reused."""
    from pigbench.pigreward.config import PIGRewardConfig

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"first")
    local, served = PIGRewardConfig(reasoner_path=str(tmp_path)), PIGRewardConfig(reasoner_path=str(tmp_path), backend="openai")
    before = local.reasoner_fingerprint(), served.reasoner_fingerprint()
    os.utime(weights, ns=(1, 10**18))
    assert local.reasoner_fingerprint() != before[0]
    assert served.reasoner_fingerprint() == before[1]  # a served model's name is not a local file
    adapter = tmp_path / "lora"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"first")
    tuned = PIGRewardConfig(reasoner_path=str(weights), reasoner_adapter=str(adapter))  # the adapter is no file of the reasoner
    before = tuned.reasoner_fingerprint()
    os.utime(adapter / "adapter_model.safetensors", ns=(1, 10**18))  # the adapter trained again at the same path
    assert tuned.reasoner_fingerprint() != before


def test_pigreward_contexts_are_keyed_by_the_cached_commit_of_a_hub_reasoner(tmp_path, monkeypatch):
    """Cached user contexts of a hub reasoner were reused after the cache downloaded a new commit."""
    from pigbench.pigreward.config import PIGRewardConfig

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    local, served = PIGRewardConfig(reasoner_path="someorg/reasoner"), PIGRewardConfig(reasoner_path="someorg/reasoner", backend="openai")
    cache_snapshot(tmp_path / "hub", "someorg/reasoner", "a" * 40)
    before = local.reasoner_fingerprint(), served.reasoner_fingerprint()
    cache_snapshot(tmp_path / "hub", "someorg/reasoner", "b" * 40)
    assert local.reasoner_fingerprint() != before[0]
    assert served.reasoner_fingerprint() == before[1]  # a served model is not the cached one


def test_damaged_safetensors_names_exactly_the_unreadable_weight_files(tmp_path):
    """A zero-byte or truncated shard is named; a sound shard, other files and hub ids are not."""
    pytest.importorskip("safetensors")
    import numpy as np
    from safetensors.numpy import save_file

    from pigbench.file_stamp import damaged_safetensors

    model = tmp_path / "model"
    model.mkdir()
    save_file({"w": np.zeros((4, 4), dtype=np.float32)}, str(model / "model-00001-of-00003.safetensors"))
    sound = (model / "model-00001-of-00003.safetensors").read_bytes()
    (model / "model-00002-of-00003.safetensors").write_bytes(sound[:-8])
    (model / "model-00003-of-00003.safetensors").write_bytes(b"")
    (model / "config.json").write_text("{}")
    assert damaged_safetensors([str(model), "someone/a-hub-model", ""]) == [
        str(model / "model-00002-of-00003.safetensors"), str(model / "model-00003-of-00003.safetensors")]
    assert damaged_safetensors([str(model / "model-00001-of-00003.safetensors")]) == []


def test_the_damaged_weights_message_names_none_one_or_every_damaged_file():
    from pigbench.file_stamp import damaged_message

    assert damaged_message([], "E") == "a .safetensors weight file of the model is damaged or truncated (E); download it again"
    assert damaged_message(["/m/a.safetensors"], "E").startswith("the weight file /m/a.safetensors is damaged")
    assert damaged_message(["/m/a.safetensors", "/m/b.safetensors"], "E").startswith(
        "the weight files /m/a.safetensors, /m/b.safetensors are damaged")


def test_damaged_safetensors_in_the_hub_cache_are_named(tmp_path, monkeypatch):
    """The default judges and PIGReward load hub ids, yet only local folders were searched: a shard cut
    short in the hub cache gave 'the judge model at 'Qwen/...' could not be read: SafetensorError: ...'
    naming no file. The cached snapshot of a hub id is searched too."""
    pytest.importorskip("safetensors")
    import numpy as np
    from safetensors.numpy import save_file

    from pigbench.file_stamp import damaged_safetensors

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    cache_snapshot(tmp_path / "hub", "someorg/judge", "c" * 40)
    snapshot = tmp_path / "hub" / "models--someorg--judge" / "snapshots" / ("c" * 40)
    save_file({"w": np.zeros((4, 4), dtype=np.float32)}, str(snapshot / "model-00001-of-00002.safetensors"))
    (snapshot / "model-00002-of-00002.safetensors").write_bytes(b"")
    assert damaged_safetensors(["someorg/judge", "someorg/not-cached"]) == [str(snapshot / "model-00002-of-00002.safetensors")]


def test_a_dataset_option_that_is_a_path_gives_a_file_name_not_folders(tmp_path):
    cfg = config(tmp_path, dataset_options={"images": "/data/pip/images"})
    suffix = _variant_suffix(cfg, build_evaluator(cfg))
    assert "/" not in suffix and suffix.startswith("__opt") and len(suffix) == len("__opt") + 12


def test_a_flag_and_an_option_for_the_same_field_must_agree(tmp_path):
    with pytest.raises(ValueError, match="--tie-threshold 0.5 and --option tie_threshold=0.1 disagree"):
        build_evaluator(config(tmp_path, tie_threshold=0.5, options={"tie_threshold": "0.1"}))
    assert build_evaluator(config(tmp_path, tie_threshold=0.5, options={"tie_threshold": "0.5"})).config.tie_threshold == 0.5


def test_an_option_spelled_with_dashes_is_the_same_field_as_with_underscores(tmp_path):
    """tie-threshold=0.1 was not compared with --tie-threshold 0.5 (one of them won silently), and
    tie-threshold with tie_threshold went to the same field, the last one given winning."""
    with pytest.raises(ValueError, match="^--tie-threshold 0.5 and --option tie-threshold=0.1 disagree"):
        build_evaluator(config(tmp_path, tie_threshold=0.5, options={"tie-threshold": "0.1"}))
    assert build_evaluator(config(tmp_path, tie_threshold=0.5, options={"tie-threshold": "0.5"})).config.tie_threshold == 0.5
    with pytest.raises(ValueError, match=r"^option tie_threshold given twice \(tie-threshold=0.1 and tie_threshold=0.5\); give it once$"):
        build_evaluator(config(tmp_path, options={"tie-threshold": "0.1", "tie_threshold": "0.5"}))


@pytest.mark.parametrize("flag, option", [(0.0, "0"), (0.1, ".1"), (0.5, "0.50")])
def test_a_flag_and_an_option_agreeing_in_value_but_not_in_spelling_are_one_setting(tmp_path, flag, option):
    ev = build_evaluator(config(tmp_path, tie_threshold=flag, options={"tie_threshold": option}))
    assert ev.config.tie_threshold == flag


@pytest.mark.parametrize("settings", [dict(tie_threshold=-0.0), dict(options={"tie_threshold": "-0"})])
def test_a_negative_zero_tau_is_the_default_config(tmp_path, settings):
    """-0.0 passes the >= 0 check; in the config hash it was another run than the default's."""
    ev = build_evaluator(config(tmp_path, **settings))
    assert ev.config_hash == build_evaluator(config(tmp_path)).config_hash


@pytest.mark.parametrize("options, message", [({"tie_threshold": "nan"}, "tie_threshold must be a finite number >= 0"),
                                              ({"tie_threshold": "-1"}, "tie_threshold must be a finite number >= 0")])
def test_scalar_options_no_run_can_use_are_refused(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        build_evaluator(config(tmp_path, options=options))


@pytest.mark.parametrize("tau", [float("inf"), -1.0, float("nan")])
def test_a_tie_threshold_flag_must_be_finite_and_not_negative(tmp_path, tau):
    """--tie-threshold inf passed the >= 0 check and was written to the results file as Infinity,
    which is no JSON number (strict readers refuse the file); pigbench score took it the same way."""
    with pytest.raises(ValueError, match=r"^tie_threshold must be >= 0 and finite .*\(--tie-threshold\)$"):
        config(tmp_path, tie_threshold=tau)


@pytest.mark.parametrize("name, size", [("color-reference", 0), ("color-reference", 5000), ("ssim-reference", 11),
                                        ("ssim-reference", 100000)])
def test_image_size_options_are_bounded(tmp_path, name, size):
    with pytest.raises(ValueError, match=f"{name}: size must be between"):
        build_evaluator(config(tmp_path, evaluator=name, dataset="demo", options={"size": str(size)}))


def test_no_targets_names_why_records_and_users_were_skipped(tmp_path):
    with pytest.raises(ValueError, match=r"produced no targets\. Skipped: 12 x fewer than 50 decisive reference"):
        run(config(tmp_path, reference_size=50))


def test_swap_records_both_answers(tmp_path):
    out = run(config(tmp_path, evaluator="toy-pair-brightness", swap=True))
    rows = predictions(out.results_path.with_name(out.results_path.stem + ".predictions.jsonl"))
    swap = rows[0]["prediction"]["extra"]["swap"]
    assert set(swap) >= {"first", "second_mapped_back", "inconsistent"}
    assert out.results["metrics"]["swap_inconsistency_rate"] == 0.0  # brightness has no position bias


def test_swap_is_refused_for_an_evaluator_scoring_each_image_alone(tmp_path):
    """It used to score every image twice for the same numbers, under another run key."""
    with pytest.raises(ValueError, match="--swap: toy-brightness scores each image alone.* see both images at once"):
        run(config(tmp_path, swap=True))
    assert not (tmp_path / "results").exists()


def pair_episode(a: str, b: str):
    """A target ``a-b`` of user u showing images named ``a`` and ``b``."""
    from pigbench.protocol import Episode, ImageRef, Label, Target

    return Episode("u", (), Target(f"{a}-{b}", "p", ImageRef(a, a.encode()), ImageRef(b, b.encode()), Label.A))


def swapped_answers(answers: dict, pairs: list[tuple[str, str]]) -> list:
    """``_predict_swapped`` of an evaluator answering each order with ``answers[name of image A]``."""
    import dataclasses

    from pigbench.evaluator import Evaluator
    from pigbench.runner import _predict_swapped

    class ByFirstImage(Evaluator):
        def predict(self, episodes):
            return [dataclasses.replace(answers[ep.target.image_a.id], sample_id=ep.sample_id) for ep in episodes]

    return _predict_swapped(ByFirstImage(), [pair_episode(a, b) for a, b in pairs])


def test_swap_shows_the_order_that_answered_and_averages_both_orders_scores():
    """A judge biased to the first image (P = 0.8 for it) disagrees with itself: TIE with the mean
    P(A) of both orders, 0.5, not the first order's 0.8; an order that did not parse is not shown
    but counted; the dimensions of the second order are mapped back."""
    from pigbench.evaluator import Evaluator
    from pigbench.protocol import Dimension, Label, Prediction
    from pigbench.results import answer_quality
    from pigbench.runner import _predict_swapped

    class FirstImageJudge(Evaluator):
        def predict(self, episodes):
            out = []
            for ep in episodes:
                if ep.target.image_a.id == "unreadable-layout":  # this order's answer does not parse
                    out.append(Prediction(ep.sample_id, Label.INVALID, raw_text="hmm", extra={"invalid_reason": "no answer"}))
                else:
                    out.append(Prediction(ep.sample_id, Label.A, 0.8, 0.2, raw_text=f"{ep.target.image_a.id} wins",
                                          dimensions=[Dimension("warmth", "", 8.0, 2.0)]))
            return out

    biased, rescued = _predict_swapped(FirstImageJudge(), [pair_episode("x", "y"), pair_episode("unreadable-layout", "y")])
    assert biased.label == Label.TIE and (biased.score_a, biased.score_b) == (0.5, 0.5)
    assert biased.extra["swap"]["scores_first"] == (0.8, 0.2) and biased.extra["swap"]["scores_second_mapped_back"] == (0.2, 0.8)
    assert biased.extra["swap"]["inconsistent"] and biased.raw_text == "x wins"
    # the first order did not parse: the second's answer (y first, y wins) is shown mapped back to B
    assert rescued.label == Label.B and (rescued.score_a, rescued.score_b) == (0.2, 0.8) and rescued.raw_text == "y wins"
    assert rescued.dimensions == [Dimension("warmth", "", 2.0, 8.0)] and "invalid_reason" not in rescued.extra
    quality = answer_quality([{"prediction": p.to_json()} for p in (biased, rescued)])
    assert quality["unparseable"] == 1 and quality["unparseable_reasons"] == {"no answer": 1}


def test_swap_flags_only_decisive_disagreement_and_keeps_the_second_orders_error():
    """A then TIE (mapped back) is TIE but not inconsistent (protocol section 3: only disagreeing
    decisive answers are); an unparseable first order with a failed second one keeps that error."""
    from pigbench.protocol import Label, Prediction

    answers = {"x": Prediction("", Label.A), "y": Prediction("", Label.TIE),
               "u": Prediction("", Label.INVALID, raw_text="hmm", extra={"invalid_reason": "no answer"}),
               "v": Prediction("", Label.INVALID, error="HTTP 500")}

    tie, failed = swapped_answers(answers, [("x", "y"), ("u", "v")])
    assert tie.label == Label.TIE and tie.extra["swap"]["inconsistent"] is False
    assert (failed.label, failed.error, failed.extra["invalid_reason"]) == (Label.INVALID, "HTTP 500", "no answer")


def test_swap_with_an_order_that_failed_is_a_failed_sample():
    """An order that raised (a server down) makes the sample failed, with its error, even when the other
    order answered: it was stored as a final one-order answer, never predicted again, counted nowhere."""
    from pigbench.evaluator import Evaluator
    from pigbench.protocol import Label, Prediction
    from pigbench.runner import _predict_swapped

    class FlakyJudge(Evaluator):
        def predict(self, episodes):
            out = []
            for ep in episodes:
                first = ep.target.image_a.id
                if first.startswith("down"):
                    raise ConnectionError("server down")
                label = {"junk": Label.INVALID, "even": Label.TIE}.get(first, Label.A)
                out.append(Prediction(ep.sample_id, label, extra={"invalid_reason": "no answer"} if first == "junk" else {}))
            return out

    unanswered, tie, one_order = _predict_swapped(FlakyJudge(), [pair_episode("junk", "down"), pair_episode("even", "x"),
                                                                 pair_episode("ok", "down2")])
    assert unanswered.label == Label.INVALID and unanswered.error == "ConnectionError: server down"
    assert tie.label == Label.TIE and tie.error is None and not tie.extra["swap"]["inconsistent"]
    assert (one_order.label, one_order.error) == (Label.INVALID, "ConnectionError: server down")
    assert (one_order.score_a, one_order.score_b) == (None, None)



def test_swap_counts_an_empty_error_as_a_failure():
    """error="" is a failure (the store's rule: not None), yet the swap combination tested it for truth: a
    failed first order was stored as the second order's answer, a failed second one as the first's label with an error."""
    from pigbench.protocol import Label, Prediction

    answers = {"x": Prediction("", Label.A), "f": Prediction("", Label.INVALID, error="")}

    for pred in swapped_answers(answers, [("f", "x"), ("x", "f")]):
        assert (pred.label, pred.error, pred.score_a) == (Label.INVALID, "", None)


def test_swap_keeps_who_served_the_order_not_shown():
    """A served judge's extra["served"] (another model than asked for, a system fingerprint) was kept
    for the order shown only: a proxy that routed the swapped request to another checkpoint left no trace."""
    from pigbench.protocol import Label, Prediction

    answers = {"x": Prediction("", Label.A, extra={"served": {"system_fingerprint": "fp_1"}}),
               "y": Prediction("", Label.B, extra={"served": {"model": "other-ckpt", "system_fingerprint": "fp_2"}}),
               "z": Prediction("", Label.A), "w": Prediction("", Label.B)}

    routed, plain = swapped_answers(answers, [("x", "y"), ("z", "w")])
    assert routed.extra["served"] == {"system_fingerprint": "fp_1"}
    assert routed.extra["swap"]["other_served"] == {"model": "other-ckpt", "system_fingerprint": "fp_2"}
    assert "served" not in plain.extra and "other_served" not in plain.extra["swap"]


def test_a_batch_that_raises_or_comes_back_out_of_order_is_predicted_one_episode_at_a_time():
    """Only the episode that raises is INVALID; predictions returned in another order are not stored
    under the wrong sample ids."""
    from pigbench.evaluator import Evaluator
    from pigbench.protocol import Episode, ImageRef, Label, Prediction, Target
    from pigbench.runner import predict_isolated

    class ReversingJudge(Evaluator):
        def predict(self, episodes):
            if any(ep.sample_id == "bad" for ep in episodes):
                raise ValueError("cannot read bad")
            return [Prediction(ep.sample_id, Label.A if ep.target.prompt == "a" else Label.B) for ep in reversed(episodes)]

    def episode(sid: str, prompt: str) -> Episode:
        return Episode("u", (), Target(sid, prompt, ImageRef("x", b"x"), ImageRef("y", b"y"), Label.A))

    preds = predict_isolated(ReversingJudge(), [episode("s0", "a"), episode("bad", "a"), episode("s1", "b")])
    assert [(p.sample_id, p.label, p.error) for p in preds] == \
           [("s0", Label.A, None), ("bad", Label.INVALID, "ValueError: cannot read bad"), ("s1", Label.B, None)]
    preds = predict_isolated(ReversingJudge(), [episode("s0", "a"), episode("s1", "b")])
    assert [(p.sample_id, p.label) for p in preds] == [("s0", Label.A), ("s1", Label.B)]


@pytest.mark.parametrize("bad, reason", [
    ({"score_a": np.float32(0.5)}, "that is not JSON"),  # the store's json.dumps raised: the run died with a traceback
    ({"score_a": float("nan")}, "that is not JSON"),  # written as NaN, which no strict JSON reader takes
    ({"error": "CUDA out of memory"}, "returned label [AB] with an error for sample .*: 'CUDA out of memory'"),
    ({"error": ""}, "returned label [AB] with an error for sample .*: ''"),  # the store counts it failed all the same
])
def test_a_prediction_that_is_not_json_fails_only_its_sample(tmp_path, monkeypatch, bad, reason):
    """A plug-in's prediction the store cannot keep as strict JSON, or one that failed (an error)
    yet carries an answer (a failure counted and predicted again on resume, its label still scored):
    that sample alone is INVALID with the reason, the others are stored and scored."""
    import dataclasses
    import re

    from pigbench.protocol import Label
    from pigbench.registry import evaluators

    cls = evaluators.get("toy-brightness")
    real_predict = cls.predict
    first = []

    def predict(self, episodes):
        preds = real_predict(self, episodes)
        first.append(first[0] if first else episodes[0].sample_id)
        return [dataclasses.replace(p, label=Label.A if p.label == Label.INVALID else p.label, **bad)
                if p.sample_id == first[0] else p for p in preds]

    monkeypatch.setattr(cls, "predict", predict)
    out = run(config(tmp_path))
    rows = {r["sample_id"]: r["prediction"] for r in predictions(out.results_path.with_name(
        out.results_path.stem + ".predictions.jsonl"))}
    assert rows[first[0]]["label"] == "INVALID" and re.search(reason, rows[first[0]]["error"])
    assert sum(p["label"] == "INVALID" for p in rows.values()) == 1 and out.results["failures"]["count"] == 1


def test_failures_and_answer_quality_count_each_sample_under_the_first_line_of_its_reason():
    """A traceback-long error or reason counts under its first line (200 characters at most), an
    empty error is a failure (the store predicts it again), and each sample counts once."""
    from pigbench.results import answer_quality, failure_summary

    long = "OSError: " + "x" * 300
    rows = [{"prediction": {"label": "INVALID", "error": f"{long}\nTraceback ..."}},
            {"prediction": {"label": "INVALID", "error": f"{long}\nanother frame"}},
            {"prediction": {"label": "INVALID", "error": ""}},
            {"prediction": {"label": "INVALID", "error": None, "extra": {"invalid_reason": "no answer\nhmm"}}},
            {"prediction": {"label": "INVALID", "extra": {"invalid_reason": "no answer",
                                                         "swap": {"other_invalid_reason": "r" * 250}}}}]
    assert failure_summary(rows) == {"count": 3, "reasons": {long[:200]: 2, "": 1}}
    quality = answer_quality(rows)
    assert (quality["unparseable"], quality["unparseable_reasons"]) == (3, {"no answer": 2, "r" * 200: 1})


def test_a_results_file_without_failures_or_answer_quality_still_validates(tmp_path):
    """Both are optional in the schema (files written before they were recorded): validate recounts
    what a file records, not what it leaves out."""
    path = run(config(tmp_path)).results_path
    data = json.loads(path.read_text())
    del data["failures"], data["answer_quality"]
    path.write_text(json.dumps(data))
    assert validate_results(path) == []


def test_validate_rejects_tampered_metrics_and_predictions(tmp_path):
    out = run(config(tmp_path))
    path = out.results_path
    data = json.loads(path.read_text())
    micro = data["metrics"]["acc_w_tie"]["micro"]
    data["metrics"]["acc_w_tie"]["micro"] += 1.0
    path.write_text(json.dumps(data))
    assert validate_results(path) == [f"{path}: metrics.acc_w_tie.micro: stored {json.dumps(micro + 1.0)}, recomputed {json.dumps(micro)}"]
    out = run(config(tmp_path))
    data = json.loads(path.read_text())
    per_user = data["metrics"]["per_user"][0]["acc_wo_tie"]
    data["metrics"]["per_user"][0]["acc_wo_tie"] += 1.0  # the leaderboard's per-user breakdown
    path.write_text(json.dumps(data))
    assert validate_results(path) == [f"{path}: metrics.per_user[0].acc_wo_tie: stored {json.dumps(per_user + 1.0)}, "
                                      f"recomputed {json.dumps(per_user)}"]
    for name, tampered in (("failures", {"count": 2, "reasons": {"OSError: x": 2}}), ("answer_quality", {"unparseable": 3})):
        out = run(config(tmp_path))  # the site shows both; nothing recounted them
        data = json.loads(path.read_text())
        assert validate_results(path) == []
        data[name] = tampered
        path.write_text(json.dumps(data))
        assert any(p.startswith(f"{path}: {name} ") and "differs from the predictions'" in p for p in validate_results(path))
    out = run(config(tmp_path))
    jsonl = path.with_name(path.stem + ".predictions.jsonl")
    jsonl.write_text(jsonl.read_text().replace('"label": "A"', '"label": "B"', 1))
    assert any("sha256" in p for p in validate_results(path))


def test_validate_names_each_differing_metric_field_then_counts_the_rest(tmp_path, capsys):
    """A metric block used to be printed whole, stored and recomputed, CIs included, for the reader
    to spot the number that differs; each differing field is now named with both values, the
    first five of them, then a count of the rest. Exit codes are unchanged."""
    from pigbench.cli import main as pigbench
    from pigbench.results import METRIC_FIELDS_LISTED

    path = run(config(tmp_path)).results_path
    original = json.loads(path.read_text())
    data = json.loads(path.read_text())
    metrics = data["metrics"]
    metrics["acc_w_tie"]["macro"] += 2.0
    metrics["acc_wo_tie"]["micro_ci95"] = None
    metrics["invalid_rate"] = 0.5
    metrics["acc_w_tie"]["median"] = 70.0  # a field compute_metrics does not write
    for user in metrics["per_user"][:3]:
        user["n"] += 1
    path.write_text(json.dumps(data))
    m = original["metrics"]
    named = [
        f"metrics.invalid_rate: stored 0.5, recomputed {json.dumps(m['invalid_rate'])}",
        f"metrics.acc_w_tie.macro: stored {json.dumps(m['acc_w_tie']['macro'] + 2.0)}, recomputed {json.dumps(m['acc_w_tie']['macro'])}",
        "metrics.acc_w_tie.median: stored 70.0, recomputed missing",
        f"metrics.acc_wo_tie.micro_ci95: stored null, recomputed {json.dumps(m['acc_wo_tie']['micro_ci95'])}",
        f"metrics.per_user[0].n: stored {m['per_user'][0]['n'] + 1}, recomputed {m['per_user'][0]['n']}",
    ]
    assert METRIC_FIELDS_LISTED == len(named)
    assert validate_results(path) == [f"{path}: {line}" for line in named] + [
        f"{path}: ... and 2 more metric field(s) differ from those recomputed"]
    capsys.readouterr()
    assert pigbench(["validate", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [f"INVALID {path}"] + [f"  {path}: {line}" for line in named] + [
        f"  {path}: ... and 2 more metric field(s) differ from those recomputed"]
    path.write_text(json.dumps(original))
    assert pigbench(["validate", str(path)]) == 0


def test_validate_takes_a_results_directory_as_report_and_leaderboard_do(tmp_path, capsys):
    """``pigbench validate DIR`` said "cannot read results JSON: Is a directory"; it now checks every
    results file the report's collector finds under DIR (side files not counted), one line each and
    a summary; exit 1 when any is invalid, 2 when DIR holds no results file."""
    from pigbench.cli import main as pigbench

    first = run(config(tmp_path)).results_path
    second = run(config(tmp_path, limit=20)).results_path
    results = tmp_path / "results"
    assert first.with_name(first.stem + ".predictions.jsonl").is_file()
    capsys.readouterr()
    assert pigbench(["validate", str(results)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"ok      {p}" for p in sorted([first, second])] + [
        "2 results file(s): 2 ok, 0 invalid"]

    data = json.loads(second.read_text())
    data["metrics"]["invalid_rate"] += 0.5
    second.write_text(json.dumps(data))
    assert pigbench(["validate", str(results)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"ok      {first}" in out and f"INVALID {second}" in out
    assert out[-1] == "2 results file(s): 1 ok, 1 invalid"
    capsys.readouterr()
    one = tmp_path / "one"
    (one / "toy").mkdir(parents=True)
    for part in (first, first.with_name(first.stem + ".predictions.jsonl")):
        (one / "toy" / part.name).write_bytes(part.read_bytes())
    assert pigbench(["validate", str(one)]) == 0  # a directory of one file still ends with its summary
    assert capsys.readouterr().out.splitlines() == [f"ok      {one / 'toy' / first.name}",
                                                    "1 results file(s): 1 ok, 0 invalid"]

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "x.predictions.jsonl").write_text("")
    assert pigbench(["validate", str(empty)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"error: no results files (*.json) under {empty}; nothing to validate (run `pigbench run` first)\n"


def _with_predictions(path: Path, data: bytes) -> Path:
    """Replace results file ``path``'s predictions with ``data``, the recorded sha256 updated to match."""
    import hashlib

    results = json.loads(path.read_text())
    path.with_name(results["predictions"]["path"]).write_bytes(data)
    results["predictions"]["sha256"] = hashlib.sha256(data).hexdigest()
    path.write_text(json.dumps(results))
    return path


def test_validate_reads_predictions_line_by_line_with_the_errors_of_reading_them_whole(tmp_path):
    """Validation now reads the predictions file one line at a time, yet reports what reading it
    whole did: a hash mismatch before any row problem, a byte that is not UTF-8 (on any line)
    before a malformed row above it, lines counted as str.splitlines counts them (CRLF endings
    read as before); a malformed row stops the rows yielded."""
    from pigbench.synthetic_results import make_results

    from pigbench.results import ResultsError, load_results

    path = make_results(tmp_path / "results", "lines", users=2, per_user=3)
    jsonl = path.with_name(path.stem + ".predictions.jsonl")
    lines = jsonl.read_bytes().splitlines(keepends=True)
    assert len(lines) == 6 and validate_results(path) == []
    _with_predictions(path, b"".join(line.replace(b"\n", b"\r\n") for line in lines))
    assert validate_results(path) == []

    broken = [lines[0], b'{"sample_id": 1}\n', *lines[2:4], lines[4].replace(b"hydrant", b"hydr\xe9nt"), lines[5]]
    _with_predictions(path, b"".join(broken))
    column = lines[4].index(b"hydrant") + 5  # counted from 1
    assert validate_results(path) == [f"{jsonl}: line 5: byte {column} (0xe9) is not UTF-8"]
    broken[4] = lines[4]
    _with_predictions(path, b"".join(broken))
    assert validate_results(path) == [f"{jsonl}: line 2: malformed prediction row (sample_id must be a string, not 1)"]
    results, rows = load_results(path)
    assert next(rows)["sample_id"] == json.loads(lines[0])["sample_id"]
    with pytest.raises(ResultsError, match="line 2: malformed"):
        next(rows)
    jsonl.write_bytes(b"".join(lines))  # the recorded hash is that of the broken file
    _with_predictions(path, b"".join(broken))
    jsonl.write_bytes(b"".join(broken[:5]) + b"not json\n")
    assert validate_results(path) == [f"{path}: predictions file {jsonl.name} does not match the recorded sha256 "
                                      "(another run's, or changed since); run again to write both files"]


def test_validate_refuses_predictions_not_written_with_the_results_file_in_one_line_naming_both(
        tmp_path, monkeypatch, capsys):
    """The runner writes the predictions, then the results JSON recording their sha256 and rows. A run
    stopped between the two writes leaves the earlier JSON beside new predictions; predictions
    truncated, swapped for another run's or missing do not pair with the JSON either: validate refuses
    each in one line naming both files and what to do, the report's collector rejects the file with
    that reason, and the same command writes the pair again."""
    from pigbench import results as results_module
    from pigbench.atomic_file import write_atomic
    from pigbench.cli import main as pigbench
    from pigbench.report.collect import collect
    from pigbench.results import load_results, write_results

    path = run(config(tmp_path)).results_path
    other = run(config(tmp_path, limit=20)).results_path
    jsonl, other_jsonl = (p.with_name(p.stem + ".predictions.jsonl") for p in (path, other))
    original = jsonl.read_bytes()
    assert validate_results(path) == validate_results(other) == []
    refused = (f"{path}: predictions file {jsonl.name} does not match the recorded sha256 (another run's, or "
               "changed since); run again to write both files")

    stored, rows = load_results(path)
    rows = list(rows)
    rows[0]["prediction"]["label"] = "B" if rows[0]["prediction"]["label"] == "A" else "A"

    def stopped_before_the_json(target: Path, data: bytes, fsync: bool = False) -> None:
        if target.suffix == ".json":
            raise KeyboardInterrupt  # the run is killed between its two writes
        write_atomic(target, data, fsync)

    monkeypatch.setattr(results_module, "write_atomic", stopped_before_the_json)
    with pytest.raises(KeyboardInterrupt):
        write_results(path, stored, rows)
    monkeypatch.undo()
    assert jsonl.read_bytes() != original and validate_results(path) == [refused]
    capsys.readouterr()
    assert pigbench(["validate", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [f"INVALID {path}", f"  {refused}"]

    for predictions_now in (original[: len(original) // 2], other_jsonl.read_bytes()):  # truncated; another run's
        jsonl.write_bytes(predictions_now)
        assert validate_results(path) == [refused]
    rejected = {r.relpath: r.reasons for r in collect(tmp_path / "results").rejected}
    assert rejected == {f"toy/{path.name}": [refused.removeprefix(f"{path}: ")]}
    jsonl.unlink()
    assert validate_results(path) == [f"{path}: cannot read predictions file {jsonl.name}: No such file or directory; "
                                      "run again to write both files"]

    assert run(config(tmp_path)).computed == 0  # the same command, from the store
    assert jsonl.read_bytes() == original and validate_results(path) == []


def test_validate_memory_does_not_grow_with_the_predictions_rows(tmp_path):
    """Validation read a predictions file whole: its bytes, text, lines and every row (529 MiB for
    a 100,000-row judge file). It now keeps per row only the sample id and a pointer to a shared
    metric input, so four times the rows (of 1.5 KiB each) add about 150 bytes per row to the peak (with
    the users' metrics), where reading them whole added 8.8 KiB."""
    import tracemalloc

    from pigbench.synthetic_results import make_results

    def peak(users: int) -> int:
        path = make_results(tmp_path / str(users), "judge", kind="reasoning", users=users, per_user=60, dimensions=3,
                            n_bootstrap=2, rationale=lambda j: f"A suits this user's taste in warm, soft light (case {j}). " * 20)
        tracemalloc.start()
        problems = validate_results(path)
        used = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert problems == []
        return used

    small, large = peak(10), peak(40)
    added_rows = (40 - 10) * 60
    assert large - small < 300 * added_rows, (small, large, (large - small) / added_rows)


def test_rows_follow_the_split_and_validate_catches_a_repeated_id_or_a_wrong_target_count(tmp_path):
    import hashlib

    from pigbench.runner import load_split

    out = run(config(tmp_path))
    path, jsonl = out.results_path, out.results_path.with_name(out.results_path.stem + ".predictions.jsonl")
    rows = predictions(jsonl)
    assert [r["sample_id"] for r in rows] == [e.sample_id for e in load_split(config(tmp_path))[1].episodes]
    original = json.loads(path.read_text())
    rows[1] = {**rows[1], "sample_id": rows[0]["sample_id"]}  # same user, labels and count: only the id repeats
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
    jsonl.write_bytes(data)
    path.write_text(json.dumps({**original, "predictions": {**original["predictions"],
                                                            "sha256": hashlib.sha256(data).hexdigest()}}))
    assert validate_results(path) == [f"{path}: duplicate sample ids in predictions"]
    run(config(tmp_path))
    path.write_text(json.dumps({**original, "split": {**original["split"], "targets": 61}}))
    assert validate_results(path) == [f"{path}: predictions file {jsonl.name} has 60 rows; the results file records split.targets 61"]
    path.write_text(json.dumps({**original, "predictions": {**original["predictions"], "count": 59}}))
    assert validate_results(path) == [f"{path}: predictions file {jsonl.name} has 60 rows; the results file records predictions.count 59"]
    path.write_text(json.dumps({**original, "predictions": {**original["predictions"], "count": 59},
                                "split": {**original["split"], "targets": 61}}))
    assert validate_results(path) == [f"{path}: predictions file {jsonl.name} has 60 rows; "
                                      "the results file records predictions.count 59 and split.targets 61"]
    users = len({r["user_id"] for r in rows})  # the site shows split.users: it must be the predictions' users
    path.write_text(json.dumps({**original, "split": {**original["split"], "users": users + 1}}))
    assert validate_results(path) == [f"{path}: split users {users + 1} differs from the {users} users of the predictions"]
    from pigbench.cli import main as pigbench

    assert pigbench(["validate", str(path)]) == 1


def test_unknown_option_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown option 'nope' for toy-brightness .*options: .*sleep"):
        run(config(tmp_path, options={"nope": "1"}))


def test_an_option_value_of_the_wrong_type_names_the_evaluator(tmp_path):
    """It named the config class (e.g. 'ScalarConfig'), which a user never sees, not the evaluator."""
    with pytest.raises(ValueError, match="^option tie_threshold='abc' for toy-brightness: could not convert"):
        run(config(tmp_path, options={"tie_threshold": "abc"}))


@pytest.mark.parametrize("field, value, flag", [("batch_size", 0, "--batch-size"), ("limit", 0, "--limit"),
                                               ("num_workers", -1, "--num-workers"), ("tie_threshold", -0.5, "--tie-threshold"),
                                               ("max_error_rate", 1.5, "--max-error-rate")])
def test_settings_no_run_can_use_are_refused_naming_the_flag(field, value, flag):
    with pytest.raises(ValueError, match=f"^{field} must be .*got {value!r} \\({flag}\\)$"):
        RunConfig(**{field: value})


def test_a_negative_n_bootstrap_is_refused_before_the_run():
    """It failed only after every prediction, in compute_metrics, as "negative dimensions are not allowed"."""
    with pytest.raises(ValueError, match=r"^n_bootstrap must be >= 0 \(0: no confidence intervals\), got -1$"):
        RunConfig(n_bootstrap=-1)
    assert RunConfig(n_bootstrap=0).n_bootstrap == 0


def test_a_negative_bootstrap_seed_is_refused_before_the_run():
    """It failed only after every prediction, in compute_metrics, as numpy's "expected non-negative integer"."""
    with pytest.raises(ValueError, match=r"^bootstrap_seed must be >= 0 \(numpy's generators take no negative seed\), got -1$"):
        RunConfig(bootstrap_seed=-1)
    assert RunConfig(bootstrap_seed=0).bootstrap_seed == 0


def test_a_device_torch_does_not_know_or_this_machine_lacks_is_refused():
    torch = pytest.importorskip("torch")
    check_device("cpu")
    with pytest.raises(ValueError, match="'gpu' is not a device torch knows"):
        check_device("gpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=f"has {count} CUDA GPU" if count else "sees no CUDA GPU on this machine"):
        check_device(f"cuda:{count}")


def test_a_device_type_without_a_backend_here_is_refused_before_any_model_loads():
    """--device mps on a machine without MPS, or meta, passed and failed with a traceback as the model loaded."""
    torch = pytest.importorskip("torch")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="^--device mps: torch .* has no mps device on this machine; use --device cpu$"):
            check_device("mps")


def test_mps_is_checked_with_the_api_every_supported_torch_has(monkeypatch):
    """torch.mps.is_available came only in recent torch releases: on an older torch (2.6 is
    supported) --device mps, valid or not, ended in an AttributeError traceback."""
    torch = pytest.importorskip("torch")
    monkeypatch.delattr(torch.mps, "is_available", raising=False)  # as on an older torch
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    check_device("mps")  # this machine has MPS, torch.backends.mps says
    check_device("mps:0")
    with pytest.raises(ValueError, match=r"^--device mps:1: this machine has 1 mps device\(s\), mps:0 to mps:0$"):
        check_device("mps:1")  # was accepted, and failed as the model moved there
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="^--device mps: torch .* has no mps device on this machine"):
        check_device("mps")
    with pytest.raises(ValueError, match="^--device meta: pigbench runs on cpu, cuda, mps or xpu devices, not meta$"):
        check_device("meta")
    check_device("cpu:0")


def test_a_misspelled_dataset_leaves_no_results_folder_behind(tmp_path):
    """It used to be refused only after <output>/<name>/ had been created, empty."""
    from pigbench.registry import RegistryError

    with pytest.raises(RegistryError, match="unknown dataset 'tyo'; did you mean 'toy'"):
        run(config(tmp_path, dataset="tyo"))
    assert not (tmp_path / "results").exists()


def test_a_refused_evaluator_option_leaves_no_folder_behind(tmp_path):
    """The results and store folders were created before the evaluator's options were checked."""
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        run(config(tmp_path, options={"bogus": "1"}))
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_an_unwritable_results_or_store_directory_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="cannot create the results directory \\(--output\\) .*a-file/toy"):
        run(config(tmp_path, output=str(blocker)))
    with pytest.raises(ValueError, match="cannot create the prediction store directory \\(--cache-dir\\) .*a-file/runs"):
        run(config(tmp_path, cache_dir=str(blocker)))


@pytest.mark.parametrize("flags, message", [(("--batch-size", "0"), "batch_size must be >= 1, got 0 (--batch-size)"),
                                            (("--option", "sleep"), "--option expects KEY=VALUE, got 'sleep'"),
                                            (("--option", "sleep=0", "--option", "sleep=1"),
                                             "--option sleep given twice ('0' and '1')"),
                                            (("--variant", "../../x"),
                                             "variant must be a file name suffix without slashes, got '../../x' "
                                             "(--variant)")])
def test_cli_refuses_a_bad_setting_in_one_line(tmp_path, flags, message):
    cmd, env = _cli(tmp_path, *flags)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == f"error: {message}"


def _cli(tmp_path, *extra, env=None):
    cmd = [sys.executable, "-c", "import sys, toy; from pigbench.run import cli; sys.exit(cli())",
           "--evaluator", "toy-brightness", "--dataset", "toy", "--dataset-option", "users=40",
           "--batch-size", "2", "--output", str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"),
           "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    return cmd, env


def _start_and_wait_for_commits(tmp_path, n: int = 20) -> tuple[subprocess.Popen, Path | None]:
    """The slowed CLI run under ``tmp_path``, once ``n`` predictions are committed (or 60 s passed),
    and its store."""
    cmd, env = _cli(tmp_path, "--option", "sleep=0.05")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    db = None
    while time.time() < deadline:
        found = list((tmp_path / "cache" / "runs").glob("*.sqlite"))
        if found:
            db = found[0]
            try:
                if sqlite3.connect(db).execute("SELECT COUNT(*) FROM predictions").fetchone()[0] >= n:
                    break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.05)
    return proc, db


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_keeps_the_committed_predictions_and_says_how_to_resume(tmp_path, sig, status):
    """Ctrl-C, or a scheduler's time limit (Slurm, ``timeout``) sending SIGTERM, which used to end
    the run with -15 and no word: the committed predictions are kept and reused by the rerun."""
    proc, db = _start_and_wait_for_commits(tmp_path)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status and "Traceback" not in err, err
    assert "interrupted: the predictions committed so far are kept; run the same command again to resume" in err
    kept = sqlite3.connect(db).execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    assert 20 <= kept < 200
    cmd, env = _cli(tmp_path, "--option", "sleep=0.05")
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and f"reused {kept})" in resumed.stdout, resumed.stderr


BLOCKED_RUNNER_IMPORT = """
import importlib.abc, sys, time
class BlockTheRunner(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "pigbench.runner":  # torch and the rest are imported here, in the first ~0.3 s
            print("importing the runner", flush=True)
            time.sleep(600)
        return None
sys.meta_path.insert(0, BlockTheRunner())
"""


@pytest.mark.parametrize("entry, message", [
    ("import runpy; runpy.run_module('pigbench.run', run_name='__main__', alter_sys=True)",
     "interrupted: the predictions committed so far are kept; run the same command again to resume"),
    ("from pigbench.cli import main; sys.exit(main(['run']))", "pigbench run: interrupted")])
def test_sigterm_while_the_runner_is_imported_exits_143_in_one_line(entry, message):
    """A SIGTERM before the run started (during the imports) ended the command with -15 and no word;
    the handler is now installed first thing, so it stops as a SIGTERM later does."""
    proc = subprocess.Popen([sys.executable, "-c", BLOCKED_RUNNER_IMPORT + entry], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "importing the runner\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (143, message + "\n")


def test_sigkill_midway_then_resume_equals_uninterrupted_run(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc, db = _start_and_wait_for_commits(killed)  # some but not all predictions committed
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert db is not None and proc.returncode == -signal.SIGKILL
    partial = sqlite3.connect(db).execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    assert 20 <= partial < 200
    cmd, env = _cli(killed, "--option", "sleep=0.05")
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    cmd2, env2 = _cli(clean, "--option", "sleep=0.05")  # same config, hence same config hash
    subprocess.run(cmd2, env=env2, check=True, capture_output=True, timeout=300)
    res_k = killed / "results" / "toy"
    res_c = clean / "results" / "toy"
    (fk,), (fc,) = list(res_k.glob("*.json")), list(res_c.glob("*.json"))
    rk, rc = json.loads(fk.read_text()), json.loads(fc.read_text())
    assert metric_differences(rk["metrics"], rc["metrics"]) == []
    pk = predictions(fk.with_name(fk.stem + ".predictions.jsonl"))
    pc = predictions(fc.with_name(fc.stem + ".predictions.jsonl"))
    assert pk == pc and len({p["sample_id"] for p in pk}) == len(pk)
    assert validate_results(fk) == []


def test_a_damaged_prediction_store_is_a_one_line_error_naming_it(tmp_path):
    cmd, env = _cli(tmp_path, "--limit", "5")
    subprocess.run(cmd, env=env, capture_output=True, timeout=120, check=True)
    (store,) = (tmp_path / "cache" / "runs").glob("*.sqlite")
    store.write_bytes(b"garbage, not a database")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"error: {store}: cannot use this prediction store (file is not a database); move it aside or delete it" in out.stderr


def test_a_full_disk_while_writing_the_results_is_an_error_naming_the_file_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno

    from pigbench.results import ResultsError

    real_write = Path.write_bytes

    def full_disk(self, data):
        real_write(self, data[:100])  # what fitted before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(ResultsError, match=r"cannot write .*toy-brightness\.predictions\.jsonl: No space left on device"):
        run(config(tmp_path))  # ResultsError is a ValueError: the CLI prints it as one line, exit status 2
    assert list((tmp_path / "results" / "toy").iterdir()) == []
    monkeypatch.undo()
    out = run(config(tmp_path))  # with space again, the rerun reuses every stored prediction
    assert out.computed == 0 and validate_results(out.results_path) == []


def test_two_runs_creating_one_store_at_once_both_open_it(tmp_path, held_until_first_retry):
    """Two runs of one config started together on one cache directory: SQLite answered the second
    one's switch of the new store to WAL mode with "database is locked" at once (no busy wait) while
    the first held the file's lock, and that run stopped (about one start in five). It is retried
    until the lock is gone; here the first run's lock goes at the first retry."""
    from pigbench.protocol import Label, Prediction
    from pigbench.store import PredictionStore

    path = tmp_path / "runs" / "k.sqlite"
    path.parent.mkdir()
    waits = held_until_first_retry(path)
    with PredictionStore(path) as store:
        store.add([Prediction("s0", Label.A)])
        assert len(waits) == 1 and store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with PredictionStore(path) as again:
        assert again.done_ids() == {"s0"}


def test_a_store_locked_for_longer_than_the_busy_timeout_is_a_one_line_error(tmp_path, monkeypatch):
    import functools

    from pigbench.store import PredictionStore, StoreError

    path = tmp_path / "k.sqlite"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    monkeypatch.setattr(sqlite3, "connect", functools.partial(sqlite3.connect, timeout=0.1))
    with pytest.raises(StoreError, match=r"k\.sqlite: cannot use this prediction store \(database is locked\); "
                                         r"another run is probably writing to it"):
        PredictionStore(path)
    other.execute("ROLLBACK")


def test_a_store_of_another_run_at_this_runs_path_is_refused_not_mixed_in(tmp_path):
    """The file name was all that tied a store to its run: another seed's store copied or renamed to
    this run's path (a synced or restored cache) was reused as this run's, its predictions of other
    A/B orders and references scored under the same sample ids. The store records its run key."""
    import shutil

    from pigbench.store import StoreError

    run(config(tmp_path))
    (mine,) = (tmp_path / "cache" / "runs").glob("*.sqlite")
    run(config(tmp_path, seed=1))
    (other,) = set((tmp_path / "cache" / "runs").glob("*.sqlite")) - {mine}
    shutil.copyfile(other, mine)
    with pytest.raises(StoreError, match=rf"{mine}: this prediction store holds the predictions of another run "
                                         rf"\(run key {other.stem}\), not of this one; move it aside"):
        run(config(tmp_path))
    mine.unlink()
    out = run(config(tmp_path))
    assert (out.computed, out.resumed) == (60, 0) and validate_results(out.results_path) == []


def test_a_store_from_before_run_keys_were_recorded_takes_the_key_of_the_run_that_opens_it(tmp_path):
    from pigbench.store import PredictionStore, StoreError

    path = tmp_path / "k1.sqlite"
    with sqlite3.connect(path) as old:  # the layout of a store written before the key was recorded
        old.execute("CREATE TABLE predictions (sample_id TEXT PRIMARY KEY, payload TEXT NOT NULL)")
        old.execute("""INSERT INTO predictions VALUES ('s0', '{"label": "A", "sample_id": "s0"}')""")
    old.close()
    with PredictionStore(path, "k1") as store:
        assert store.done_ids() == {"s0"}
    with PredictionStore(path, "k1") as again:
        assert again.done_ids() == {"s0"}
    with pytest.raises(StoreError, match=r"k1\.sqlite: this prediction store holds the predictions of another run "
                                         r"\(run key k1\), not of this one"):
        PredictionStore(path, "k2")


def test_a_full_disk_while_storing_a_batch_says_the_store_is_kept_not_that_it_should_be_deleted(tmp_path):
    from pigbench.protocol import Label, Prediction
    from pigbench.store import PredictionStore, StoreError

    store = PredictionStore(tmp_path / "k.sqlite")
    store.add([Prediction("s0", Label.A)])
    store._db.execute("PRAGMA max_page_count = 3")  # SQLite's SQLITE_FULL, as on a full disk
    with pytest.raises(StoreError, match=r"database or disk is full\); the disk is full or failing; the batches "
                                         r"committed so far are kept: free space and run again") as caught:
        store.add([Prediction(f"s{i}", Label.B, raw_text="x" * 1000) for i in range(1, 50)])
    assert "delete" not in str(caught.value)
    store.close()
    with PredictionStore(tmp_path / "k.sqlite") as reopened:
        assert reopened.done_ids() == {"s0"}


def test_a_store_deleted_mid_run_stops_the_run_in_one_line(tmp_path, monkeypatch):
    """SQLite writes on to a deleted file: a run whose store was deleted (its cache directory cleaned)
    went on predicting into it, then died with a KeyError traceback on the missing predictions."""
    import shutil

    from pigbench.store import PredictionStore, StoreError

    real_add, batches = PredictionStore.add, []

    def add(self, preds):
        batches.append(len(preds))
        if len(batches) == 3:
            shutil.rmtree(tmp_path / "cache")
        real_add(self, preds)

    monkeypatch.setattr(PredictionStore, "add", add)
    with pytest.raises(StoreError, match=r"\.sqlite: this prediction store was deleted or replaced while the run "
                                         r"wrote to it, .*run the same command again to predict them"):
        run(config(tmp_path))
    assert len(batches) == 3  # it stopped at once, not after predicting every sample into the deleted file
    monkeypatch.undo()
    out = run(config(tmp_path))
    assert out.resumed == 0 and validate_results(out.results_path) == []


def test_a_store_replaced_mid_run_stops_the_run_too(tmp_path, monkeypatch):
    """A store file replaced at its path (another run's, a restored copy) is no longer the file the
    run writes to: SQLite would write on to the old, unlinked one and its predictions would be lost."""
    from pigbench.store import PredictionStore, StoreError

    real_add, batches = PredictionStore.add, []

    def add(self, preds):
        batches.append(len(preds))
        if len(batches) == 3:
            other = self.path.with_name("other.sqlite")
            PredictionStore(other).close()
            os.replace(other, self.path)
        real_add(self, preds)

    monkeypatch.setattr(PredictionStore, "add", add)
    with pytest.raises(StoreError, match=r"\.sqlite: this prediction store was deleted or replaced while the run wrote to it"):
        run(config(tmp_path))
    assert len(batches) == 3


def test_a_store_that_cannot_be_checked_mid_run_stops_the_run_in_one_line(tmp_path, monkeypatch):
    """The per-batch check that the store file is still there caught only FileNotFoundError: a stale
    network file handle or a permission change gave an OSError traceback."""
    import errno

    from pigbench.store import PredictionStore, StoreError

    real_stat, real_add, batches = Path.stat, PredictionStore.add, []

    def stat(self, *args, **kwargs):
        if len(batches) >= 3 and self.suffix == ".sqlite":  # from the third batch on
            raise OSError(errno.ESTALE, "Stale file handle")
        return real_stat(self, *args, **kwargs)

    def add(self, preds):
        batches.append(len(preds))
        real_add(self, preds)

    monkeypatch.setattr(Path, "stat", stat)
    monkeypatch.setattr(PredictionStore, "add", add)
    with pytest.raises(StoreError, match=r"\.sqlite: cannot check the prediction store \(.*Stale file handle\); the "
                                         r"batches committed so far are kept"):
        run(config(tmp_path))
    monkeypatch.undo()
    assert run(config(tmp_path)).resumed == sum(batches[:2])  # the two batches committed before are kept


def test_a_read_only_store_says_to_make_it_writable_not_to_delete_it(tmp_path):
    """A store SQLite cannot write to (a file of another user, mode 444) was to be deleted, its
    finished predictions with it."""
    from pigbench.protocol import Label, Prediction
    from pigbench.store import PredictionStore, StoreError

    store = PredictionStore(tmp_path / "k.sqlite")
    store.add([Prediction("s0", Label.A)])
    store._db.close()
    store._db = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)  # as SQLite opens a file it cannot write
    with pytest.raises(StoreError, match=r"k\.sqlite: cannot use this prediction store \(attempt to write a readonly "
                                         r"database\); the batches committed so far are kept: make the file and its "
                                         r"folder writable") as caught:
        store.add([Prediction("s1", Label.B)])
    assert "delete" not in str(caught.value)
    store.close()


def test_cli_reports_unknown_evaluator_with_suggestion(tmp_path):
    cmd, env = _cli(tmp_path)
    cmd[cmd.index("toy-brightness")] = "toy-brightnes"
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "did you mean 'toy-brightness'" in out.stderr


def test_cli_reports_a_model_that_setup_cannot_load_without_a_traceback(tmp_path):
    out = subprocess.run(_cli(tmp_path, "--option", "missing_model=org/nothing")[0], env=_cli(tmp_path)[1],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: toy-brightness: setup could not load a file it needs: org/nothing is not a local folder" in out.stderr


def test_prepare_sees_each_window_of_whole_batches_without_gold_and_a_failure_costs_nothing(tmp_path, monkeypatch):
    from pigbench.protocol import Label
    from toy import ToyBrightness

    plain = run(config(tmp_path / "plain")).results["metrics"]
    windows: list[list] = []

    def prepare(self, episodes):
        windows.append(episodes)
        raise RuntimeError("look-ahead broke")

    monkeypatch.setattr(ToyBrightness, "prepare_window", 10)  # rounded up to whole batches of 4: 12
    monkeypatch.setattr(ToyBrightness, "prepare", prepare)
    logged: list[str] = []
    out = run(config(tmp_path / "ahead"), log=logged.append)
    assert [len(w) for w in windows] == [12] * 5  # 60 targets
    assert all(e.target.gold == Label.INVALID for w in windows for e in w)
    assert sum("look-ahead broke" in m for m in logged) == 1  # logged once, predictions went on
    assert metric_differences(out.results["metrics"], plain) == []


def test_setup_objects_are_frozen_during_the_loop_and_garbage_is_collected_first():
    import gc
    import weakref

    from pigbench.runner import frozen_setup_objects

    class Node:
        pass

    cycle = Node()
    cycle.me = cycle
    dead = weakref.ref(cycle)
    del cycle
    gc.unfreeze()  # some interpreters start with objects frozen
    with frozen_setup_objects():
        assert dead() is None  # collected, not frozen
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with frozen_setup_objects():  # nested: the outer block's freeze survives the inner one
            pass
        assert gc.get_freeze_count() >= frozen
    assert gc.get_freeze_count() == 0


def test_run_predicts_inside_frozen_setup_objects(tmp_path, monkeypatch):
    import contextlib

    import pigbench.runner as runner

    seen = []

    @contextlib.contextmanager
    def recording():
        seen.append("enter")
        yield
        seen.append("exit")

    predict_all = runner._predict_all
    monkeypatch.setattr(runner, "frozen_setup_objects", recording)
    monkeypatch.setattr(runner, "_predict_all", lambda *a: (seen.append("predict"), predict_all(*a)))
    run(config(tmp_path))
    assert seen == ["enter", "predict", "exit"]


def test_a_config_value_that_is_not_json_is_a_one_line_error():
    from dataclasses import dataclass

    from pigbench.evaluator import ScalarConfig

    @dataclass(frozen=True)
    class PathConfig(ScalarConfig):
        weights_dir: Path = Path("/tmp/w")

    with pytest.raises(ValueError, match="^my-reward: its config must hold JSON values .*PosixPath"):
        PathConfig().hash("my-reward", "1")


def test_score_returning_the_wrong_count_names_the_count_for_each_failed_sample():
    from pigbench.evaluator import ScalarEvaluator
    from pigbench.protocol import Episode, ImageRef, Label, Target

    class Short(ScalarEvaluator):
        def score(self, requests):
            return [1.0] * (len(requests) - 1)

    ep = Episode("u", (), Target("s", "p", ImageRef("a", b"a"), ImageRef("b", b"b"), Label.A))
    (pred,) = Short().predict([ep.without_gold()])
    assert pred.label == Label.INVALID and "score() returned 0 scores for 1 request" in pred.error


def test_a_calibrated_run_sets_its_evaluator_up_once(tmp_path, monkeypatch):
    from toy import ToyBrightness

    calls = []
    monkeypatch.setattr(ToyBrightness, "setup", lambda self: calls.append(self))
    out = run(config(tmp_path, calibration_fraction=0.3))
    assert len(calls) == 1 and isinstance(out.results["evaluator"]["tie_threshold_source"], dict)


@pytest.mark.parametrize("attr, value, rule", [("kind", "scalarr", "must be one of baseline, scalar, similarity"),
                                               ("uses_references", "yes", "must be True or False"),
                                               ("version", 2, "must be a string"),
                                               ("Config", dict, "must be a frozen dataclass deriving from EvaluatorConfig")])
def test_a_class_attribute_the_runner_or_results_file_cannot_use_is_refused_before_any_prediction(tmp_path, attr, value, rule):
    from pigbench.registry import evaluators
    from toy import ToyBrightness

    name = f"toy-bad-{attr.replace('_', '-')}"
    evaluators.register(name)(type("Bad", (ToyBrightness,), {attr: value}))
    with pytest.raises(ValueError, match=f"^{name}: class attribute {attr} = {value!r} {rule}"):
        run(config(tmp_path, evaluator=name))
    assert not list((tmp_path / "results").rglob("*.jsonl"))


@pytest.mark.parametrize("provenance, detail", [({"weights": Path("/models/x")}, "Object of type PosixPath"),
                                                (["model-id"], "it returned a list")])
def test_a_provenance_that_is_not_a_dict_of_json_values_is_a_one_line_error_and_no_file(tmp_path, provenance, detail):
    from pigbench.registry import evaluators
    from toy import ToyBrightness

    name = f"toy-bad-provenance-{type(provenance).__name__}"
    evaluators.register(name)(type("Bad", (ToyBrightness,), {"provenance": lambda self: provenance}))
    with pytest.raises(ValueError, match=f"^{name}.provenance\\(\\) must return a dict of JSON values .*{detail}"):
        run(config(tmp_path, evaluator=name))
    assert not list((tmp_path / "results").rglob("*.json*"))
    evaluators.get(name).provenance = lambda self: {"weights": "/models/x"}
    assert run(config(tmp_path, evaluator=name)).computed == 0  # the rerun reuses every prediction


def test_reference_size_0_for_a_similarity_evaluator_is_refused_before_anything_loads(tmp_path, monkeypatch):
    """It used to load the model and fail every sample ("needs at least one reference pair"), then abort."""
    from pigbench.registry import evaluators

    cls = evaluators.get("color-reference")
    monkeypatch.setattr(cls, "setup", lambda self: pytest.fail("set up for a run that cannot score"))
    with pytest.raises(ValueError, match=r"^color-reference scores images by similarity .*--reference-size 0 leaves none"):
        run(config(tmp_path, evaluator="color-reference", reference_size=0))
    assert not list((tmp_path / "cache").rglob("*.sqlite"))
    assert run(config(tmp_path, reference_size=0)).results["split"]["reference_size"] == 0  # a scalar needs none


def test_a_run_without_an_output_directory_writes_no_results_file_and_returns_the_same_results(tmp_path, monkeypatch):
    """From Python (a training loop, a notebook) the results dict is enough: ``output=None`` wrote a
    TypeError before (a path of None); it now writes no results file and returns what the file would hold."""
    monkeypatch.chdir(tmp_path)
    kept = run(config(tmp_path))
    bare = run(config(tmp_path, output=None))
    assert bare.results_path is None and (bare.resumed, bare.computed) == (60, 0)  # the store is still used
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "results"]
    assert "predictions" not in bare.results
    assert bare.results["metrics"] == kept.results["metrics"]
    assert bare.results["evaluator"] == kept.results["evaluator"]
