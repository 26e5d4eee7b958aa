"""Run an evaluator on a dataset: split, predict (resumably), score, write the results file.

With no arguments it runs the embedded demo with the best weight-free reference-based evaluator.

examples:
  pigbench run                                   # the embedded demo with the default evaluator
  pigbench run --evaluator ssim-reference --dataset demo --limit 200 --output results/
  pigbench run --evaluator pickscore --dataset pickapic --dataset-path /data/pickapic_v2 --device cuda --batch-size 64
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Optional, Sequence

# Only light modules at import: ``cli`` installs the SIGTERM handler before the runner (torch) is
# imported, so a SIGTERM during those imports stops the command as one during the run does.
from pigbench.cli import interrupted_status, quiet_on_closed_stdout, sigterm_as_interrupt

if TYPE_CHECKING:
    from pigbench.runner import RunConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pigbench.runner import DEFAULT_DATASET, DEFAULT_EVALUATOR

    p.add_argument("--evaluator", default=DEFAULT_EVALUATOR, help="evaluator name (see `pigbench list`)")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="dataset name (see `pigbench list`)")
    p.add_argument("--dataset-path", help="local copy of the dataset")
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                   help="adapter option (repeatable), e.g. users=300 for demo")
    p.add_argument("--reference-size", type=int, help="reference pairs per user (default: the dataset's)")
    p.add_argument("--limit", type=int, help="evaluate only the first N targets of the split")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--num-workers", type=int, default=0, help="image-decoding workers (0: the evaluator decides)")
    p.add_argument("--output", "--out", default="results", help="results directory (default results/)")
    p.add_argument("--tie-threshold", type=float, help="tau: |s(A)-s(B)| <= tau predicts TIE (default 0)")
    p.add_argument("--calibrate-tie-threshold", type=float, metavar="FRACTION", dest="calibration_fraction",
                   help="tune tau by Pick-a-Pic's grid search on the targets of users held out by a seeded hash, "
                        "each with this probability (e.g. 0.2), then evaluate the other users")
    p.add_argument("--swap", action="store_true", help="ask both A/B orders and combine (judges)")
    p.add_argument("--model-path", help="hub id or local path of the evaluator's model")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="evaluator config field (repeatable); see `pigbench list --verbose`")
    p.add_argument("--variant", help="results file suffix (default: derived from non-default settings)")
    p.add_argument("--cache-dir", help="prediction store directory (default $PIGBENCH_CACHE or .pigbench_cache)")
    p.add_argument("--max-error-rate", type=float, default=0.5, help="stop when more samples than this share fail")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_pairs(pairs: Sequence[str], flag: str) -> dict[str, str]:
    """``["k=v", ...]`` as a dict; ValueError naming ``flag`` for an item without ``=`` or key, or a key
    given twice."""
    out = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        if key.strip() in out:
            raise ValueError(f"{flag} {key.strip()} given twice ({out[key.strip()]!r} and {value.strip()!r})")
        out[key.strip()] = value.strip()
    return out


def config_from_args(args: argparse.Namespace) -> "RunConfig":
    from pigbench.runner import RunConfig

    config = RunConfig(
        evaluator=args.evaluator, dataset=args.dataset, dataset_path=args.dataset_path,
        dataset_options=parse_pairs(args.dataset_option, "--dataset-option"),
        reference_size=args.reference_size, limit=args.limit, seed=args.seed, batch_size=args.batch_size,
        device=args.device, num_workers=args.num_workers, output=args.output,
        tie_threshold=args.tie_threshold, calibration_fraction=args.calibration_fraction, swap=args.swap,
        model_path=args.model_path, options=parse_pairs(args.option, "--option"), variant=args.variant,
        max_error_rate=args.max_error_rate, progress=not args.no_progress,
    )
    if args.cache_dir:
        config.cache_dir = args.cache_dir
    return config


INTERRUPTED = "interrupted: the predictions committed so far are kept; run the same command again to resume"


def main(args: argparse.Namespace) -> int:
    from pigbench.adapter import DatasetError
    from pigbench.distributed import World
    from pigbench.evaluator import RequirementError
    from pigbench.registry import RegistryError
    from pigbench.report_table import format_metrics_table
    from pigbench.runner import RunAborted, run
    from pigbench.store import StoreError

    try:
        outcome = run(config_from_args(args))
    except (RequirementError, DatasetError, RegistryError, StoreError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunAborted as exc:
        print(f"error: run aborted: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM in a command: the store holds every committed batch
        print(INTERRUPTED, file=sys.stderr)
        return interrupted_status(exc)
    if not World.from_env().is_main:  # under torchrun every rank returns the same outcome; rank 0 prints it
        return 0
    print(format_metrics_table(outcome.results))
    print(f"\nresults: {outcome.results_path}  (computed {outcome.computed}, reused {outcome.resumed})")
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pigbench.run``: SIGTERM is handled from the start, the runner's imports included
    (the message above, status 143)."""
    with sigterm_as_interrupt():
        try:
            parser = argparse.ArgumentParser(prog="python -m pigbench.run", description=__doc__,
                                             formatter_class=argparse.RawDescriptionHelpFormatter)
            add_arguments(parser)
            args = parser.parse_args(argv)
        except KeyboardInterrupt as exc:  # during the imports: nothing was computed yet
            print(INTERRUPTED, file=sys.stderr)
            return interrupted_status(exc)
        return quiet_on_closed_stdout(lambda: main(args))


if __name__ == "__main__":
    sys.exit(cli())
