"""Validate results files: schema, predictions hash, and every metric recomputed from the predictions."""

from __future__ import annotations

import argparse

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
