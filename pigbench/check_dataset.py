"""Run the conformance checks on a dataset adapter and print a pass/fail table (exit 1 on any failure).

The checks (see :mod:`pigbench.dataset_conformance`) run on the adapter's split at --seed and --k,
with fresh instances: unknown options refused and options recorded, determinism (fingerprint,
episodes, skip counts), unique sample ids, gold labels A/B/TIE, no leakage between a user's
references and targets, the reference size K (or the shortfall counted), skips counted with
reasons, and every image opening (or named, per sample, when it does not). Exit 2 on a usage error
(an unknown dataset, a dataset that cannot be read as given).

examples:
  pigbench check-dataset my-dataset --dataset-path ./data
  pigbench check-dataset pip --dataset-path ./pip --dataset-option images=./pip/images --k 5 --seed 1
"""

from __future__ import annotations

import argparse
import sys

from pigbench.adapter import DatasetError
from pigbench.dataset_conformance import MAX_IMAGES, run_dataset_checks
from pigbench.registry import RegistryError
from pigbench.run import parse_pairs


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="dataset name (see `pigbench list datasets`)")
    p.add_argument("--dataset-path", help="local copy of the dataset")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE", help="adapter option (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--k", "--reference-size", dest="k", type=int,
                   help="reference pairs per user (default: the dataset's)")
    p.add_argument("--max-images", type=int, default=MAX_IMAGES,
                   help=f"distinct images opened by the images check (default {MAX_IMAGES})")


def main(args: argparse.Namespace) -> int:
    if args.k is not None and args.k < 0:
        print(f"error: --k must be >= 0, got {args.k}", file=sys.stderr)
        return 2
    if args.max_images < 1:
        print(f"error: --max-images must be >= 1, got {args.max_images}", file=sys.stderr)
        return 2
    try:
        report = run_dataset_checks(args.dataset, args.dataset_path, parse_pairs(args.dataset_option, "--dataset-option"),
                                    seed=args.seed, reference_size=args.k, max_images=args.max_images)
    except (RegistryError, DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = "dynamic" if report.reference_size is None else report.reference_size
    print(f"{args.dataset}: {report.episodes} episodes from {report.users} users, seed {args.seed}, "
          f"reference size {size}, fingerprint {report.fingerprint}\n")
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    from pigbench.cli import run_as_module

    sys.exit(run_as_module("check-dataset"))
