"""How well each similarity metric tracks user preference.

For every evaluator of kind ``similarity`` (one canonical run per dataset, as in the main table):
acc w/ tie and acc w/o tie with their 95% CIs, and Spearman's rank correlation between the score
difference ``score_a - score_b`` and the gold preference coded A = +1, TIE = 0, B = -1. The
correlation does not depend on the tie threshold; it is computed over targets with both scores
(:attr:`pigbench.report.digest.Digest.rank_correlation`, of the score pairs kept while the results
file is read).
"""

from __future__ import annotations

from typing import Optional

from pigbench.report.collect import Collection, Entry
from pigbench.report.tables import CI_NOTE, Cell, Row, Table, canonical_entries, mark_best, other_split_note


def similarity_entries(collection: Collection) -> list[Entry]:
    """Canonical runs of similarity metrics, sorted by (evaluator, dataset)."""
    chosen, _ = canonical_entries(collection)
    return [e for _, e in sorted(chosen.items()) if e.kind == "similarity"]


def similarity_table(collection: Collection) -> Optional[Table]:
    """Rows are similarity metrics; per dataset: acc w/ tie, acc w/o tie, Spearman rho. None if no such runs.
    As in the main table, a run on another split than its dataset's main one is marked and not ranked."""
    entries = similarity_entries(collection)
    if not entries:
        return None
    datasets = sorted({e.dataset for e in entries})
    main = {ds: collection.main_split(ds) for ds in datasets}
    by_key = {(e.evaluator, e.dataset): e for e in entries}
    rows = []
    for ev in sorted({e.evaluator for e in entries}):
        cells: list = []
        for ds in datasets:
            e = by_key.get((ev, ds))
            if e is None:
                cells += ["", "", ""]
                continue
            rho, _ = e.predictions.rank_correlation
            other = e.results["split"]["fingerprint"] != main[ds]
            cells += [Cell(e.accuracy("acc_w_tie"), e.ci("acc_w_tie"), other_split=other),
                      Cell(e.accuracy("acc_wo_tie"), e.ci("acc_wo_tie"), other_split=other),
                      Cell(rho, digits=3, other_split=other)]
        rows.append(Row(ev, cells))
    others = [(ds, sorted(e.evaluator for e in entries if e.dataset == ds and e.results["split"]["fingerprint"] != main[ds]))
              for ds in datasets]
    return Table(
        title="Similarity metrics: agreement with user preference",
        row_header="Similarity metric",
        columns=[c for _ in datasets for c in ("acc w/ tie", "acc w/o tie", "Spearman rho")],
        column_groups=[(ds, 3) for ds in datasets],
        groups=mark_best([("", rows)], list(range(3 * len(datasets)))),
        notes=[CI_NOTE, "Spearman rho: rank correlation of score_a - score_b with the gold preference (A=+1, TIE=0, B=-1).",
               *(other_split_note(ds, evs, main[ds]) for ds, evs in others if evs)],
    )
