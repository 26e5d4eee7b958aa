"""The annotation app in headless Chromium (Playwright): two annotators, mouse and keyboard, reloads, refusals.

Screenshots go to ``test-artifacts/build/`` (git-ignored). Needs Debian's ``chromium`` and the
``playwright`` package (never ``playwright install``: the system Chromium is launched by path, see
the ``chromium`` fixture in conftest.py).
"""

import json
import threading
import time
from pathlib import Path

import pytest

from build_fixtures import workspace_with_sets
from pigbench.build.annotate.app import make_annotate_app
from pigbench.build.annotate.store import AnnotationStore
from pigbench.build.sets import kept_sets
from pigbench.build.webapp import make_local_server

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api", reason="browser tests need `pip install playwright`").expect
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "build"


@pytest.fixture(scope="module")
def browser(chromium):
    """The shared headless Chromium (conftest ``chromium``: skips with the reason when it is missing)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return chromium


@pytest.fixture
def app(tmp_path):
    ws = workspace_with_sets(tmp_path / "ws", 8)
    store = AnnotationStore(ws.annotate_db)
    admin_token = store.initialize(3, 3, seed=5, open_signup=False)
    store.sync_sets(kept_sets(ws))
    invites = dict(store.create_invites(2))
    server = make_local_server(make_annotate_app(store, ws.root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"base": f"http://127.0.0.1:{server.server_port}", "store": store, "invites": invites, "admin": admin_token,
           "ws": ws}
    server.shutdown()
    server.server_close()


def sign_in(browser, app, annotator_id):
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(app["base"] + "/")
    page.fill("#credential", app["invites"][annotator_id])
    page.click("#signin")
    page.wait_for_url("**/task")
    wait_ready(page)
    return page


def wait_ready(page):
    """Wait until the ranking page's script has attached its handlers (keys typed earlier are lost)."""
    page.wait_for_selector("body[data-ready='true']")


def badges(page):
    return [page.inner_text(f"#card-{s} .rank") for s in "ABCD"]


def test_two_annotators_rank_by_mouse_and_keyboard_and_lose_nothing_on_reload(browser, app):
    store = app["store"]
    alice = sign_in(browser, app, "annotator001")
    assert alice.inner_text("#progress-text") == "Set 1 of 3"
    first = json.loads(alice.get_attribute("#task", "data-task"))["set_id"]

    # mouse: drag A and B onto rank 1 (a tie), C onto rank 3, D onto rank 4
    for card, tier in (("A", 1), ("B", 1), ("C", 3), ("D", 4)):
        alice.drag_and_drop(f"#card-{card}", f"#tier-{tier}")
    assert badges(alice) == ["1", "1", "3", "4"]
    alice.screenshot(path=str(ARTIFACTS / "01_alice_ranked_by_mouse.png"), full_page=True)
    alice.click("#submit")
    expect(alice.locator("#progress-text")).to_have_text("Set 2 of 3")
    wait_ready(alice)
    row, = store.own_rankings("annotator001")
    assert row["set_id"] == first and row["screen_ranks"] == [1, 1, 3, 4]
    assert sorted(row["display_order"]) == [0, 1, 2, 3]

    # keyboard: Tab to the first image, keys 1-4 place it, arrow keys move, Enter submits
    for _ in range(10):
        alice.keyboard.press("Tab")
        if alice.evaluate("document.activeElement.id") == "card-A":
            break
    for card, key in (("A", "2"), ("B", "1"), ("C", "3"), ("D", "3")):
        expect(alice.locator(f"#card-{card}")).to_be_focused()
        alice.keyboard.press(key)
        expect(alice.locator(f"#card-{card} .rank")).not_to_have_text("")
        alice.keyboard.press("ArrowRight")
    assert badges(alice) == ["2", "1", "3", "3"]
    # a screen reader hears each image's rank with its name (the aria-label stands for the card's content)
    assert alice.get_by_role("figure", name="image A, rank 2", exact=True).is_visible()
    assert alice.get_by_role("figure", name="image D, rank 3", exact=True).is_visible()
    alice.screenshot(path=str(ARTIFACTS / "02_alice_ranked_by_keyboard.png"), full_page=True)
    alice.keyboard.press("Enter")
    expect(alice.locator("#progress-text")).to_have_text("Set 3 of 3")
    wait_ready(alice)
    assert [r["screen_ranks"] for r in store.own_rankings("annotator001")] == [[1, 1, 3, 4], [2, 1, 3, 3]]

    # a second annotator works at the same time in another browser context
    bob = sign_in(browser, app, "annotator002")
    for card, tier in (("A", 4), ("B", 3), ("C", 2), ("D", 1)):
        bob.drag_and_drop(f"#card-{card}", f"#tier-{tier}")
    bob.click("#submit")
    expect(bob.locator("#progress-text")).to_have_text("Set 2 of 3")

    # reload in the middle of set 3: both submitted sets stay, the page resumes at set 3
    alice.keyboard.press("Tab")
    alice.focus("#card-B")
    alice.keyboard.press("1")
    alice.reload()
    wait_ready(alice)
    assert alice.inner_text("#progress-text") == "Set 3 of 3"
    assert alice.get_attribute("#progress", "value") == "2" and badges(alice) == ["", "", "", ""]
    alice.screenshot(path=str(ARTIFACTS / "03_alice_after_reload.png"), full_page=True)
    assert len(store.own_rankings("annotator001")) == 2 and len(store.own_rankings("annotator002")) == 1
    again = sign_in(browser, app, "annotator001")  # a new browser, as after closing the window
    assert again.inner_text("#progress-text") == "Set 3 of 3"


