"""The built leaderboard in headless Chromium, opened from disk (file://): sorting, filtering,
navigation to an evaluator page, and XSS payloads shown as text without executing.

Needs Playwright and Debian's ``chromium`` (the ``chromium`` fixture skips with the reason when
either is missing). Saves ``test-artifacts/leaderboard.png`` and ``test-artifacts/evaluator.png``.
"""

from pathlib import Path

import pytest

from pigbench.leaderboard import build_site
from synthetic_results import XSS

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(results_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("browser_site")
    build_site(results_tree[0], out)
    return out


@pytest.fixture
def page(chromium):
    """A fresh page that records dialogs (alert, confirm, ...), page errors and network requests."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    pg = context.new_page()
    pg.dialogs, pg.errors, pg.requests = [], [], []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: pg.requests.append(r.url))
    yield pg
    context.close()


def column(table, index):
    """Texts of column ``index`` in the visible body rows of ``table``."""
    return [row.locator("td").nth(index).inner_text() for row in table.locator("tbody tr:visible").all()]


def number(text):
    return float(text.split()[0])


def test_sort_filter_and_open_evaluator_page_with_xss_payloads(site, page):
    page.goto((site / "index.html").as_uri())
    assert page.locator("#filter-count").inner_text() == "10 of 10 runs shown"  # the script ran under the CSP
    synth = page.locator("section.dataset", has=page.get_by_role("link", name="synth", exact=True)).locator("table")

    # sort by acc w/o tie: first click high-to-low, second click low-to-high
    header = synth.get_by_role("button", name="acc w/o tie", exact=True)
    header.click()
    values = [number(t) for t in column(synth, 4)]
    assert values == sorted(values, reverse=True) and len(values) == 5
    header.click()
    assert [number(t) for t in column(synth, 4)] == sorted(values)
    synth.get_by_role("button", name="Evaluator", exact=True).click()
    names = column(synth, 0)
    assert names == sorted(names, key=str.lower)

    # the type filter hides the other rows in every table
    page.select_option("#filter", "reference-free")
    assert set(column(synth, 2)) == {"reference-free"}
    assert page.locator("#filter-count").inner_text() == "5 of 10 runs shown"
    page.select_option("#filter", "reasoning")
    assert set(column(synth, 1)) == {"reasoning"} and len(column(synth, 1)) == 3
    page.select_option("#filter", "all")

    # the planted name is shown as text in the table, and its link leads to its page
    evil = page.get_by_role("link", name="evil" + XSS, exact=True)
    assert evil.inner_text() == "evil" + XSS
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)
    evil.click()
    page.wait_for_load_state()
    assert page.url.startswith("file://") and "/evaluators/" in page.url
    assert page.locator("h1 .evaluator-name").inner_text() == "evil" + XSS
    rationale = page.locator(".rationale p").first.inner_text()
    assert rationale == "Because " + XSS
    assert ("Mood " + XSS) in page.locator(".dimension-name").all_inner_texts()
    assert page.locator(".prompt q").first.inner_text() == "a cat " + XSS
    page.screenshot(path=str(ARTIFACTS / "evaluator.png"))

    # nothing from the payloads ran: no flag, no dialog, no script error, no injected element
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("main img").count() == 0 and page.locator("main script").count() == 0
    assert page.dialogs == [] and page.errors == []
    assert all(url.startswith("file://") for url in page.requests)  # nothing fetched from a network


def test_dataset_and_methodology_pages_open_from_disk(site, page):
    page.goto((site / "index.html").as_uri())
    page.get_by_role("link", name="Methodology", exact=True).click()
    assert page.locator("h1").inner_text() == "Methodology"
    page.get_by_role("link", name="demo", exact=True).first.click()
    assert page.locator("h1").inner_text() == "demo"
    assert page.locator("table.splits tbody tr").count() == 1
    assert page.dialogs == [] and page.errors == []


def test_numeric_columns_sort_as_numbers_with_values_that_are_not_numbers_last(tmp_path, page):
    """acc w/ tie 100.0 sorts above two-digit values (as text "100.0" would sort below them), and
    the decisive acc of a run that always answers TIE (n/a) stays last whichever way it is sorted."""
    from pigbench.metrics import compute_metrics
    from pigbench.results import judged_from_rows, load_results, write_results
    from pigbench.synthetic_results import make_results

    results = tmp_path / "results"
    for name, accuracy in (("perfect", 1.0), ("good", 0.9), ("coin", 0.5)):
        make_results(results, name, accuracy=accuracy)
    path = make_results(results, "undecided")
    data, rows = load_results(path)
    rows = list(rows)
    for row in rows:
        row["prediction"].update(label="TIE", score_a=0.5, score_b=0.5)
    data["metrics"] = compute_metrics(judged_from_rows(rows), n_bootstrap=50, seed=0)
    write_results(path, data, rows)
    build_site(results, tmp_path / "site")
    page.goto((tmp_path / "site" / "index.html").as_uri())
    table = page.locator("table.board")

    table.get_by_role("button", name="acc w/ tie", exact=True).click()  # starts high-to-low: now low-to-high
    assert [number(t) for t in column(table, 3)] == [55.8, 63.3, 93.3, 100.0]
    header = table.get_by_role("button", name="decisive acc", exact=True)
    header.click()
    assert column(table, 5)[-1] == "n/a" and column(table, 5)[0].startswith("100.0 ")
    header.click()
    assert column(table, 5)[-1] == "n/a" and column(table, 5)[2].startswith("100.0 ")
    assert page.errors == []


def test_runs_on_another_split_stay_after_the_main_split_whichever_column_is_sorted(tmp_path, page):
    from pigbench.synthetic_results import make_results

    results = tmp_path / "results"
    make_results(results, "beta", accuracy=0.6)
    make_results(results, "gamma", accuracy=0.7)
    make_results(results, "alpha", variant="seed1", seed=1, accuracy=0.95)  # better, but on another split
    build_site(results, tmp_path / "site")
    page.goto((tmp_path / "site" / "index.html").as_uri())
    table = page.locator("table.board")

    def names():
        return [text.split()[0] for text in column(table, 0)]

    assert names() == ["gamma", "beta", "alpha"]
    header = table.get_by_role("button", name="acc w/ tie", exact=True)
    header.click()
    assert names() == ["beta", "gamma", "alpha"]
    header.click()
    assert names() == ["gamma", "beta", "alpha"]
    table.get_by_role("button", name="Evaluator", exact=True).click()
    assert names() == ["beta", "gamma", "alpha"] and page.errors == []


def test_no_page_is_wider_than_a_phone(site, page):
    """At a phone's width (390 px) every page fits: wide tables scroll inside themselves and the
    histogram shrinks, so the page itself never scrolls sideways."""
    page.set_viewport_size({"width": 390, "height": 844})
    for path in sorted(site.rglob("*.html")):
        page.goto(path.as_uri())
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path.relative_to(site)
    assert page.errors == []


def test_without_javascript_the_filter_is_hidden_and_tables_keep_their_names(site, chromium):
    """The filter needs the script: hidden without it, shown with it. Tables are named by their
    dataset's heading and best values say "best" to assistive technology either way."""
    for javascript in (False, True):
        context = chromium.new_context(java_script_enabled=javascript)
        page = context.new_page()
        page.goto((site / "index.html").as_uri())
        assert page.get_by_label("Show").is_visible() is javascript
        board = page.get_by_role("table", name="synth", exact=True)
        assert board.get_by_role("button", name="acc w/ tie", exact=True).is_visible()
        assert board.locator("td.best").first.inner_text().endswith("(best)")
        context.close()
