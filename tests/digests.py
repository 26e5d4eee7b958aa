"""The digest of a list of prediction rows, for the report and leaderboard tests: production digests
rows as they stream out of a results file (:func:`pigbench.report.collect.collect`)."""

from __future__ import annotations

from typing import Iterable

from pigbench.report.digest import SAMPLES_PER_PAGE, Digest, DigestBuilder


def digest_rows(rows: Iterable[dict], kind: str, samples: int = SAMPLES_PER_PAGE) -> Digest:
    """The :class:`~pigbench.report.digest.Digest` of validated prediction rows (``kind``: the
    evaluator's kind; ``samples``: how many sample rows to keep)."""
    builder = DigestBuilder(kind, samples)
    for row in rows:
        builder.add(row)
    return builder.digest()
