"""Data-parallel speed-up through the runner: one process on one GPU against ``torchrun`` with N ranks
(one GPU each), on the same fixed set of synthetic episodes, measured in the same invocation.

The evaluator is ``qwen2-vl-judge`` on the local backend with a model of Qwen2-VL-7B-Instruct's shape
and random bf16 weights (``pigbench.judging.random_models``; speed does not depend on weight values),
registered here as ``bench-qwen2-vl-random``. The dataset, ``bench-synthetic``, has ``--users``
users with ``--references`` reference pairs and ``--targets-per-user`` targets each, every image a
``--image-size`` square of noise; generation is fixed at ``--new-tokens`` tokens. With as many
targets per user as the batch size, every batch holds one user's targets in both runs, so the
predictions of the two runs can be compared exactly.

Reported per run: the wall time of the whole command (interpreter and torch start, model build,
evaluation, results), and the evaluation span (first ``predict`` start to last ``predict`` end over
all ranks), with the speed-ups of N ranks over one process.

    python benchmarks/data_parallel.py --ranks 2                     # a host with 2 GPUs
    python benchmarks/data_parallel.py --shape tiny --device cpu --users 4 --targets-per-user 2 \\
        --batch-size 2 --image-size 56 --new-tokens 4 --ranks 2     # smoke test on a CPU
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from _device import require_device
from pigbench.adapter import DatasetAdapter
from pigbench.protocol import Episode, ImageRef, Prediction, PreferenceRecord
from pigbench.registry import adapters, evaluators

TIMING: dict[str, Any] = {"setup_s": 0.0, "predict_s": 0.0, "episodes": 0}


def noise(name: str, seed: int, size: int) -> ImageRef:
    def render() -> Image.Image:
        return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))
    return ImageRef(name, render, known_hash=f"noise-{seed}-{size}")


@adapters.register("bench-synthetic")
class SyntheticDataset(DatasetAdapter):
    """``users`` users, each with ``records`` two-image records of distinct prompts (options)."""

    description = "benchmark episodes: noise images, fixed counts per user"

    def records(self) -> Iterable[PreferenceRecord]:
        from pigbench.adapters.demo import load_prompts

        prompts = [p.text for p in load_prompts()]
        users, records, size = (int(self.options[k]) for k in ("users", "records", "size"))
        for u in range(users):
            for r in range(records):
                seed = (u * 1000 + r) * 2
                images = (noise(f"u{u}r{r}a", seed, size), noise(f"u{u}r{r}b", seed + 1, size))
                yield PreferenceRecord(f"u{u:03d}-r{r:03d}", f"user{u:03d}", prompts[(u * 37 + r) % len(prompts)],
                                       images, (1, 2) if (u + r) % 2 else (2, 1))


def register_random_judge() -> None:
    import torch

    from pigbench.evaluators.qwen2_vl_judge import Qwen2VLJudge, Qwen2VLJudgeConfig
    from pigbench.judging import random_models
    from pigbench.judging.local_backend import LocalBackend

    @dataclass(frozen=True)
    class RandomJudgeConfig(Qwen2VLJudgeConfig):
        shape: str = "7b"  # 7b | tiny

    @evaluators.register("bench-qwen2-vl-random")
    class RandomQwen2VLJudge(Qwen2VLJudge):
        """qwen2-vl-judge with a random-weight model built from a config instead of loaded."""

        Config = RandomJudgeConfig

        @classmethod
        def check_requirements(cls, config: Any) -> None:  # nothing to download
            pass

        def setup(self) -> None:
            if self.backend is not None:
                return
            start = time.time()
            shape = random_models.QWEN2_VL_7B if self.config.shape == "7b" else random_models.QWEN2_VL_TINY
            cuda = self.runtime.device.startswith("cuda")
            model, processor = random_models.qwen2_vl(shape, device=self.runtime.device,
                                                      dtype=torch.bfloat16 if cuda else torch.float32, vocab_size=4096)
            self.backend = LocalBackend(model, processor, batch_size=self.runtime.batch_size, source="random")
            if cuda:
                torch.cuda.synchronize(self.runtime.device)
            TIMING["setup_s"] = round(time.time() - start, 3)

        def predict(self, episodes: Sequence[Episode]) -> list[Prediction]:
            start = time.time()
            out = super().predict(episodes)
            TIMING.setdefault("first_predict", start)
            TIMING["last_predict_end"] = time.time()
            TIMING["predict_s"] += TIMING["last_predict_end"] - start
            TIMING["episodes"] += len(episodes)
            return out


def worker(a: argparse.Namespace) -> None:
    from pigbench.distributed import World
    from pigbench.runner import RunConfig, run

    register_random_judge()
    world = World.from_env()
    out = Path(a.workdir)
    config = RunConfig(
        evaluator="bench-qwen2-vl-random", dataset="bench-synthetic", device=a.device, batch_size=a.batch_size,
        dataset_options={"users": str(a.users), "records": str(a.references + a.targets_per_user),
                         "size": str(a.image_size)}, reference_size=a.references,
        options={"shape": a.shape, "max_new_tokens": str(a.new_tokens), "min_new_tokens": str(a.new_tokens)},
        output=str(out / "results"), cache_dir=str(out / "cache"), progress=False, n_bootstrap=100)
    outcome = run(config)
    timing = {**TIMING, "rank": world.rank, "device": config.device}
    (out / f"timing.rank{world.rank}.json").write_text(json.dumps(timing))
    if world.is_main:
        (out / "outcome.json").write_text(json.dumps({"results_path": str(outcome.results_path),
                                                      "computed": outcome.computed}))


def launch(a: argparse.Namespace, ranks: int, workdir: Path) -> dict[str, Any]:
    """Run the worker with ``ranks`` processes in a fresh ``workdir``; its wall time and timings."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    args = [str(Path(__file__).resolve()), "--worker", "--workdir", str(workdir)] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(a).items() if k not in ("worker", "workdir", "ranks", "json")]
    prefix = [sys.executable] + ([] if ranks == 1 else  # torch.distributed.run is torchrun
                                 ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"])
    start = time.time()
    proc = subprocess.run(prefix + args, capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{ranks}-rank run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    timings = [json.loads(p.read_text()) for p in sorted(workdir.glob("timing.rank*.json"))]
    results_path = Path(json.loads((workdir / "outcome.json").read_text())["results_path"])
    results = json.loads(results_path.read_text())
    span = max(t["last_predict_end"] for t in timings if t["episodes"]) - min(
        t["first_predict"] for t in timings if t["episodes"])
    return {"ranks": ranks, "wall_s": round(wall, 2), "eval_span_s": round(span, 2),
            "per_rank": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in t.items()
                          if k not in ("first_predict", "last_predict_end")} for t in timings],
            "world_size_recorded": results["provenance"]["world_size"], "targets": results["metrics"]["n"],
            "predictions": results_path.with_name(results_path.stem + ".predictions.jsonl").read_text()}


