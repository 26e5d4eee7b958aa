"""Admitting results files: find them under a directory, validate each, keep the rest out with reasons.

The report and the leaderboard read results only through :func:`collect`, so neither shows a
number that ``pigbench validate`` would reject (every metric is recomputed from the predictions
JSONL). Nothing here imports evaluator or adapter code: results are plain JSON.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pigbench.report.digest import SAMPLES_PER_PAGE, Digest, DigestBuilder
from pigbench.results import PredictionsRecount, ResultsError, load_results

WITHOUT_REFERENCE = "without reference"
WITH_REFERENCE = "with reference"


@dataclass(frozen=True)
class Entry:
    """One admitted results file: its path relative to the results directory, the results dict and
    what the report and leaderboard use of its predictions (:class:`~pigbench.report.digest.Digest`)."""

    relpath: str
    results: dict[str, Any]
    predictions: Digest = field(repr=False)

    @property
    def evaluator(self) -> str:
        return self.results["evaluator"]["name"]

    @property
    def variant(self) -> Optional[str]:
        return self.results["evaluator"].get("variant")

    @property
    def dataset(self) -> str:
        return self.results["dataset"]["name"]

    @property
    def label(self) -> str:
        """Evaluator name with its variant in parentheses, if any."""
        return f"{self.evaluator} ({self.variant})" if self.variant else self.evaluator

    @property
    def uses_references(self) -> bool:
        return bool(self.results["evaluator"]["uses_references"])

    @property
    def group(self) -> str:
        """``"with reference"`` or ``"without reference"``: the main table's row groups."""
        return WITH_REFERENCE if self.uses_references else WITHOUT_REFERENCE

    @property
    def kind(self) -> str:
        return self.results["evaluator"]["kind"]

    def accuracy(self, name: str, average: str = "micro") -> Optional[float]:
        """An accuracy in percent (``name`` in :data:`pigbench.metrics.ACCURACIES`)."""
        return self.results["metrics"][name][average]

    def ci(self, name: str, average: str = "micro") -> Optional[list[float]]:
        """Its 95% cluster-bootstrap CI ``[low, high]`` in percent, or None."""
        return self.results["metrics"][name][f"{average}_ci95"]


@dataclass(frozen=True)
class Rejected:
    """A results file that failed validation, with every problem found."""

    relpath: str
    reasons: list[str]


@dataclass
class Collection:
    """Admitted entries sorted by (dataset, evaluator, variant), and rejected files sorted by path."""

    entries: list[Entry]
    rejected: list[Rejected]

    def datasets(self) -> list[str]:
        return sorted({e.dataset for e in self.entries})

    def for_dataset(self, dataset: str) -> list[Entry]:
        return [e for e in self.entries if e.dataset == dataset]

    def main_split(self, dataset: str) -> str:
        """The fingerprint of ``dataset``'s main split: the one most of its runs use, preferring one
        that a run without a variant suffix (default settings) uses. Tables rank only its runs."""
        prints = Counter(e.results["split"]["fingerprint"] for e in self.for_dataset(dataset))
        plain = {e.results["split"]["fingerprint"] for e in self.for_dataset(dataset) if not e.variant}
        return max(prints, key=lambda f: (f in plain, prints[f], f))


def find_results_files(root: Path) -> list[Path]:
    """Every ``*.json`` under ``root`` (recursively, hidden folders skipped), sorted."""
    return sorted(
        p for p in root.rglob("*.json")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def collect(root: str | Path, samples: int = SAMPLES_PER_PAGE, dimensions: bool = True) -> Collection:
    """Validate every results file under ``root``; admit those without problems. Each file's
    predictions are read once, one row at a time, and kept only as their digest (``samples``: sample
    rows kept per file; ``dimensions``: count dimension names), so that memory does not grow with the
    predictions' rows.

    Raises ``FileNotFoundError`` when ``root`` is not a directory (missing, or a file)."""
    root = Path(root)
    if root.is_file():
        raise FileNotFoundError(f"{root} is a file; a results directory is expected (the folder holding results "
                                "files; `pigbench validate FILE` checks one file)")
    if not root.is_dir():
        raise FileNotFoundError(f"results directory {root} does not exist (run `pigbench run` first)")
    entries, rejected = [], []
    for path in find_results_files(root):
        admitted = _admit(path, path.relative_to(root).as_posix(), samples, dimensions)
        (entries if isinstance(admitted, Entry) else rejected).append(admitted)
    entries.sort(key=lambda e: (e.dataset, e.evaluator, e.variant or "", e.relpath))
    return Collection(entries, rejected)


def _admit(path: Path, relpath: str, samples: int, dimensions: bool) -> Entry | Rejected:
    """One results file validated and digested in one read of its predictions, row by row: the rows
    digested are the rows validated, and none is kept beyond the digest's samples."""
    recount = PredictionsRecount()
    try:
        results, rows = load_results(path)
        builder = DigestBuilder(results["evaluator"]["kind"], samples, dimensions)
        for row in rows:
            recount.add(row)
            builder.add(row)
        problems = recount.problems(path, results)
    except ResultsError as exc:
        problems = [str(exc)]
    if problems:
        return Rejected(relpath, [_without_path(p, path) for p in problems])
    return Entry(relpath, results, builder.digest())


def output_dir(path: str | Path, results: str | Path) -> Path:
    """``path`` as a directory, created if missing; ``NotADirectoryError`` naming ``--out`` when it
    cannot be (it is a file, or lies under one) or lies in ``results``, where the JSON written there
    would be read back as a rejected results file."""
    out = Path(path)
    if out.resolve() == Path(results).resolve() or Path(results).resolve() in out.resolve().parents:
        raise NotADirectoryError(f"the output directory (--out) {str(out)!r} lies in the results directory "
                                 f"(--results) {str(results)!r}; its JSON would be read back as results files")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NotADirectoryError(f"cannot create the output directory (--out) {str(out)!r}: "
                                 f"{exc.strerror or exc}") from None
    return out


def nothing_admitted(root: str | Path, rejected: int) -> str:
    """The one-line error of a command that admitted no results file from ``root`` (exit status 1)."""
    if rejected:
        return f"no results file under {root} passed validation ({rejected} rejected, reasons above); nothing to show"
    return f"no results files (*.json) under {root}; nothing to show (run `pigbench run` first)"


def _without_path(problem: str, path: Path) -> str:
    """A validation message without this machine's directories (the file is named beside it)."""
    prefix = f"{path}: "
    problem = problem[len(prefix):] if problem.startswith(prefix) else problem
    return problem.replace(f"{path.parent}{os.sep}", "")


def slug(text: str) -> str:
    """A file-name-safe form of a name from a results file: letters, digits, ``.``, ``_``, ``-``;
    names that needed changes get a short hash so that different names never share a slug."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60]
    if cleaned == text:
        return cleaned
    return f"{cleaned or 'x'}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
