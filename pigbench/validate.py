"""Validate results files: schema, predictions hash, and every metric recomputed from the predictions.

Prints ``ok`` or ``INVALID`` with the problems for each file; exit status 1 when any file is invalid.

examples:
  pigbench validate results/demo/color-reference.json
  pigbench validate results/*/*.json
"""

from __future__ import annotations

import argparse
import sys

from pigbench.results import validate_results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="results JSON files")


def main(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        problems = validate_results(path)
        if problems:
            failed += 1
            print(f"INVALID {path}")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"ok      {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    from pigbench.cli import run_as_module

    sys.exit(run_as_module("validate"))