def main() -> None:
    from _args import non_negative_int, positive_int
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=positive_int, default=2)
    ap.add_argument("--shape", choices=["7b", "tiny"], default="7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--users", type=positive_int, default=16)
    ap.add_argument("--references", type=non_negative_int, default=4)
    ap.add_argument("--targets-per-user", type=positive_int, default=16)
    ap.add_argument("--batch-size", type=positive_int, default=16)
    ap.add_argument("--image-size", type=positive_int, default=448)
    ap.add_argument("--new-tokens", type=positive_int, default=32)
    ap.add_argument("--workdir", default="")
    ap.add_argument("--json", default="", help="also write the report to this file")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    import torch

    require_device(a.device)
    root = Path(a.workdir or tempfile.mkdtemp(prefix="pigbench-dp-"))
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
        "gpus": torch.cuda.device_count() if a.device.startswith("cuda") else 0, "torch": torch.__version__,
        "settings": {k: v for k, v in vars(a).items() if k not in ("worker", "workdir", "json")}}
    runs = [launch(a, n, root / f"ranks{n}") for n in (1, a.ranks)]
    one, many = runs
    rows_one, rows_many = one.pop("predictions").splitlines(), many.pop("predictions").splitlines()
    same_text = sum(json.loads(x)["prediction"].get("raw_text") == json.loads(y)["prediction"].get("raw_text")
                    for x, y in zip(rows_one, rows_many))
    report.update(runs=runs, predictions_identical=rows_one == rows_many,
                  raw_text_identical=f"{same_text}/{len(rows_one)}",
                  speedup_eval=round(one["eval_span_s"] / many["eval_span_s"], 2),
                  speedup_wall=round(one["wall_s"] / many["wall_s"], 2))
    print(json.dumps(report, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    print(f"\nSUMMARY {report['device']}: {one['targets']} targets; 1 process: evaluation {one['eval_span_s']} s, "
          f"wall {one['wall_s']} s; {a.ranks} ranks: evaluation {many['eval_span_s']} s, wall {many['wall_s']} s; "
          f"speed-up {report['speedup_eval']}x (evaluation), {report['speedup_wall']}x (wall); "
          f"predictions identical: {report['predictions_identical']}")


if __name__ == "__main__":
    main()
