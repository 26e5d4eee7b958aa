"""Run one evaluator at several reference sizes (one results file per size) for the accuracy-vs-K plot.

Takes every `pigbench run` flag, with --reference-sizes instead of --reference-size. Each size is
an ordinary run (resumable, with its own results file, variant suffix k<K>); a size that fails
(e.g. no user has enough records) is reported and the others still run. The dataset's default K
gets a k<K> file too; `pigbench report` shows it and a plain run of the same split and settings as
one ablation row ("(default) = k<K>").

examples:
  pigbench sweep --evaluator color-reference --dataset demo --reference-sizes 1,2,4,8
  pigbench report      # draws figures/accuracy_vs_reference_size_demo.png
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from typing import Callable

from pigbench.adapter import DatasetError
from pigbench.cli import interrupted_status
from pigbench.distributed import World, launched_world
from pigbench.evaluator import RequirementError
from pigbench.registry import RegistryError
from pigbench.run import add_arguments as add_run_arguments
from pigbench.run import INTERRUPTED, config_from_args
from pigbench.runner import RunAborted, RunConfig, RunOutcome, check_settings, run
from pigbench.store import StoreError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p._option_string_actions["--reference-size"].help = argparse.SUPPRESS  # parsed only to be refused in main()
    p.add_argument("--reference-sizes", required=True, type=parse_sizes, metavar="K1,K2,...",
                   help="comma-separated reference sizes, e.g. 1,2,4,8")


def parse_sizes(text: str) -> list[int]:
    """'1,2, 4,8' -> [1, 2, 4, 8]; sorted, unique, each >= 0."""
    if not re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)*", text):
        raise argparse.ArgumentTypeError(f"expected comma-separated non-negative integers, got {text!r}")
    return sorted({int(k) for k in re.findall(r"\d+", text)})


def sweep(base: RunConfig, sizes: list[int], runner: Callable[[RunConfig], RunOutcome] = run,
          log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict[int, RunOutcome | str]:
    """One run per reference size: K -> its outcome, or the error message of a size that failed.
    A ``base.variant`` becomes ``<variant>_k<K>`` (``k<K>`` for ``""``, no suffix) so that sizes never
    share a results file. Under torchrun one process group serves every size (a launch's rendezvous
    cannot be joined twice), and only rank 0 logs."""
    outcomes: dict[int, RunOutcome | str] = {}
    with launched_world() as world:
        if not world.is_main:
            log = lambda m: None  # noqa: E731
        for k in sizes:
            variant = None if base.variant is None else "_".join(filter(None, (base.variant, f"k{k}")))
            config = dataclasses.replace(base, reference_size=k, variant=variant)
            log(f"reference size {k}")
            try:
                outcomes[k] = runner(config)
            except (DatasetError, ValueError, RunAborted, StoreError) as exc:
                outcomes[k] = f"{type(exc).__name__}: {exc}"
                log(f"reference size {k} failed: {exc}")
    return outcomes


def format_summary(outcomes: dict[int, RunOutcome | str]) -> str:
    """One line per size: accuracies with CIs and the results path, or the failure."""
    lines = [f"{'K':>4}  {'acc w/ tie':<22}{'acc w/o tie':<22}results"]
    for k, out in outcomes.items():
        if isinstance(out, str):
            lines.append(f"{k:>4}  failed: {out.splitlines()[0]}")
            continue
        m = out.results["metrics"]
        lines.append(f"{k:>4}  {_acc(m['acc_w_tie']):<22}{_acc(m['acc_wo_tie']):<22}{out.results_path}")
    return "\n".join(lines)


def _acc(a: dict) -> str:
    if a["micro"] is None:
        return "n/a"
    ci = a["micro_ci95"]
    return f"{a['micro']:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def main(args: argparse.Namespace) -> int:
    if args.reference_size is not None:
        print("error: use --reference-sizes with sweep (not --reference-size)", file=sys.stderr)
        return 2
    try:
        base = config_from_args(args)
        check_settings(base)  # a setting no size can run with (an unknown --option) fails once, not per size
        outcomes = sweep(base, args.reference_sizes)
    except (RequirementError, RegistryError, ValueError) as exc:  # ValueError: a setting RunConfig refuses
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: as pigbench run, each size's store holds its committed batches
        print(INTERRUPTED, file=sys.stderr)
        return interrupted_status(exc)
    if World.from_env().is_main:  # every rank has the same outcomes; rank 0 prints them
        print(format_summary(outcomes))
    return 0 if all(not isinstance(o, str) for o in outcomes.values()) else 1


if __name__ == "__main__":
    from pigbench.cli import run_as_module

    sys.exit(run_as_module("sweep"))
