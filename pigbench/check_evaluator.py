"""Run the conformance checks on an evaluator and print a pass/fail table (exit 1 on any failure).

The checks (see :mod:`pigbench.conformance`) run on a few episodes of the demo dataset, with fresh
instances: config round trip and hash, one in-order prediction per episode with valid labels,
batch sizes 1 vs 7, two runs with the same config, the same predictions after a look-ahead
``prepare`` (when ``prepare_window`` is set), a corrupt image, no reference reads by a
reference-free evaluator, the runner's --swap (both orders asked and mapped back; for judges,
probe models whose position bias must cancel and whose preference must survive), scores and
tie thresholds as --tie-threshold and --calibrate-tie-threshold read them, and fail-fast
requirements. A check that does not apply to the evaluator is skipped, saying why.

examples:
  pigbench check-evaluator my-reward
  pigbench check-evaluator my-reward --model-path ./weights --device cuda --option tie_threshold=0.1
"""

from __future__ import annotations

import argparse
import sys

from pigbench.adapter import DatasetError
from pigbench.conformance import BATCH_SIZES, run_checks
from pigbench.evaluator import RequirementError
from pigbench.registry import RegistryError
from pigbench.run import parse_pairs
from pigbench.runner import check_device


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("evaluator", help="evaluator name (see `pigbench list`)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="evaluator config field (repeatable)")
    p.add_argument("--model-path", help="sets the config field model_path")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dataset", default="demo", help="dataset whose episodes are used (default demo)")
    p.add_argument("--dataset-path", help="local copy of the dataset")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE", help="adapter option (repeatable)")
    p.add_argument("--episodes", type=int, default=24, help="episodes per check (default 24; at least 8)")
    p.add_argument("--score-tolerance", type=float, default=1e-6,
                   help="relative and absolute tolerance when comparing scores between runs (default 1e-6)")


def main(args: argparse.Namespace) -> int:
    if args.episodes <= BATCH_SIZES[-1]:
        print(f"error: --episodes must be more than {BATCH_SIZES[-1]} (one batch of {BATCH_SIZES[-1]})", file=sys.stderr)
        return 2
    if not args.score_tolerance >= 0:  # also NaN, which would make "within tolerance" mean "equal"
        print(f"error: --score-tolerance must be >= 0, got {args.score_tolerance}", file=sys.stderr)
        return 2
    try:
        check_device(args.device)
        options = parse_pairs(args.option, "--option")
        if args.model_path is not None:
            if options.get("model_path", args.model_path) != args.model_path:  # as pigbench run refuses it
                raise ValueError(f"--model-path {args.model_path} and --option model_path={options['model_path']} "
                                 "disagree; give one of them")
            options["model_path"] = args.model_path
        report = run_checks(args.evaluator, options, dataset=args.dataset, dataset_path=args.dataset_path,
                            dataset_options=parse_pairs(args.dataset_option, "--dataset-option"),
                            episodes=args.episodes, device=args.device, score_tolerance=args.score_tolerance)
    except (RegistryError, DatasetError, RequirementError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.evaluator} on {args.dataset}: {report.episodes} episodes from {report.users} users, "
          f"batch sizes {' and '.join(map(str, BATCH_SIZES))}, device {args.device}\n")
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    from pigbench.cli import run_as_module

    sys.exit(run_as_module("check-evaluator"))