def test_invalid_rankings_and_other_annotators_data_are_refused(browser, app):
    store = app["store"]
    alice = sign_in(browser, app, "annotator001")
    for card, tier in (("A", 1), ("B", 2), ("C", 3), ("D", 4)):
        alice.drag_and_drop(f"#card-{card}", f"#tier-{tier}")
    alice.click("#submit")
    expect(alice.locator("#progress-text")).to_have_text("Set 2 of 3")
    alice_sets = {a.set_id for a in store.assignments("annotator001")}

    bob = sign_in(browser, app, "annotator002")
    bob_set = json.loads(bob.get_attribute("#task", "data-task"))["set_id"]
    # a tampered submission (the page itself cannot build it) is refused with the reason, shown on the page
    bob.route("**/api/rankings", lambda route: route.continue_(
        post_data=json.dumps({"set_id": bob_set, "ranks": [1, 1, 2, 3]})))
    for card, tier in (("A", 1), ("B", 1), ("C", 3), ("D", 4)):
        bob.drag_and_drop(f"#card-{card}", f"#tier-{tier}")
    bob.click("#submit")
    bob.wait_for_selector("#message.error")
    assert "ranking refused" in bob.inner_text("#message") and "[1, 1, 3, 4]" in bob.inner_text("#message")
    bob.screenshot(path=str(ARTIFACTS / "04_bob_invalid_ranking_refused.png"), full_page=True)
    bob.unroute("**/api/rankings")
    assert store.own_rankings("annotator002") == []

    fetch = """async ([method, url, body]) => {
        const r = await fetch(url, {method, headers: {"Content-Type": "application/json"},
                                    body: body === null ? undefined : JSON.stringify(body)});
        return [r.status, await r.text()];
    }"""
    status, text = bob.evaluate(fetch, ["GET", "/api/annotators/annotator001/rankings", None])
    assert status == 403 and "only your own" in text
    status, _ = bob.evaluate(fetch, ["POST", "/api/rankings", {"set_id": sorted(alice_sets)[0], "ranks": [1, 2, 3, 4]}])
    assert status == 403
    status, _ = bob.evaluate(fetch, ["POST", "/api/rankings", {"set_id": bob_set, "ranks": [1, 2, 3, 5]}])
    assert status == 400
    assert bob.evaluate(fetch, ["GET", "/admin/export/rankings.jsonl", None])[0] == 403
    response = bob.goto(app["base"] + f"/img/{sorted(alice_sets)[0]}/0")
    assert response.status == 403
    bob.screenshot(path=str(ARTIFACTS / "05_bob_refused_alices_image.png"))
    bob.goto(app["base"] + "/admin")
    assert bob.is_visible("#token") and "annotator001" not in bob.content()
    assert [r["screen_ranks"] for r in store.own_rankings("annotator001")] == [[1, 2, 3, 4]]
    assert store.own_rankings("annotator002") == []

    admin = browser.new_context().new_page()
    admin.goto(app["base"] + "/admin")
    admin.fill("#token", app["admin"])
    admin.click("button[type=submit]")
    admin.wait_for_selector("#annotators")
    assert "1 rankings submitted" in admin.inner_text("#summary")
    admin.screenshot(path=str(ARTIFACTS / "06_admin_progress.png"), full_page=True)


