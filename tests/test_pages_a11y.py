"""Accessibility and HTML validity of every generated page: the leaderboard site, the report and the
build pages (review, annotation, admin), checked with :mod:`page_a11y` (html.parser only, no browser).

The site and report are built from the shipped ``results/`` and from the shared synthetic tree
(``conftest.results_tree``: rationales, dimensions, several datasets, XSS payloads, a tampered file).
"""

import re
import shutil
import threading
from pathlib import Path

import pytest

from build_fixtures import Browserless, workspace_with_sets, wsgi_call
from page_a11y import problems
from pigbench.build.annotate.app import make_annotate_app
from pigbench.build.annotate.store import AnnotationStore
from pigbench.build.review import make_review_app
from pigbench.build.sets import kept_sets
from pigbench.build.webapp import make_local_server
from pigbench.leaderboard import build_site
from pigbench.report.document import build_report

SHIPPED_RESULTS = Path(__file__).resolve().parent.parent / "results"


@pytest.mark.parametrize("page, found", [
    ('<html><body><h1>a</h1></body></html>', "<html> has no lang"),
    ('<html lang="en"><body><h1>a</h1><h1>b</h1></body></html>', "2 <h1> elements"),
    ('<html lang="en"><body><h1>a</h1><h3>b</h3></body></html>', "<h3> after <h1> skips a level"),
    ('<html lang="en"><body><h1>a</h1><img src="figures/x.png" alt="x.png"></body></html>', "does not say what"),
    ('<html lang="en"><body><h1>a</h1><img src="x.png"></body></html>', "alt None"),
    ('<html lang="en"><body><h1>a</h1><table><tr><th>h</th></tr></table></body></html>', "<th> without scope"),
    ('<html lang="en"><body><h1>a</h1><table><tr><td>1</td></tr></table></body></html>', "table without a caption"),
    ('<html lang="en"><body><h1>a</h1><input type="text" id="q"></body></html>', "form control without a label"),
    ('<html lang="en"><body><h1>a</h1><a href="x"></a><button> </button></body></html>', "a without discernible text"),
    ('<html lang="en"><body><h1 id="t">a</h1><p id="t">b</p></body></html>', "duplicate id 't'"),
    ('<html lang="en"><body><h1>a</h1><table aria-labelledby="nope"><tr><td>1</td></tr></table></body></html>',
     "aria-labelledby 'nope' names no element"),
    ('<html lang="en"><body><h1>a</h1><div aria-label="zone"></div></body></html>', "aria-label on an element without a role"),
    ('<html lang="en"><body><h1>a</h1><div><span></div></body></html>', "<span>: not closed"),
    ('<html lang="en"><body><h1>a</h1></div></body></html>', "stray </div>"),
])
def test_the_checker_finds_each_kind_of_problem(page, found):
    assert any(found in line for line in problems(page)), problems(page)


def test_the_checker_accepts_a_clean_page():
    page = ('<!DOCTYPE html><html lang="en"><head><title>t</title></head><body><h1>a</h1><h2 id="n">b</h2>'
            '<table aria-labelledby="n"><thead><tr><th scope="col">x</th></tr></thead><tbody><tr><td>1</td></tr>'
            '</tbody></table><label for="q">query</label><input id="q"><img src="p.png" alt="a bar chart of x">'
            '<a href="y">y</a><p>open<li>implicit end tags</body></html>')
    assert problems(page) == []


def pages_with_problems(root: Path) -> dict[str, list[str]]:
    found = {str(p.relative_to(root)): problems(p.read_text()) for p in sorted(root.rglob("*.html"))}
    return {page: lines for page, lines in found.items() if lines}


