"""Leaderboard site: numbers checked against the results, admission, escaping, self-containment.

Built once per module from the shared results tree (``conftest.results_tree``): runner output on
the demo and toy datasets, synthetic runs with rationales and dimensions, a run whose evaluator
name, rationale, dimension names and prompt carry XSS payloads, and one tampered file.
"""

import hashlib
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pigbench.cli import main as cli_main
from pigbench.leaderboard import _score, build_site, sample_predictions, script_json
from pigbench.report.collect import collect
from digests import digest_rows
from synthetic_results import XSS

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def site(results_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    build_site(results_tree[0], out)
    return out


class Tables(HTMLParser):
    """Rows of every ``<table>`` as lists of cell texts, plus each row's attributes, its cells'
    ``data-sort`` values (None where absent) and first link."""

    def __init__(self):
        super().__init__()
        self.tables, self._cell, self._row = [], None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append({"class": attrs.get("class", ""), "rows": []})
        elif tag == "tr":
            self._row = {"attrs": attrs, "cells": [], "sorts": [], "href": None}
            self.tables[-1]["rows"].append(self._row)
        elif tag in ("td", "th"):
            self._cell = []
            self._row["sorts"].append(attrs.get("data-sort"))
        elif tag == "a" and self._row is not None and self._row["href"] is None:
            self._row["href"] = attrs.get("href")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row["cells"].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


class Tags(HTMLParser):
    """Every start tag with its attributes, as the browser's parser would see them."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def handle_starttag(self, tag, attrs):
        self.seen.append((tag, attrs))


ALLOWED_TAGS = {"html", "head", "meta", "title", "link", "body", "header", "nav", "a", "main", "footer", "script",
                "h1", "h2", "h3", "h4", "p", "span", "small", "strong", "em", "q", "code", "pre", "ul", "li", "dl",
                "dt", "dd", "div", "section", "article", "details", "summary", "figure", "figcaption", "label",
                "select", "option", "table", "thead", "tbody", "tr", "th", "td", "button", "svg", "rect", "line",
                "text"}


def tables_of(path: Path):
    parser = Tables()
    parser.feed(path.read_text())
    return parser.tables


def fmt(acc: dict, average: str = "micro") -> str:
    ci = acc[f"{average}_ci95"]
    return f"{acc[average]:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


BOARD_HEADER = ["Evaluator", "Type", "References", "acc w/ tie", "acc w/o tie", "decisive acc", "macro w/ tie",
                "tie rate", "invalid rate", "K", "N", "Split"]


def sortkey(value) -> str:
    return "" if value is None else repr(value)


def test_overview_tables_show_each_admitted_runs_metrics(site, results_tree):
    """Each value under its own header, and each numeric cell sorting (data-sort) by the value it shows."""
    collection = collect(results_tree[0])
    boards = [t for t in tables_of(site / "index.html") if "board" in t["class"]]
    assert len(boards) == len(collection.datasets()) == 3
    assert all(t["rows"][0]["cells"] == BOARD_HEADER for t in boards)
    by_page = {row["href"]: row for t in boards for row in t["rows"][1:]}
    assert len(by_page) == len(collection.entries) == 10
    data = json.loads((site / "data" / "leaderboard.json").read_text())
    for run in data["runs"]:
        entry = next(e for e in collection.entries if e.relpath == run["relpath"])
        # a best value also says so in text (for screen readers): " (best)" after it
        cells = [cell.removesuffix(" (best)") for cell in by_page[run["page"]]["cells"]]
        m = entry.results["metrics"]
        assert cells[3] == fmt(m["acc_w_tie"]) and cells[4] == fmt(m["acc_wo_tie"])
        assert cells[5] == fmt(m["decisive_acc"]) and cells[6] == fmt(m["acc_w_tie"], "macro")
        assert cells[7] == f"{100 * m['predicted_tie_rate']:.1f}%" and cells[8] == f"{100 * m['invalid_rate']:.1f}%"
        assert cells[10] == str(m["n"]) and cells[11] == entry.results["split"]["fingerprint"]
        assert cells[9] == str(entry.results["split"]["reference_size"])
        sorts = by_page[run["page"]]["sorts"]
        assert sorts[3:11] == [sortkey(m[a]["micro"]) for a in ("acc_w_tie", "acc_wo_tie", "decisive_acc")] + [
            sortkey(m["acc_w_tie"]["macro"]), sortkey(m["predicted_tie_rate"]), sortkey(m["invalid_rate"]),
            sortkey(entry.results["split"]["reference_size"]), str(m["n"])]
        assert by_page[run["page"]]["attrs"]["data-refs"] == ("with" if entry.uses_references else "free")


def test_overview_rows_start_sorted_with_best_marked(site):
    html = (site / "index.html").read_text()
    for table in (t for t in tables_of(site / "index.html") if "board" in t["class"]):
        values = [float(r["cells"][3].split()[0]) for r in table["rows"][1:]]
        assert values == sorted(values, reverse=True)
    assert html.count('class="num best"') >= 3  # at least one best cell per dataset


def test_tampered_file_is_rejected_and_listed_with_its_reason(site):
    html = (site / "index.html").read_text()
    section = html[html.index("Rejected results files"):]
    assert "bad/tampered.json" in section and "recomputed" in section
    data = json.loads((site / "data" / "leaderboard.json").read_text())
    assert [r["relpath"] for r in data["rejected"]] == ["bad/tampered.json"]
    assert all(run["relpath"] != "bad/tampered.json" for run in data["runs"])
    assert not any("tampered" in p.name for p in (site / "evaluators").iterdir())


def test_evaluator_page_shows_config_provenance_distribution_and_samples(site, results_tree):
    results = json.loads(results_tree[1]["reasoner"].read_text())
    run = next(r for r in json.loads((site / "data" / "leaderboard.json").read_text())["runs"]
               if r["evaluator"] == "reasoner" and r["variant"] is None)
    page = site / run["page"]
    html = page.read_text()
    facts = {r["cells"][0]: r["cells"][1:] for t in tables_of(page) for r in t["rows"]}
    for name, shown in (("acc_w_tie", "acc w/ tie"), ("acc_wo_tie", "acc w/o tie"), ("decisive_acc", "decisive acc")):
        acc = results["metrics"][name]
        assert facts[shown] == [f"{acc['micro']:.1f}", "[{:.1f}, {:.1f}]".format(*acc["micro_ci95"]),
                                f"{acc['macro']:.1f}", "[{:.1f}, {:.1f}]".format(*acc["macro_ci95"])]
    assert facts["predicted tie rate"] == [f"{100 * results['metrics']['predicted_tie_rate']:.1f}%"]
    assert facts["invalid rate"] == [f"{100 * results['metrics']['invalid_rate']:.1f}%"]
    assert facts["fingerprint"] == [results["split"]["fingerprint"]]
    assert facts["dimensions"] == ["true"] and facts["config hash"] == [results["evaluator"]["config_hash"]]
    assert facts["created_at"] == [results["provenance"]["created_at"]]
    assert html.count("<rect ") == 10 and f"over {results['metrics']['users']} users" in html  # histogram
    per_user = next(t for t in tables_of(page) if "sortable" in t["class"])
    assert [r["cells"] for r in per_user["rows"][1:]] == [
        [u["user_id"], str(u["n"]), *(f"{u[a]:.1f}" for a in ("acc_w_tie", "acc_wo_tie", "decisive_acc"))]
        for u in results["metrics"]["per_user"]]
    assert "A fits the user&#39;s liking for warm tones (case 0)." in html
    assert html.count('class="dimension-name"') == 3 * 20


def test_sample_predictions_prefer_rationales_and_rotate_users():
    rows = [{"sample_id": f"s{i}", "user_id": f"u{i % 3}", "gold": "A",
             "prediction": {"label": "A", **({"rationale": "why"} if i >= 6 else {})}} for i in range(12)]
    rows[1]["prediction"] = {"label": "INVALID", "error": "timeout"}
    picked = sample_predictions(digest_rows(rows, "reasoning", samples=5).samples)
    assert [s["sample_id"] for s in picked] == ["s6", "s7", "s8", "s9", "s10"]
    assert [s["credit"] for s in picked] == [1.0] * 5
    assert [s["sample_id"] for s in sample_predictions(digest_rows(rows, "reasoning", samples=8).samples)][6:] == ["s1", "s0"]  # errors, then the rest


def test_dataset_and_methodology_pages(site):
    ds = (site / "datasets" / "synth.html").read_text()
    assert "synthetic dataset synth" in ds and "CC0-1.0" in ds and "fp-synth-4-0" in ds
    demo = (site / "datasets" / "demo.html").read_text()
    assert "PartiPrompts" in demo  # the demo adapter's license line, carried by its results
    # the toy sweep's K = 1, 2, 3 runs are three splits, each listed with its K and its run
    runs = json.loads((site / "data" / "leaderboard.json").read_text())["runs"]
    (splits,) = [t for t in tables_of(site / "datasets" / "toy.html") if "splits" in t["class"]]
    assert sorted((r["cells"][0], r["cells"][2], r["cells"][7]) for r in splits["rows"][1:]) == sorted(
        (r["fingerprint"], str(r["reference_size"]), r["label"]) for r in runs if r["dataset"] == "toy")
    assert len(splits["rows"]) - 1 == 3
    method = (site / "methodology.html").read_text()
    for term in ("acc w/ tie", "acc w/o tie", "decisive acc", "cluster bootstrap", "INVALID", "pigbench validate"):
        assert term in method
    # tau: a run may set it (the runner's and score's --tie-threshold) or calibrate it; the page must say both
    assert "--tie-threshold" in method and "--calibrate-tie-threshold" in method
    assert "one INVALID answer uses the other" in method  # protocol.combine_swapped
    # docs/protocol.md: a non-finite score (not a "missing" one) is INVALID; two INVALID swap answers stay
    # INVALID; an accuracy that fewer than two users contribute to has no CI
    assert "A NaN or infinite score, or an image that fails, is INVALID" in method
    assert "one INVALID answer uses the other, two give INVALID" in method
    assert "none (left blank) when fewer than two users contribute" in method


def test_every_text_from_results_is_escaped(site):
    pages = list(site.rglob("*.html"))
    assert len(pages) == 1 + 10 + 3 + 1
    for page in pages:
        tags = Tags()
        tags.feed(page.read_text())
        assert not any(name.startswith("on") for _, attrs in tags.seen for name, _ in attrs), page.name
        assert {t for t, _ in tags.seen} <= ALLOWED_TAGS, page.name
        scripts = [dict(attrs) for tag, attrs in tags.seen if tag == "script"]
        assert all(s.get("src", "").endswith("static/leaderboard.js") or s.get("type") == "application/json"
                   for s in scripts), page.name
    evil = next((site / "evaluators").glob("synth-evil*.html")).read_text()
    assert "evil&lt;script&gt;window.__xss=1&lt;/script&gt;&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in evil
    assert "Because &lt;script&gt;" in evil and "Mood &lt;script&gt;" in evil and "a cat &lt;script&gt;" in evil


def test_embedded_json_cannot_close_its_script_element(site):
    evil = next((site / "evaluators").glob("synth-evil*.html")).read_text()
    block = re.search(r'<script type="application/json" id="pigbench-data">(.*?)</script>', evil, re.S).group(1)
    assert "<" not in block and ">" not in block and "&" not in block
    assert json.loads(block)["evaluator"] == "evil" + XSS
    assert str(script_json({"x": "</script>&\u2028"})) == '{"x": "\\u003c/script\\u003e\\u0026\\u2028"}'


def test_site_is_self_contained_with_relative_links(site):
    for page in site.rglob("*.html"):
        html = page.read_text()
        for link in re.findall(r'(?:href|src)="([^"]*)"', html):
            assert not re.match(r"[a-z]+:|//", link), f"{page.name} links outside the site: {link}"
            target = (page.parent / link.split("#")[0]).resolve()
            assert target.is_file() and site.resolve() in target.parents, f"{page.name}: broken link {link}"


def test_builder_never_imports_plugin_code(results_tree, tmp_path):
    code = (
        "import sys; from pigbench.leaderboard import build_site; "
        f"build_site({str(results_tree[0])!r}, {str(tmp_path / 'site')!r}); "
        "print(sorted(m for m in sys.modules if m.startswith(('pigbench.evaluators.', 'pigbench.adapters.', 'toy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "site" / "index.html").is_file()


def test_cli_builds_the_site(results_tree, tmp_path, capsys):
    out = tmp_path / "site"
    assert cli_main(["leaderboard", "build", "--results", str(results_tree[0]), "--out", str(out), "--samples", "3"]) == 0
    printed = capsys.readouterr().out
    assert "10 results files admitted, 1 rejected" in printed and "bad/tampered.json" in printed
    page = next((out / "evaluators").glob("synth-reasoner-*.html")).read_text()
    assert page.count('<article class="sample">') == 3


def test_cli_with_nothing_admitted_exits_1_with_one_error_line(tmp_path, capsys):
    """As ``pigbench report``: nothing to show is an error; the site still lists the rejected file."""
    (tmp_path / "results").mkdir()
    out = ["--out", str(tmp_path / "site")]
    assert cli_main(["leaderboard", "build", "--results", str(tmp_path / "results"), *out]) == 1
    assert capsys.readouterr().err == (f"error: no results files (*.json) under {tmp_path / 'results'}; nothing to "
                                       "show (run `pigbench run` first)\n")
    (tmp_path / "results" / "broken.json").write_text("{")
    assert cli_main(["leaderboard", "build", "--results", str(tmp_path / "results"), *out]) == 1
    printed = capsys.readouterr()
    assert "rejected broken.json: " in printed.out and "broken.json" in (tmp_path / "site" / "index.html").read_text()
    assert printed.err == (f"error: no results file under {tmp_path / 'results'} passed validation (1 rejected, "
                           "reasons above); nothing to show\n")


def test_rebuild_removes_pages_of_runs_that_are_gone(tmp_path):
    from pigbench.synthetic_results import make_results

    results = tmp_path / "results"
    first = make_results(results, "alpha", users=2, per_user=3)
    make_results(results, "beta", users=2, per_user=3)
    build_site(results, tmp_path / "site")
    assert len(list((tmp_path / "site" / "evaluators").iterdir())) == 2
    first.unlink()
    build_site(results, tmp_path / "site")
    pages = [p.name for p in (tmp_path / "site" / "evaluators").iterdir()]
    assert len(pages) == 1 and pages[0].startswith("synth-beta-")
    assert "alpha" not in (tmp_path / "site" / "index.html").read_text()


def test_building_into_a_folder_in_use_deletes_only_files_the_site_wrote(tmp_path):
    from pigbench.synthetic_results import make_results

    make_results(tmp_path / "results", "alpha", users=2, per_user=3)
    out = tmp_path / "project"  # e.g. --out . in a project with a data/ folder
    for rel in ("data/thesis.csv", "static/logo.svg", "evaluators/model.py", "datasets/raw/a.txt"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(rel)
    build_site(tmp_path / "results", out)
    build_site(tmp_path / "results", out)
    for rel in ("data/thesis.csv", "static/logo.svg", "evaluators/model.py", "datasets/raw/a.txt"):
        assert (out / rel).read_text() == rel
    assert (out / "data" / "leaderboard.json").exists() and len(list((out / "evaluators").glob("*.html"))) == 1


def test_unusual_but_valid_predictions_still_render(tmp_path):
    from pigbench.results import load_results, validate_results, write_results
    from pigbench.synthetic_results import make_results

    path = make_results(tmp_path / "results", "odd", users=2, per_user=2)
    results, rows = load_results(path)
    rows = list(rows)
    rows[0]["prediction"]["dimensions"] = [{"score_a": 3}, "not an object", {"name": "Only a name"}]
    rows[1]["prediction"]["raw_text"] = "x" * 10_000
    write_results(path, results, rows)
    assert validate_results(path) == []
    build_site(tmp_path / "results", tmp_path / "site")
    html = next((tmp_path / "site" / "evaluators").glob("*.html")).read_text()
    assert "Only a name" in html and html.count('class="dimension-name"') == 2
    assert "(6000 more characters)" in html


def replace_predictions(path: Path, data: bytes) -> None:
    """Give a results file other predictions bytes and record their hash, so that only their content is at fault."""
    path.with_name(path.stem + ".predictions.jsonl").write_bytes(data)
    results = json.loads(path.read_text())
    results["predictions"]["sha256"] = hashlib.sha256(data).hexdigest()
    path.write_text(json.dumps(results))


def test_non_utf8_and_mistyped_files_are_rejected_with_one_line_and_the_rest_builds(tmp_path, capsys):
    from pigbench.synthetic_results import make_results

    results = tmp_path / "results"
    make_results(results, "good", users=2, per_user=3)
    (results / "synth" / "binary.json").write_bytes(b"\xff{")
    latin = make_results(results, "latin", users=2, per_user=3)
    data = latin.with_name("latin.predictions.jsonl").read_bytes().replace(b"hydrant", b"hydrant caf\xe9", 1)
    replace_predictions(latin, data)
    mistyped = make_results(results, "mistyped", users=2, per_user=3)
    rows = [json.loads(line) for line in mistyped.with_name("mistyped.predictions.jsonl").read_text().splitlines()]
    rows[1]["prediction"]["score_a"] = "x"
    replace_predictions(mistyped, "".join(json.dumps(r) + "\n" for r in rows).encode())

    assert cli_main(["leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "site")]) == 0
    printed = capsys.readouterr()
    column = data.index(b"\xe9") + 1
    assert "1 results files admitted, 3 rejected" in printed.out and "Traceback" not in printed.err
    assert "rejected synth/binary.json: cannot read results JSON: line 1: byte 1 (0xff) is not UTF-8\n" in printed.out
    assert (f"rejected synth/latin.json: latin.predictions.jsonl: line 1: byte {column} (0xe9) is not UTF-8\n"
            in printed.out)
    assert ('rejected synth/mistyped.json: mistyped.predictions.jsonl: line 2: malformed prediction row '
            '(prediction.score_a must be a number or null, not "x")\n') in printed.out
    pages = list((tmp_path / "site" / "evaluators").iterdir())
    assert len(pages) == 1 and pages[0].name.startswith("synth-good-")

    files = sorted(str(p) for p in (results / "synth").glob("*.json"))
    assert cli_main(["validate", *files]) == 1
    *lines, summary = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines if not line.startswith("  ")] == ["INVALID", "ok", "INVALID", "INVALID"]
    assert len(lines) == 4 + 3  # one problem line under each rejected file
    assert summary == "4 results file(s): 1 ok, 3 invalid"


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["prediction"].update(score_b=True), "prediction.score_b must be a number or null, not true"),
    (lambda r: r["prediction"].update(rationale=5), "prediction.rationale must be a string or null, not 5"),
    (lambda r: r["prediction"].update(dimensions={"name": "x"}),
     'prediction.dimensions must be a list, not {"name": "x"}'),
    (lambda r: r["prediction"].update(extra=None), "prediction.extra must be an object, not null"),
    (lambda r: r["prediction"].update(extra={"swap": True}),
     "prediction.extra.swap must be an object with 'inconsistent', not true"),
    (lambda r: r["prediction"].update(label="left"), 'prediction.label must be one of A, B, TIE, INVALID, not "left"'),
    (lambda r: r.update(gold="INVALID"), 'gold must be one of A, B, TIE, not "INVALID"'),
    (lambda r: r.update(user_id=["u", "x" * 50]), 'user_id must be a string, not ["u", "' + "x" * 30 + "..."),
    (lambda r: r.pop("prediction"), "prediction must be an object, not null"),
], ids=["bool score", "rationale", "dimensions", "null extra", "swap", "label", "gold", "long value", "no prediction"])
def test_mistyped_prediction_rows_are_named_by_line_and_field(tmp_path, edit, message):
    from pigbench.results import validate_results
    from pigbench.synthetic_results import make_results

    path = make_results(tmp_path / "results", "odd", users=2, per_user=2)
    rows = [json.loads(line) for line in path.with_name("odd.predictions.jsonl").read_text().splitlines()]
    edit(rows[2])
    replace_predictions(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
    (problem,) = validate_results(path)
    assert problem.endswith(f"odd.predictions.jsonl: line 3: malformed prediction row ({message})"), problem


@pytest.mark.parametrize("edit, message", [
    (lambda b: b.pop("seed"), "schema violation at metrics/bootstrap: 'seed' is a required property"),
    (lambda b: b.update(resamples="50"), "schema violation at metrics/bootstrap/resamples: '50' is not of type 'integer'"),
    (lambda b: b.update(seed=-1), "schema violation at metrics/bootstrap/seed: -1 is less than the minimum of 0"),
    (lambda b: b.update(resamples=50.0), None),  # JSON's spelling of an integer: valid
], ids=["no seed", "string", "negative", "integral float"])
def test_a_malformed_bootstrap_record_is_rejected_not_a_crash(tmp_path, edit, message):
    from pigbench.results import validate_results
    from pigbench.synthetic_results import make_results

    path = make_results(tmp_path / "results", "boot", users=2, per_user=2)
    results = json.loads(path.read_text())
    edit(results["metrics"]["bootstrap"])
    path.write_text(json.dumps(results))
    assert validate_results(path) == ([] if message is None else [f"{path}: {message}"])


def test_failures_without_their_reasons_are_rejected_not_a_crash_of_the_evaluator_page(tmp_path, capsys):
    from pigbench.synthetic_results import make_results

    results = tmp_path / "results"
    make_results(results, "good", users=2, per_user=2)
    path = make_results(results, "counted", users=2, per_user=2)
    data = json.loads(path.read_text())
    data["failures"] = {"count": 1}
    path.write_text(json.dumps(data))
    assert cli_main(["leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "site")]) == 0
    printed = capsys.readouterr()
    assert "1 results files admitted, 1 rejected" in printed.out and "Traceback" not in printed.err
    assert "rejected synth/counted.json: schema violation at failures: 'reasons' is a required property" in printed.out


def test_runs_on_another_split_are_listed_after_the_main_split_and_never_marked_best(tmp_path):
    from pigbench.synthetic_results import make_results

    results = tmp_path / "results"
    make_results(results, "alpha", accuracy=0.6)
    make_results(results, "beta", accuracy=0.7)
    make_results(results, "gamma", variant="seed1", seed=1, accuracy=0.95)  # better, but on another split
    build_site(results, tmp_path / "site")
    (table,) = [t for t in tables_of(tmp_path / "site" / "index.html") if "board" in t["class"]]
    names = [r["cells"][0].split()[0] for r in table["rows"][1:]]
    assert names == ["beta", "alpha", "gamma"] and "other split" in table["rows"][3]["cells"][0]
    html = (tmp_path / "site" / "index.html").read_text()
    gamma_row = html[html.index(">gamma</a>"):].split("</tr>")[0]
    assert "best" not in gamma_row and 'class="num best"' in html and "fp-synth-4-0" in html
    first_accuracy = {name: re.findall(r'<td class="(num[^"]*)"', html[html.index(f">{name}</a>"):])[0]
                      for name in ("beta", "alpha")}
    assert first_accuracy == {"beta": "num best", "alpha": "num"}  # beta's acc w/ tie is the higher (row order)


def test_best_marks_go_to_every_accuracys_top_displayed_value_on_the_main_split():
    """70.04 and 69.96 both print 70.0, so both are best; each accuracy is ranked on its own; a
    missing value and a run on another split are never marked."""
    from pigbench.leaderboard import _best

    def row(w, wo, d, other_split=False):
        return {"other_split": other_split, "metrics": {"acc_w_tie": {"micro": w}, "acc_wo_tie": {"micro": wo},
                                                        "decisive_acc": {"micro": d}}}

    rows = [row(70.04, 60.0, None), row(69.96, 61.0, 50.0), row(69.0, 61.04, 49.96), row(99.0, 99.0, 99.0, True)]
    _best(rows)
    assert [r["best"] for r in rows] == [{"acc_w_tie"}, {"acc_w_tie", "acc_wo_tie", "decisive_acc"},
                                         {"acc_wo_tie", "decisive_acc"}, set()]


def test_the_main_split_is_the_one_a_run_without_variant_uses_even_when_more_runs_use_another(tmp_path):
    from pigbench.synthetic_results import make_results

    results = tmp_path / "results"
    make_results(results, "alpha", accuracy=0.6)
    make_results(results, "beta", variant="seed1", seed=1, accuracy=0.7)
    make_results(results, "gamma", variant="seed1", seed=1, accuracy=0.8)
    build_site(results, tmp_path / "site")
    (table,) = [t for t in tables_of(tmp_path / "site" / "index.html") if "board" in t["class"]]
    assert [(r["cells"][0].split()[0], "other split" in r["cells"][0]) for r in table["rows"][1:]] == [
        ("alpha", False), ("gamma", True), ("beta", True)]
    assert "fingerprint <code>fp-synth-4-0</code>" in (tmp_path / "site" / "index.html").read_text()


def test_per_user_distribution_shows_the_quartiles_and_histogram_of_acc_w_tie(tmp_path):
    """Users right on 0, 1, 2, 3, 4 of their 4 targets (gold A, predicted A or B): acc w/ tie 0, 25,
    50, 75, 100 and acc w/o tie the same; a predicted TIE on a fifth target of every user gives
    acc w/ tie 10, 30, 50, 70, 90 against acc w/o tie 0, 20, 40, 60, 80, so the two cannot pass for each other."""
    from pigbench.metrics import compute_metrics
    from pigbench.results import judged_from_rows, load_results, write_results
    from pigbench.synthetic_results import make_results

    path = make_results(tmp_path / "results", "spread", kind="reasoning", users=5, per_user=5)
    results, rows = load_results(path)
    rows = list(rows)
    for row in rows:
        u, t = (int(x[1:]) for x in row["sample_id"].split("/"))
        row["gold"] = "A"
        row["prediction"]["label"] = "TIE" if t == 4 else "A" if t < u else "B"
    results["metrics"] = compute_metrics(judged_from_rows(rows), n_bootstrap=50, seed=0)
    write_results(path, results, rows)
    build_site(tmp_path / "results", tmp_path / "site")
    html = next((tmp_path / "site" / "evaluators").glob("*.html")).read_text()
    assert "Per-user acc w/ tie: min 10.0, quartiles 30.0 /\n  50.0 / 70.0, max 90.0." in html
    bars = re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="[\d.]+" height="([\d.]+)"[^>]*><title>(\d+-\d+)%: '
                      r"(\d+) users</title>", html)
    # bar i spans [10i, 10i + 10) at x = 44 + 46.4 i + 1; one user is the peak, 178 px tall
    assert bars == [(f"{round(45 + 46.4 * i, 1)}", "178.0" if i % 2 else "0.0", f"{10 * i}-{10 * i + 10}",
                     str(i % 2)) for i in range(10)]  # 10-20, 30-40, 50-60, 70-80, 90-100



def test_sample_scores_are_shown_to_six_significant_digits_with_the_stored_value_as_title(site):
    """A stored score such as -0.7633373814990416 reads -0.763337; hovering shows every digit."""
    assert (_score(-0.7633373814990416), _score(21.25), _score(7), _score(None), _score(True)) == (
        "-0.763337", "21.25", "7", "n/a", "n/a")
    shown = [m.groups() for page in (site / "evaluators").glob("*.html")
             for m in re.finditer(r'title="([^"]*)">([^<]*)</', page.read_text())
             if re.fullmatch(r"-?[0-9.e+-]+", m.group(1))]
    assert len(shown) > 10  # sample scores and dimension scores
    assert all(text == f"{float(title):.6g}" for title, text in shown), shown[:5]
