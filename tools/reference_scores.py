"""Scores from a published reference package, for pigbench's parity check (``tools/parity.py``).

Runs in a virtual environment of its own that has the reference package installed (the packages
pin versions that break pigbench's dependencies; ``docs/parity.md`` lists each environment). It
imports nothing from pigbench: only the package, torch and Pillow.

``jobs.json`` is a list of pairs ``{"prompt": str, "image_a": path, "image_b": path}``; the
output is the package's ``[score_a, score_b]`` for each pair, in order, as JSON.

    python tools/reference_scores.py imagereward --jobs jobs.json --out scores.json \\
        --checkpoint DIR/ImageReward.pt --med-config DIR/med_config.json
    python tools/reference_scores.py hps --jobs jobs.json --out scores.json --checkpoint HPS_v2.1_compressed.pt
    python tools/reference_scores.py random-imagereward --med-config med_config.json --out DIR/ImageReward.pt
    python tools/reference_scores.py random-hps --out DIR/HPS_v2_compressed.pt --base-out BASE.bin
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

SIDES = ("image_a", "image_b")


def imagereward_scores(jobs: list[dict], checkpoint: str, med_config: str) -> list[list[float]]:
    """``ImageReward.load`` on a local checkpoint, then ``model.score(prompt, image path)`` per image.

    The package loads with ``strict=False``; a checkpoint that leaves any of the package's
    parameters unset, or holds names the package does not have, is refused here.
    """
    import ImageReward as RM
    import torch

    model = RM.load(checkpoint, device="cpu", med_config=med_config)
    unset = model.load_state_dict(torch.load(checkpoint, map_location="cpu"), strict=False)
    if unset.missing_keys or unset.unexpected_keys:
        sys.exit(f"{checkpoint}: not ImageReward's layout: missing {unset.missing_keys[:5]}, "
                 f"unexpected {unset.unexpected_keys[:5]}")
    with torch.no_grad():
        return [[float(model.score(job["prompt"], job[side])) for side in SIDES] for job in jobs]


def hps_scores(jobs: list[dict], checkpoint: str) -> list[list[float]]:
    """``hpsv2.img_score.score([image_a, image_b], prompt, cp=checkpoint)`` per pair (it loads the
    checkpoint strictly; it also loads LAION's ViT-H-14 first, from the hub cache)."""
    from hpsv2.img_score import score

    return [[float(s) for s in score([job[side] for side in SIDES], job["prompt"], cp=checkpoint)] for job in jobs]


def jitter(model: Any) -> None:
    """Spread a freshly initialized model's outputs as trained weights do: biases (0 at
    initialization) and layer norms (identity) get noise, so scores differ between images."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.add_(torch.randn_like(param), alpha=0.1 if "norm" in name.lower() or "ln" in name else 0.02)


def random_imagereward(med_config: str, out: Path, seed: int) -> None:
    """An ``ImageReward.pt`` of the real size with random weights, from the package's own model;
    the rating MLP (initialized at std 1/769, which makes every reward nearly the same) is drawn
    at std 1/sqrt(fan-in)."""
    import torch
    from ImageReward import ImageReward

    torch.manual_seed(seed)
    model = ImageReward(med_config=med_config, device="cpu")
    jitter(model)
    with torch.no_grad():
        for param in model.mlp.parameters():
            param.normal_(0.0, 1.0 / math.sqrt(param.shape[-1] if param.dim() == 2 else 64))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out)


def random_hps(out: Path, base_out: Path, seed: int) -> None:
    """An HPS checkpoint (``{"state_dict": ...}``, float16 like the published ``*_compressed.pt``)
    of the package's own ViT-H-14 with random weights, and the same weights as the LAION base
    model file that ``hpsv2`` loads before the checkpoint."""
    import torch
    from hpsv2.src.open_clip import create_model_and_transforms

    torch.manual_seed(seed)
    model = create_model_and_transforms("ViT-H-14", pretrained=None, precision="fp32", device="cpu", output_dict=True)[0]
    jitter(model)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    for path in (out, base_out):
        path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state}, out)
    torch.save(state, base_out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, what in (("imagereward", "the image-reward package"), ("hps", "the hpsv2 package")):
        score = sub.add_parser(name, help=f"score jobs with {what}")
        score.add_argument("--jobs", type=Path, required=True)
        score.add_argument("--out", type=Path, required=True)
        score.add_argument("--checkpoint", required=True)
        if name == "imagereward":
            score.add_argument("--med-config", required=True)
    make = sub.add_parser("random-imagereward", help="write a real-size ImageReward.pt with random weights")
    make.add_argument("--med-config", required=True)
    make_hps = sub.add_parser("random-hps", help="write a real-size HPS checkpoint and base model with random weights")
    make_hps.add_argument("--base-out", type=Path, required=True)
    for parser in (make, make_hps):
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.command == "random-imagereward":
        random_imagereward(args.med_config, args.out, args.seed)
    elif args.command == "random-hps":
        random_hps(args.out, args.base_out, args.seed)
    else:
        jobs = json.loads(args.jobs.read_text())
        scores = imagereward_scores(jobs, args.checkpoint, args.med_config) if args.command == "imagereward" \
            else hps_scores(jobs, args.checkpoint)
        args.out.write_text(json.dumps(scores))


if __name__ == "__main__":
    main()