def test_curator_keeps_and_drops_sets_on_the_review_page(browser, tmp_path):
    from pigbench.build.review import make_review_app
    from pigbench.build.sets import decisions

    ws = workspace_with_sets(tmp_path / "ws", 3, keep=0)
    ws.review.unlink()
    server = make_local_server(make_review_app(ws))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.goto(f"http://127.0.0.1:{server.server_port}/")
        first, second = page.locator("section.set").nth(0), page.locator("section.set").nth(1)
        first.locator("button.keep").click()
        expect(first.locator(".status")).to_have_text("Saved: keep")
        second.locator("button.drop").click()
        expect(second.locator(".status")).to_have_text("say why the set is dropped")
        second.locator(".reason").fill("variants too similar to split preferences")
        second.locator("button.drop").click()
        expect(second.locator(".status")).to_have_text("Saved: drop")
        expect(page.locator("#n-keep")).to_have_text("1")
        page.screenshot(path=str(ARTIFACTS / "07_review_page.png"), full_page=True)
        saved = decisions(ws)
        ids = [s.get_attribute("data-set-id") for s in (first, second)]
        assert saved[ids[0]]["decision"] == "keep"
        assert (saved[ids[1]]["decision"], saved[ids[1]]["reason"]) == ("drop", "variants too similar to split preferences")
        page.reload()
        expect(page.locator("section.set.drop")).to_have_count(1)
    finally:
        server.shutdown()
        server.server_close()


