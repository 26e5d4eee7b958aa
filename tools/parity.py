"""Parity of pigbench's evaluators with the published reference packages: same weights, same images.

pigbench rebuilds ImageReward and HPS v2 / v2.1 rather than depending on the ``image-reward`` and
``hpsv2`` packages (issue #4: their pins break this project's dependencies). This script scores
the same image pairs with pigbench's evaluator and with the package itself, run by
``tools/reference_scores.py`` in a virtual environment of its own (``--reference-python``;
``docs/parity.md`` says how to make one), and fails when a score differs by more than
``--tolerance`` (or when the scores barely differ, so that agreement would show nothing).

    # real weights: a folder with ImageReward.pt and med_config.json (THUDM/ImageReward)
    python tools/parity.py imagereward --reference-python /envs/image-reward/bin/python \\
        --model-path /models/ImageReward --sample ../shared/data/llava_reward_sample_test
    # no weights at hand: a real-size random checkpoint, written by the package's own model
    python tools/parity.py hps-v2.1 --reference-python /envs/hpsv2/bin/python \\
        --random-weights /tmp/hps-random --sample ../shared/data/llava_reward_sample_test

Pairs come from ``--jobs FILE`` (a JSON list of ``{"prompt", "image_a", "image_b"}``, image paths
relative to the file) or ``--sample DIR`` (LLaVA-Reward's sample test: ``pairwise_sample.json``
and ``non_pairwise_sample.json`` over ``DIR/sample_img``); each pair is scored again with its
images cut to odd sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REFERENCE_SCRIPT = Path(__file__).with_name("reference_scores.py")
SIDES = ("image_a", "image_b")
# BLIP's configs/med_config.json, which THUDM/ImageReward publishes as med_config.json
BLIP_MED_CONFIG = {
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524,
    "encoder_width": 768, "add_cross_attention": True,
}
FAKE_REVISION = "0" * 40


def sample_jobs(folder: Path) -> list[dict]:
    """The LLaVA-Reward sample's pairs: each pairwise record, and consecutive non-pairwise records."""
    def image(record_path: str) -> str:
        path = folder / "sample_img" / Path(record_path).name
        if not path.is_file():
            sys.exit(f"{folder}: the sample names {record_path}, but {path} does not exist")
        return str(path)

    jobs = [{"prompt": r["prompt"][0], "image_a": image(r["chosen_path"]), "image_b": image(r["reject_path"])}
            for r in read_json(folder / "pairwise_sample.json", "--sample")]
    singles = read_json(folder / "non_pairwise_sample.json", "--sample")
    jobs += [{"prompt": a["prompt"], "image_a": image(a["path"]), "image_b": image(b["path"])}
             for a, b in zip(singles[::2], singles[1::2])]
    return jobs


def read_json(path: Path, flag: str) -> Any:
    """``path``'s JSON; exits with one line naming ``flag`` when it is missing, a folder or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        sys.exit(f"{flag}: cannot read {path} as JSON: {exc}")


def file_jobs(path: Path) -> list[dict]:
    """``--jobs``: image paths made absolute against the file's folder."""
    jobs = read_json(path, "--jobs")
    for job in jobs:
        for side in SIDES:
            job[side] = str((path.parent / job[side]).resolve())
    return jobs


def with_odd_sizes(jobs: list[dict], folder: Path) -> list[dict]:
    """``jobs`` plus each pair again with its images cut to odd sizes (517x389 and 301x703, from
    the top left), so that rounding in the resize and crop shows; the copies are written to ``folder``."""
    from PIL import Image

    extra = []
    for i, job in enumerate(jobs):
        pair = dict(job)
        for side, size in zip(SIDES, ((517, 389), (301, 703))):
            with Image.open(job[side]) as im:
                cut = im.convert("RGB").resize((max(size[0], im.width), max(size[1], im.height))).crop((0, 0, *size))
            pair[side] = str(folder / f"pair{i}_{side}_{size[0]}x{size[1]}.png")
            cut.save(pair[side])
        extra.append(pair)
    return jobs + extra


def fake_hub_entry(workdir: Path, repo_id: str) -> Path:
    """An empty snapshot folder of ``repo_id`` in a hub cache under ``workdir/hf`` (the packages load
    some files by hub id only; with ``HF_HUB_OFFLINE=1`` they are read from there)."""
    repo = workdir / "hf" / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / FAKE_REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(FAKE_REVISION)
    return snapshot