@pytest.fixture(scope="module")
def synthetic_site(results_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    build_site(results_tree[0], out)
    return out


@pytest.fixture(scope="module")
def shipped_site(tmp_path_factory):
    out = tmp_path_factory.mktemp("shipped_site")
    build_site(SHIPPED_RESULTS, out)
    return out


@pytest.mark.parametrize("site", ["synthetic_site", "shipped_site"])
def test_every_leaderboard_page_passes_the_checker(site, request):
    root = request.getfixturevalue(site)
    assert len(list(root.rglob("*.html"))) >= 4
    assert pages_with_problems(root) == {}


def test_best_values_on_the_overview_say_best_in_text_not_only_in_bold(synthetic_site):
    html = (synthetic_site / "index.html").read_text()
    cells = re.findall(r'<td class="num best"[^>]*>(.*?)</td>', html, re.S)
    assert len(cells) >= 3
    assert all(cell.endswith('<span class="visually-hidden"> (best)</span>') for cell in cells)
    assert html.count("(best)") == len(cells)  # no other cell says it
    assert ".visually-hidden" in (synthetic_site / "static" / "style.css").read_text()


def test_the_filter_is_hidden_until_the_script_can_run_it(synthetic_site):
    """Without JavaScript a filter control would do nothing: the page hides it and the script shows it."""
    html = (synthetic_site / "index.html").read_text()
    assert re.search(r'<div class="controls" hidden>\s*<label for="filter">', html)
    script = (synthetic_site / "static" / "leaderboard.js").read_text()
    assert 'select.closest(".controls").hidden = false' in script
    assert ".controls[hidden] { display: none; }" in (synthetic_site / "static" / "style.css").read_text()


def test_sort_buttons_are_disabled_until_the_script_can_sort(synthetic_site):
    """Without JavaScript a sort button would do nothing: the pages ship them disabled (no arrow, not
    focusable) and the script enables the ones it wires."""
    for page in ("index.html", "evaluators"):
        for html in ([(synthetic_site / page).read_text()] if page.endswith(".html")
                     else [f.read_text() for f in sorted((synthetic_site / page).glob("*.html"))][:1]):
            buttons = re.findall(r"<th data-sort-type[^>]*><button ([^>]*)>", html)
            assert buttons and all(b == 'type="button" disabled' for b in buttons)
    script = (synthetic_site / "static" / "leaderboard.js").read_text()
    assert "button.disabled = false;" in script
    assert "th button:disabled::after { content: none; }" in (synthetic_site / "static" / "style.css").read_text()


@pytest.fixture(scope="module")
def synthetic_report(results_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    build_report(results_tree[0], out)
    return out


@pytest.fixture(scope="module")
def shipped_report(tmp_path_factory):
    work = tmp_path_factory.mktemp("shipped_report")
    shutil.copytree(SHIPPED_RESULTS, work / "results")
    build_report(work / "results", work / "report")
    return work / "report"


@pytest.mark.parametrize("report", ["synthetic_report", "shipped_report"])
def test_every_report_page_passes_the_checker(report, request):
    root = request.getfixturevalue(report)
    assert (root / "report.html").is_file() and (root / "main_table.html").is_file()
    assert pages_with_problems(root) == {}


def test_report_figures_have_alt_text_saying_what_they_show(synthetic_report):
    html = (synthetic_report / "report.html").read_text()
    alts = dict(re.findall(r'<img src="figures/([^"]+)" alt="([^"]+)"', html))
    assert set(alts) == {"accuracy_vs_reference_size_toy.png", "similarity_metrics.png", "dimension_wordcloud.png",
                         "dimension_tsne.png"}
    assert alts["accuracy_vs_reference_size_toy.png"].startswith("Line charts of acc w/ tie and acc w/o tie (%) "
                                                                  "against reference size K on toy:")
    assert "95% CI" in alts["similarity_metrics.png"] and "Word cloud" in alts["dimension_wordcloud.png"]
    markdown = (synthetic_report / "report.md").read_text()
    assert "![Word cloud of the evaluation dimensions" in markdown and "![dimension_wordcloud.png]" not in markdown


def test_report_tables_scope_every_header_and_say_best_in_text(synthetic_report):
    html = (synthetic_report / "main_table.html").read_text()
    assert "<th>" not in html and 'scope="colgroup"' in html and 'scope="col"' in html and 'scope="row"' in html
    best = re.findall(r'<td class="num best">(.*?)</td>', html)
    assert best and all(cell.startswith("<strong>") and cell.endswith("(best)</span>") for cell in best)


def test_review_page_passes_the_checker(tmp_path):
    ws = workspace_with_sets(tmp_path / "ws", 2)
    status, _, page = wsgi_call(make_review_app(ws), "GET", "/")
    html = page.decode()
    assert status == 200 and html.count("<img ") == 8
    assert problems(html) == []
    assert re.search(r'alt="variant 1 of set [^"]+, made for: [^"]+"', html)


@pytest.fixture
def annotation_server(tmp_path):
    ws = workspace_with_sets(tmp_path / "ws", 2)
    store = AnnotationStore(ws.annotate_db)
    token = store.initialize(1, 1, seed=0, open_signup=False)
    store.sync_sets(kept_sets(ws))
    invite = dict(store.create_invites(1))["annotator001"]
    server = make_local_server(make_annotate_app(store, ws.root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", token, invite
    server.shutdown()
    server.server_close()


def test_annotation_and_admin_pages_pass_the_checker(annotation_server):
    base, token, invite = annotation_server
    annotator, admin = Browserless(base), Browserless(base)
    pages = {"sign-in": annotator.request("GET", "/")[1], "admin sign-in": admin.request("GET", "/admin")[1]}
    pages["task"] = annotator.request("POST", "/signin", form={"credential": invite})[1]
    admin.request("POST", "/admin/signin", form={"token": token})
    pages["admin"] = admin.request("GET", "/admin")[1]
    found = {name: problems(page.decode()) for name, page in pages.items()}
    assert b'id="tier-1" role="group" aria-label="rank 1"' in pages["task"]
    assert b'<progress value="0" max="1" aria-label="annotator001: 0 of 1 sets ranked">' in pages["admin"]
    assert {name: lines for name, lines in found.items() if lines} == {}