def test_a_phone_annotator_ranks_by_tapping_and_a_failed_submission_keeps_the_ranking(browser, app):
    """On a 390 px phone the page was 721 px wide (the rank rows off screen), phones have neither keys 1-4
    nor, in many browsers, drag-and-drop, and a submission that failed (server unreachable) left
    "Saving…" on screen with the button disabled for good."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    page = context.new_page()
    page.goto(app["base"] + "/")
    page.fill("#credential", app["invites"]["annotator001"])
    page.click("#signin")
    page.wait_for_url("**/task")
    wait_ready(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for card, tier in (("A", 2), ("B", 1), ("C", 2), ("D", 4)):
        page.tap(f"#card-{card}")
        page.tap(f"#tier-{tier}")
    assert badges(page) == ["2", "1", "2", "4"]
    page.tap("#card-D")
    page.tap(".pool")  # taken back
    assert badges(page) == ["2", "1", "2", ""]
    page.tap("#card-D")
    page.tap("#tier-4")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "08_phone_ranked_by_tapping.png"), full_page=True)

    page.route("**/api/rankings", lambda route: route.abort())
    page.tap("#submit")
    expect(page.locator("#message.error")).to_contain_text("could not be reached")
    expect(page.locator("#submit")).to_be_enabled()
    assert badges(page) == ["2", "1", "2", "4"] and app["store"].own_rankings("annotator001") == []
    page.unroute("**/api/rankings")
    page.tap("#submit")
    expect(page.locator("#progress-text")).to_have_text("Set 2 of 3")
    row, = app["store"].own_rankings("annotator001")
    assert row["screen_ranks"] == [2, 1, 2, 4]
    context.close()


def test_elapsed_time_of_a_set_covers_the_page_loads_before_a_reload(browser, app):
    """elapsed_ms ran from the last page load only, so a reload mid-set dropped the time spent before it.
    The set's start is now kept in the tab across reloads and forgotten once the set is saved."""
    store = app["store"]
    before_sign_in = time.monotonic()
    page = sign_in(browser, app, "annotator001")
    first_ready = time.monotonic()
    first = json.loads(page.get_attribute("#task", "data-task"))["set_id"]
    page.wait_for_timeout(1500)  # time spent on the set before the reload
    page.reload()
    wait_ready(page)
    for card, tier in (("A", 1), ("B", 2), ("C", 3), ("D", 4)):
        page.drag_and_drop(f"#card-{card}", f"#tier-{tier}")
    clicked = time.monotonic()
    page.click("#submit")
    expect(page.locator("#progress-text")).to_have_text("Set 2 of 3")
    wait_ready(page)
    saved = time.monotonic()
    row, = store.own_rankings("annotator001")
    assert row["set_id"] == first
    # the first load's script ran before first_ready, the submission after clicked
    assert 1000 * (clicked - first_ready) <= row["elapsed_ms"] <= 1000 * (saved - before_sign_in)
    kept = page.evaluate("Object.keys(sessionStorage)")
    assert not any(first in key for key in kept) and len(kept) == 1  # the saved set's start is gone, set 2's is kept

    # a start kept for more than a day (a set left open for another day) is not counted: the time restarts
    second = json.loads(page.get_attribute("#task", "data-task"))["set_id"]
    key, = kept
    assert second in key
    page.evaluate("key => sessionStorage.setItem(key, String(Date.now() - 3 * 24 * 3600 * 1000))", key)
    before_reload = time.monotonic()  # the reloaded page's script starts its clock after this, before it is ready
    page.reload()
    wait_ready(page)
    for card, tier in (("A", 1), ("B", 1), ("C", 3), ("D", 4)):
        page.drag_and_drop(f"#card-{card}", f"#tier-{tier}")
    page.click("#submit")
    expect(page.locator("#progress-text")).to_have_text("Set 3 of 3")
    assert store.own_rankings("annotator001")[1]["elapsed_ms"] <= 1000 * (time.monotonic() - before_reload)


def test_a_set_withdrawn_while_on_screen_moves_on_to_the_next_set(browser, app):
    """The curator drops the set on an annotator's screen and runs `annotate init`: Submit answers 410, and the
    page moves on to the next set (Set 1 of 3: the withdrawn set is replaced, with a note) instead of 'Not saved ...
    try Submit again'."""
    store = app["store"]
    alice = sign_in(browser, app, "annotator001")
    on_screen = json.loads(alice.get_attribute("#task", "data-task"))["set_id"]
    store.sync_sets([s for s in kept_sets(app["ws"]) if s.set_id != on_screen])
    for card, tier in (("A", 1), ("B", 2), ("C", 3), ("D", 4)):
        alice.drag_and_drop(f"#card-{card}", f"#tier-{tier}")
    alice.click("#submit")
    # the note is on the next page only ("Set 1 of 3" reads the same before and after: the set is replaced)
    expect(alice.locator("#withdrawn")).to_contain_text("withdrawn from your list")
    expect(alice.locator("#progress-text")).to_have_text("Set 1 of 3")
    wait_ready(alice)
    assert json.loads(alice.get_attribute("#task", "data-task"))["set_id"] != on_screen
    assert "withdrawn from your list" in alice.inner_text("#withdrawn")
    assert store.own_rankings("annotator001") == []
