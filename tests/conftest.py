import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test never touches the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import toy  # noqa: E402,F401  registers the toy-* plug-ins used by the core tests

import pytest  # noqa: E402

from pigbench.registry import adapters, evaluators  # noqa: E402


@pytest.fixture(autouse=True)
def _registries_as_before():
    """What a test registers (an inline plug-in, a deliberately broken class) is gone after it, so
    that no other test's ``pigbench list`` or lookup depends on the order tests run in. The
    catalogues are loaded first: a snapshot taken before would lose the built-ins, whose module
    registers them only on its first import."""
    saved = []
    for registry in (evaluators, adapters):
        registry.names()  # loads the built-ins and entry points once
        saved.append((registry, dict(registry._entries), registry._loaded))
    yield
    for registry, entries, loaded in saved:
        registry._entries, registry._loaded = entries, loaded


# ---- shared by the report, leaderboard and browser tests -------------------------------------
import shutil  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def results_tree(tmp_path_factory):
    """(results dir, notable files) built once: see ``synthetic_results.build_results_tree``."""
    from synthetic_results import build_results_tree

    root = tmp_path_factory.mktemp("results_tree")
    return root / "results", build_results_tree(root / "results", root / "cache")


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium (Debian's package, or $PIGBENCH_CHROMIUM) driven by Playwright.
    Skips with the reason when Playwright or the browser is missing (`python -m playwright
    install` cannot download one here: install the `chromium` Debian package)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    path = os.environ.get("PIGBENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no Chromium found: apt-get install chromium, or set PIGBENCH_CHROMIUM to its path")
    with sync_api.sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        except sync_api.Error as exc:
            pytest.skip(f"Chromium at {path} does not start: {exc}")
        yield browser
        browser.close()


@pytest.fixture
def held_until_first_retry(monkeypatch):
    """``hold(path)``: another connection takes the lock of a new SQLite file at ``path`` (another
    process creating it) and releases it when :func:`pigbench.sqlite_wal.use_wal` first sleeps to
    retry; returns the list of those sleeps."""
    import sqlite3

    from pigbench import sqlite_wal

    def hold(path):
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        waits = []

        def sleep(seconds):
            waits.append(seconds)
            other.execute("COMMIT")

        monkeypatch.setattr(sqlite_wal, "sleep", sleep)
        return waits

    return hold
