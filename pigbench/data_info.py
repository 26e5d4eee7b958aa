"""Inspect a dataset's per-user split: users, targets, ties, reference sizes, skips, fingerprint.

    pigbench data info NAME [--path P] [--dataset-option K=V ...] [--reference-size K] [--seed S] [--json]

Builds the split exactly as a run would (same adapter, options, reference size and seed), so the
fingerprint printed here is the one a results file will carry, unless the run cut the split with
--limit or held users out with --calibrate-tie-threshold (which change the fingerprint). For Pick-a-Pic,
``--dataset-option images=none`` builds it from the metadata alone, without reading images.

examples:
  pigbench data info demo
  pigbench data info pickapic --dataset-path /data/pickapic_v2 --dataset-option images=none --json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from pigbench.adapter import DatasetError
from pigbench.protocol import Label
from pigbench.registry import RegistryError, adapters
from pigbench.splits import SplitResult


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="info", required=True)
    info = sub.add_parser("info", help="summarise a dataset's split", description=__doc__,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    info.add_argument("name", help="dataset name (see `pigbench list datasets`)")
    info.add_argument("--path", "--dataset-path", dest="path", help="local copy of the dataset")
    info.add_argument("--option", "--dataset-option", dest="option", action="append", default=[], metavar="KEY=VALUE",
                      help="adapter option (repeatable)")
    info.add_argument("--reference-size", type=int, help="reference pairs per user (default: the dataset's)")
    info.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")


def summarize(split: SplitResult) -> dict[str, Any]:
    """The split's summary plus target, tie, record and reference-size counts. Reference records are
    counted over every episode: a source that fixes references per target (learn-user-pref) gives
    each target its own; the reference-size histogram counts each user's first episode."""
    ref_sizes: dict[str, int] = {}
    ties = 0
    target_records: set[tuple[str, str]] = set()
    ref_records: set[tuple[str, str]] = set()
    shared: tuple = ()  # the previous episode's references: a user's episodes share one tuple
    for ep in split.episodes:
        ties += ep.target.gold == Label.TIE
        target_records.add((ep.user_id, ep.target.record_id))
        ref_sizes.setdefault(ep.user_id, len(ep.references))
        if ep.references is not shared:
            ref_records.update((ep.user_id, r.record_id) for r in ep.references)
            shared = ep.references
    out = split.summary()
    out.update({
        "gold_ties": ties,
        "target_records": len(target_records),
        "reference_records": len(ref_records),
        "reference_size_histogram": {str(k): v for k, v in sorted(Counter(ref_sizes.values()).items())},
    })
    return out


def format_summary(s: dict[str, Any]) -> str:
    targets = s["targets"] or 1
    lines = [
        f"dataset {s['dataset']}  seed {s['seed']}  reference size {s['reference_size']}  fingerprint {s['fingerprint']}",
        f"users {s['users']}  targets {s['targets']}  gold ties {s['gold_ties']} ({100 * s['gold_ties'] / targets:.1f}%)",
        f"records: {s['target_records']} target, {s['reference_records']} reference",
        "reference-size histogram (size: users): "
        + (", ".join(f"{k}: {v}" for k, v in s["reference_size_histogram"].items()) or "-"),
    ]
    for title, key in (("skipped users", "skipped_users"), ("skipped records / target pairs", "skipped_records")):
        lines.append(f"{title}:" + ("" if s[key] else " none"))
        for reason, count in sorted(s[key].items(), key=lambda kv: -kv[1]):
            examples = ", ".join(s["skip_examples"].get(reason, [])[:3])
            lines.append(f"  {count:>8}  {reason}" + (f"  (e.g. {examples})" if examples else ""))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from pigbench.run import parse_pairs

    try:
        adapter = adapters.get(args.name)(args.path, parse_pairs(args.option, "--dataset-option"))
        split = adapter.split(seed=args.seed, reference_size=args.reference_size)
    except (DatasetError, RegistryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = summarize(split)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    from pigbench.cli import run_as_module

    sys.exit(run_as_module("data"))
