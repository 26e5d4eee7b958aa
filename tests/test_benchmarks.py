"""The scripts in ``benchmarks/``: how they fail where what they measure cannot run, and what they time."""

import importlib.util
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


GPU_SCRIPTS = ["sdxl_render.py", "judge_throughput.py", "pigreward_throughput.py", "scalar_throughput.py", "data_parallel.py",
               "repetition_penalty.py"]


@pytest.mark.parametrize("script", GPU_SCRIPTS)
def test_gpu_benchmark_without_cuda_is_one_line(script):
    """A GPU benchmark on a machine without CUDA exits at once with one line, not a traceback."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=BENCHMARKS.parent)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("--device cuda: torch ") and "sees no CUDA GPU" in lines[0], lines
    assert "wrote" not in proc.stdout  # nothing done before the check (scalar_throughput writes JPEGs first)


def test_gpu_benchmarks_share_one_device_check(monkeypatch):
    """Each script used to repeat the check and its message; they import benchmarks/_device.py."""
    for script in GPU_SCRIPTS:
        source = (BENCHMARKS / script).read_text()
        assert "from _device import require_device" in source and "check_device(" not in source, script
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from _device import require_device

    require_device("cpu")
    with pytest.raises(SystemExit, match=r"^--device 'gpu' is not a device torch knows.*\(the CPU smoke test is in this script's docstring\)$"):
        require_device("gpu")


@pytest.mark.parametrize("script, argv, message", [
    ("scalar_throughput.py", ["--batch-size", "0"], "argument --batch-size: must be 1 or more, got 0"),
    ("judge_throughput.py", ["--batch-sizes", "8,-2"], "argument --batch-sizes: must be 1 or more, got -2"),
    ("demo_run.py", ["--targets", "ten"], "argument --targets: 'ten' is not a whole number"),
    ("scalar_throughput.py", ["--windows", "0,-1"], "argument --windows: must be 0 or more, got -1"),
    ("report_scale.py", ["--root", "unused", "--predictions", "0"], "argument --predictions: must be 1 or more, got 0"),
    ("pigreward_throughput.py", ["--repetition-penalty", "0"], "--repetition-penalty must be > 0, got 0.0"),
    ("pigreward_throughput.py", ["--repetition-penalty", "nan"], "--repetition-penalty must be > 0, got nan"),
])
def test_a_count_out_of_range_is_argparses_usage_error(script, argv, message):
    """Such values used to fail with a traceback deep inside (or after the device check)."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *argv], env=env, capture_output=True, text=True,
                          timeout=300, cwd=BENCHMARKS.parent)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(message), proc.stderr


def test_demo_run_refuses_fewer_targets_than_asked():
    """Too few demo users for --targets: said in one line, not reported as the asked-for count."""
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "demo_run.py"), "--targets", "500", "--users", "3"],
                          capture_output=True, text=True, timeout=300, cwd=BENCHMARKS.parent)
    assert proc.returncode == 1 and "500 targets" not in proc.stdout
    assert proc.stderr.strip() == "3 demo users give only 120 targets, not --targets 500: raise --users"


