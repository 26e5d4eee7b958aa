"""Validate results files: schema, predictions hash, and every metric recomputed from the predictions.

Each argument is a results JSON file or a results directory; a directory stands for every results
file under it, found as ``pigbench report`` and ``pigbench leaderboard build`` find them (every
``*.json``, recursively, hidden folders skipped; the ``.predictions.jsonl`` side files are read with
their results file). One line per file (``ok`` or ``INVALID`` with its problems), then a summary when
more than one file was checked or a directory was given. Exit status: 0 when every file is valid, 1
when any is invalid, 2 when a directory holds no results file.

examples:
  pigbench validate results/demo/color-reference.json
  pigbench validate results/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pigbench.report.collect import find_results_files
from pigbench.results import validate_results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="PATH",
                   help="results JSON files, or results directories (every results file under each)")


def results_paths(path: str) -> list[Path]:
    """The results files ``path`` stands for: itself, or every results file under it when it is a
    directory; ``FileNotFoundError`` when that directory holds none."""
    root = Path(path)
    if not root.is_dir():
        return [root]
    found = find_results_files(root)
    if not found:
        raise FileNotFoundError(f"no results files (*.json) under {root}; nothing to validate "
                                "(run `pigbench run` first)")
    return found


def main(args: argparse.Namespace) -> int:
    try:
        paths = [p for arg in args.files for p in results_paths(arg)]
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        problems = validate_results(path)
        if problems:
            failed += 1
            print(f"INVALID {path}")
            for problem in problems:
                print(f"  {problem}")
        else:
            print(f"ok      {path}")
    if len(paths) > 1 or any(Path(arg).is_dir() for arg in args.files):
        print(f"{len(paths)} results file(s): {len(paths) - failed} ok, {failed} invalid")
    return 1 if failed else 0


if __name__ == "__main__":
    from pigbench.cli import run_as_module

    sys.exit(run_as_module("validate"))