def fake_bert_tokenizer(snapshot: Path, prompts: list[str]) -> None:
    """A BERT tokenizer in ``snapshot`` whose vocabulary covers ``prompts`` (every character too)."""
    from transformers import BertTokenizer

    words = sorted({w for p in prompts for w in re.findall(r"[a-z0-9]+", p.lower())})
    chars = sorted({c for p in prompts for c in p.lower() if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + chars + ["##" + c for c in chars]
    (snapshot / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    BertTokenizer(str(snapshot / "vocab.txt")).save_pretrained(snapshot)


@dataclass
class Setup:
    """Both sides of one comparison: pigbench's evaluator config, the reference script's
    arguments (its subcommand and weight files; the jobs and output files are added) and the
    environment it runs in."""

    config: dict[str, str]
    reference: list[str]
    env: dict[str, str] = field(default_factory=dict)


OFFLINE = "HF_HUB_OFFLINE"


def imagereward_setup(args: argparse.Namespace, jobs: list[dict]) -> Setup:
    """Real: ``--model-path`` holds ImageReward.pt and med_config.json; the package fetches
    bert-base-uncased itself. Random: a real-size checkpoint from the package's own model, BLIP's
    med_config.json and a BERT vocabulary of the prompts' words, put where the package looks."""
    folder, tokenizer, env = Path(args.model_path or ""), args.tokenizer, {}
    if args.random_weights:
        folder = args.random_weights
        env = {"HF_HOME": str(folder / "hf"), OFFLINE: "1"}
        snapshot = fake_hub_entry(folder, "bert-base-uncased")
        fake_bert_tokenizer(snapshot, [job["prompt"] for job in jobs])
        tokenizer = str(snapshot)
        (folder / "med_config.json").write_text(json.dumps(BLIP_MED_CONFIG, indent=2))
        if not (folder / "ImageReward.pt").is_file():
            run_reference(args.reference_python, ["random-imagereward", "--med-config", str(folder / "med_config.json"),
                                                  "--out", str(folder / "ImageReward.pt")], env)
    files = ["--checkpoint", str(folder / "ImageReward.pt"), "--med-config", str(folder / "med_config.json")]
    return Setup({"model_path": str(folder), "tokenizer_path": tokenizer}, ["imagereward", *files], env)


def hps_setup(args: argparse.Namespace, jobs: list[dict]) -> Setup:
    """Real: ``--model-path`` is the HPS checkpoint or its folder; the package fetches LAION's
    ViT-H-14 itself. Random: a real-size float16 checkpoint of the package's own model, the same
    weights put in the hub cache as the LAION model."""
    name = HPS_CHECKPOINTS[args.evaluator]
    path = Path(args.model_path or "")
    env = {}
    if args.random_weights:
        path = args.random_weights / name
        env = {"HF_HOME": str(args.random_weights / "hf"), OFFLINE: "1"}
        base = fake_hub_entry(args.random_weights, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K") / "open_clip_pytorch_model.bin"
        if not path.is_file():
            run_reference(args.reference_python, ["random-hps", "--out", str(path), "--base-out", str(base)], env)
    elif path.is_dir():
        path = path / name
    return Setup({"model_path": str(path)}, ["hps", "--checkpoint", str(path)], env)


HPS_CHECKPOINTS = {"hps-v2": "HPS_v2_compressed.pt", "hps-v2.1": "HPS_v2.1_compressed.pt"}
SETUPS: dict[str, Callable[[argparse.Namespace, list[dict]], Setup]] = {
    "imagereward": imagereward_setup, "hps-v2": hps_setup, "hps-v2.1": hps_setup,
}


def run_reference(python: str, args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([python, str(REFERENCE_SCRIPT), *args], env={**os.environ, **env})
    if done.returncode:
        sys.exit(f"the reference run failed (exit {done.returncode}): {python} {REFERENCE_SCRIPT.name} {' '.join(args)}")


def pigbench_scores(name: str, config: dict[str, str], jobs: list[dict], device: str) -> list[list[float]]:
    """pigbench's evaluator ``name`` on the pairs, through ``predict`` as a run does."""
    from pigbench.evaluator import Runtime
    from pigbench.protocol import Episode, ImageRef, Label, Target
    from pigbench.registry import evaluators

    cls = evaluators.get(name)
    evaluator = cls(cls.Config(**config), Runtime(device=device))
    evaluator.setup()
    episodes = [Episode(f"parity{i}", (), Target(f"pair{i}", job["prompt"], ImageRef(Path(job["image_a"]).name, Path(job["image_a"])),
                                                   ImageRef(Path(job["image_b"]).name, Path(job["image_b"])), Label.A))
                for i, job in enumerate(jobs)]
    predictions = evaluator.predict([ep.without_gold() for ep in episodes])
    failed = [p for p in predictions if p.error]
    if failed:
        sys.exit(f"pigbench could not score {failed[0].sample_id}: {failed[0].error}")
    return [[p.score_a, p.score_b] for p in predictions]


def compare(jobs: list[dict], ours: list[list[float]], theirs: list[list[float]], tolerance: float) -> bool:
    """Print both scores of every image; True when all agree within ``tolerance`` and the scores
    spread enough (10x the tolerance) for a deviation to show."""
    diffs = []
    print(f"{'image':<32} {'pigbench':>12} {'reference':>12} {'|diff|':>10}")
    for job, mine, ref in zip(jobs, ours, theirs):
        for side, a, b in zip(SIDES, mine, ref):
            diffs.append(abs(a - b))
            print(f"{Path(job[side]).name[:32]:<32} {a:>12.6f} {b:>12.6f} {diffs[-1]:>10.2e}")
    spread = statistics.pstdev([s for pair in theirs for s in pair])
    print(f"max |diff| {max(diffs):.2e} (tolerance {tolerance:g}) over {len(diffs)} images; reference scores' std {spread:.4f}")
    if spread < 10 * tolerance:
        print("the reference scores barely differ, so agreement shows nothing: use other images or weights")
    return max(diffs) <= tolerance and spread >= 10 * tolerance


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("evaluator", choices=sorted(SETUPS))
    ap.add_argument("--reference-python", required=True, help="python of the environment with the reference package")
    weights = ap.add_mutually_exclusive_group(required=True)
    weights.add_argument("--model-path", help="the weights pigbench and the package load (see --help of each evaluator)")
    weights.add_argument("--random-weights", type=Path, metavar="DIR", help="write a real-size random checkpoint here and use it")
    pairs = ap.add_mutually_exclusive_group(required=True)
    pairs.add_argument("--jobs", type=Path, help='JSON list of {"prompt", "image_a", "image_b"}')
    pairs.add_argument("--sample", type=Path, help="LLaVA-Reward sample folder (pairwise_sample.json, sample_img/)")
    ap.add_argument("--tokenizer", default="bert-base-uncased", help="pigbench's BERT tokenizer (hub id or folder)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args(argv)
    if not args.tolerance >= 0:  # a negative one failed every comparison, as if the scores disagreed
        ap.error(f"--tolerance must be >= 0, got {args.tolerance}")
    if shutil.which(args.reference_python) is None:  # found before any checkpoint is written or model loaded
        ap.error(f"--reference-python {args.reference_python} is not an executable")

    jobs = sample_jobs(args.sample) if args.sample else file_jobs(args.jobs)
    if args.random_weights:
        args.random_weights = args.random_weights.resolve()
        args.random_weights.mkdir(parents=True, exist_ok=True)
    setup = SETUPS[args.evaluator](args, jobs)
    with tempfile.TemporaryDirectory() as tmp:
        jobs = with_odd_sizes(jobs, Path(tmp))
        jobs_file, scores_file = Path(tmp) / "jobs.json", Path(tmp) / "scores.json"
        jobs_file.write_text(json.dumps(jobs))
        run_reference(args.reference_python, [*setup.reference, "--jobs", str(jobs_file), "--out", str(scores_file)],
                      setup.env)
        theirs = json.loads(scores_file.read_text())
        ours = pigbench_scores(args.evaluator, setup.config, jobs, args.device)
    return 0 if compare(jobs, ours, theirs, args.tolerance) else 1


if __name__ == "__main__":
    sys.exit(main())
