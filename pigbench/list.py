"""List evaluators and datasets: kind, use of references, what each needs. Imports no model library.

examples:
  pigbench list
  pigbench list evaluators --verbose             # with each evaluator's config fields and defaults
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Optional, Sequence

from pigbench.cli import run_as_module
from pigbench.registry import RegistryError, adapters, evaluators


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", choices=["evaluators", "datasets", "all"], default="all")
    p.add_argument("--verbose", "-v", action="store_true", help="also show config fields and defaults")


def evaluator_rows() -> list[dict[str, str]]:
    """One row per registered evaluator; a plug-in that fails to import is listed with the error."""
    rows = []
    for name in evaluators.names():
        try:
            cls = evaluators.get(name)
        except Exception as exc:  # a broken third-party plug-in must not hide the others
            rows.append({"name": name, "kind": "?", "references": "?", "needs": "?",
                         "description": f"cannot load: {exc}", "source": evaluators.source(name), "config": ""})
            continue
        fields = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Config))
        rows.append({
            "name": name, "kind": cls.kind, "references": "yes" if cls.uses_references else "no",
            "needs": ", ".join(cls.needs) or "-", "description": cls.description,
            "source": evaluators.source(name), "config": fields,
        })
    return rows


def dataset_rows() -> list[dict[str, str]]:
    rows = []
    for name in adapters.names():
        try:
            cls = adapters.get(name)
        except Exception as exc:
            rows.append({"name": name, "reference_size": "?", "license": "?", "description": f"cannot load: {exc}"})
            continue
        k = cls.default_reference_size
        rows.append({"name": name, "reference_size": "dynamic" if k is None else str(k),
                     "license": cls.license, "description": cls.description})
    return rows


def _table(rows: list[dict[str, str]], columns: Sequence[str]) -> str:
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns[:-1]}
    head = "  ".join(c.upper().ljust(widths[c]) for c in columns[:-1]) + "  " + columns[-1].upper()
    body = ["  ".join(r[c].ljust(widths[c]) for c in columns[:-1]) + "  " + r[columns[-1]] for r in rows]
    return "\n".join([head, *body])


def main(args: argparse.Namespace) -> int:
    try:
        return _print(args)
    except RegistryError as exc:  # e.g. a third-party plug-in clashing with a built-in name
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _print(args: argparse.Namespace) -> int:
    if args.what in ("evaluators", "all"):
        rows = evaluator_rows()
        print(_table(rows, ["name", "kind", "references", "needs", "description"]))
        if args.verbose:
            for r in rows:
                print(f"\n{r['name']} ({r['source']})\n  options: {r['config'] or '-'}")
    if args.what == "all":
        print()
    if args.what in ("datasets", "all"):
        print(_table(dataset_rows(), ["name", "reference_size", "license", "description"]))
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m pigbench.list``: ``pigbench list`` itself (:func:`pigbench.cli.run_as_module`), which
    ends quietly with status 141 when its reader closes stdout early (``| head``) and with 130 or 143
    when interrupted."""
    return run_as_module("list", argv)


if __name__ == "__main__":
    sys.exit(cli())