def test_scalar_throughput_times_prompt_encoding(tmp_path):
    """The timed loop encodes its prompts, although the warm-up scored the same ones (as a run
    encodes each distinct prompt once), and says how many it encoded."""
    spec = importlib.util.spec_from_file_location("scalar_throughput", BENCHMARKS / "scalar_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from pigbench.evaluator import Runtime
    from pigbench.registry import evaluators

    bench.write_model(tmp_path / "model", bench.TINY, "cpu")
    paths = [bench.write_jpeg((tmp_path / f"{i}.jpg", i)) for i in range(8)]
    texts = ["a red cube", "a blue sphere"]
    cls = evaluators.get("pickscore")
    ev = cls(cls.Config(model_path=str(tmp_path / "model"), processor_path=str(tmp_path / "model")),
             Runtime(device="cpu", batch_size=2, num_workers=0))
    ev.setup()
    ev.predict(bench.episodes(paths[4:], texts, "warm"))  # the warm-up: the same two prompts
    before = ev.texts.encoded_texts
    args = SimpleNamespace(images=4, batch_size=2, device="cpu")
    rates, pair_rates, _ = bench.time_calls(ev, paths[:4], texts, [0], args, lambda: None, "t")
    assert ev.texts.encoded_texts - before == 2 and rates[0] > 0 and pair_rates[0] == rates[0] / 2  # 2 pairs of 4 images


def test_scalar_throughput_rankings_shape_gives_each_group_its_six_pairs_and_embeds_each_image_once(tmp_path):
    """--rankings-too: each group of 4 images (one prompt) gives its 6 pairs, so each image is in 3 pairs;
    pigbench embeds each once, and the pair rate is 1.5 times the distinct-image rate."""
    spec = importlib.util.spec_from_file_location("scalar_throughput", BENCHMARKS / "scalar_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from pigbench.evaluator import Runtime
    from pigbench.registry import evaluators

    paths = [bench.write_jpeg((tmp_path / f"{i}.jpg", i)) for i in range(8)]
    eps = bench.ranking_episodes(paths, ["a red cube", "a blue sphere"], "r")
    assert len(eps) == 12 and len({e.sample_id for e in eps}) == 12
    for g in range(2):
        group = eps[6 * g : 6 * g + 6]
        assert {e.target.prompt for e in group} == {["a red cube", "a blue sphere"][g]}
        pairs = {(e.target.image_a.source, e.target.image_b.source) for e in group}
        assert pairs == {(paths[4 * g + i], paths[4 * g + j]) for i in range(4) for j in range(i + 1, 4)}
    bench.write_model(tmp_path / "model", bench.TINY, "cpu")
    cls = evaluators.get("pickscore")
    ev = cls(cls.Config(model_path=str(tmp_path / "model"), processor_path=str(tmp_path / "model")),
             Runtime(device="cpu", batch_size=4, num_workers=0))
    ev.setup()
    args = SimpleNamespace(images=8, batch_size=4, device="cpu")
    rates, pair_rates, preds = bench.time_calls(ev, paths, ["a red cube", "a blue sphere"], [0], args, lambda: None, "t",
                                                bench.ranking_episodes)
    assert ev.images.encoded_images == 8 and len(preds[0][1]) == 12
    assert pair_rates[0] == pytest.approx(1.5 * rates[0])


def test_pickapic_reads_counts_each_settings_row_group_reads(tmp_path):
    """benchmarks/pickapic_reads.py on a small fixture: the default memory cache reads each group holding
    kept rows once, a cache of one group's rows reads them again, and the image store reads none for a
    second run on the same split and only the new users' groups for a split at another K."""
    spec = importlib.util.spec_from_file_location("pickapic_reads", BENCHMARKS / "pickapic_reads.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = SimpleNamespace(users=12, shards=2, row_group_size=3, max_rows_per_user=14, small_cache_groups=1,
                           reference_size=8, other_reference_size=4)
    small, default, first, second, other = bench.bench(tmp_path, args)
    assert small["read"] > small["groups"] == default["groups"] > 0
    assert default["read"] == default["groups"] and default["ratio"] == 1.0
    assert first["read"] == first["groups"] and second["read"] == 0
    assert 0 < other["read"] < other["groups"] and other["users"] > first["users"]
    assert len({r["fingerprint"] for r in (small, default, first, second)}) == 1 and small["targets"] > 0


def test_report_scale_writes_valid_results_deterministically(tmp_path):
    """benchmarks/report_scale.py's tree: every file passes validation, judge predictions carry a
    rationale and three dimensions, and the same arguments write the same bytes."""
    from pigbench.results import load_results, validate_results

    spec = importlib.util.spec_from_file_location("report_scale", BENCHMARKS / "report_scale.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    first = bench.generate(tmp_path / "a", datasets=1, sizes=[1, 2], predictions=130, n_bootstrap=5)
    second = bench.generate(tmp_path / "b", datasets=1, sizes=[1, 2], predictions=130, n_bootstrap=5)
    assert len(first) == 2 * len(bench.EVALUATORS)
    assert all(validate_results(p) == [] for p in first)
    for a, b in zip(first, second):
        jsonl = lambda p: p.with_name(p.stem + ".predictions.jsonl")  # noqa: E731
        assert a.read_bytes() == b.read_bytes() and jsonl(a).read_bytes() == jsonl(b).read_bytes()
    rows = list(load_results(next(p for p in first if p.name.startswith("lvlm-judge")))[1])
    assert len(rows) == 130 and all(r["prediction"]["rationale"] and len(r["prediction"]["dimensions"]) == 3 for r in rows)
    users = Counter(r["user_id"] for r in rows)
    assert list(users.values()) == [bench.TARGETS_PER_USER, bench.TARGETS_PER_USER, 10]  # the last user has the rest
    assert all(len({d["name"] for r in rows if r["user_id"] == u for d in r["prediction"]["dimensions"]}) <= 5 for u in users)
