"""The judges' request cache: a damaged entry is requested again; a damaged or locked file is a
one-line error naming it, never a traceback or a wrong answer."""

from __future__ import annotations

import functools
import sqlite3

import pytest

from pigbench.evaluator import RequirementError
from pigbench.judging.request_cache import RequestCache, RequestCacheError, request_key

RESPONSE = {"choices": [{"message": {"content": "<answer>B</answer>"}}]}


def _filled(path, n=1):
    cache = RequestCache(path)
    for i in range(n):
        cache.put(request_key({"i": i}), {**RESPONSE, "padding": "x" * 2000})
    cache.close()


def test_responses_survive_a_new_instance(tmp_path):
    _filled(tmp_path / "r.sqlite", 3)
    again = RequestCache(tmp_path / "r.sqlite")
    assert len(again) == 3 and again.get(request_key({"i": 1}))["choices"] == RESPONSE["choices"]
    assert again.get(request_key({"i": 9})) is None


@pytest.mark.parametrize("stored", ["{not json", "[1, 2]", "null", ""])
def test_a_damaged_entry_is_dropped_and_counts_as_not_cached(tmp_path, stored):
    path = tmp_path / "r.sqlite"
    _filled(path, 2)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE responses SET response = ? WHERE key = ?", (stored, request_key({"i": 0})))
    cache = RequestCache(path)
    assert cache.get(request_key({"i": 0})) is None
    assert len(cache) == 1  # the row is gone
    assert cache.get(request_key({"i": 1})) is not None
    cache.put(request_key({"i": 0}), RESPONSE)  # answered again
    assert cache.get(request_key({"i": 0})) == RESPONSE


@pytest.mark.parametrize("damage", ["garbage", "truncated", "page-overwritten", "last-page-cut"])
def test_a_damaged_file_is_one_error_naming_it(tmp_path, damage):
    path = tmp_path / "requests" / "judge.sqlite"
    _filled(path, 50)
    data = path.read_bytes()
    page = 4096  # sqlite's default page size
    path.write_bytes({"garbage": b"not a database" * 100, "truncated": data[:5000],  # both fail as the file opens
                      "page-overwritten": data[: 10 * page] + b"\xa5" * page + data[11 * page :],  # found by the check on opening
                      # a full disk's short last page: the check's answer is several lines
                      "last-page-cut": data[:-3000],
                      }[damage])
    with pytest.raises(RequestCacheError) as info:
        RequestCache(path)
    assert isinstance(info.value, RequirementError)  # the CLI prints it as `error: ...`, exit 2
    message = str(info.value)
    assert str(path) in message and "delete it" in message and "\n" not in message


@pytest.fixture
def short_lock_wait(monkeypatch):
    """Another process's lock is waited for 0.1 s instead of sqlite's 5 s."""
    monkeypatch.setattr(sqlite3, "connect", functools.partial(sqlite3.connect, timeout=0.1))


def test_a_file_locked_by_another_process_is_one_error_naming_it(tmp_path, short_lock_wait):
    path = tmp_path / "r.sqlite"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE t (x)")
    other.execute("BEGIN EXCLUSIVE")  # not yet in WAL mode: the lock keeps every other connection out
    with pytest.raises(RequestCacheError, match="is locked by another process") as info:
        RequestCache(path)
    assert str(path) in str(info.value)
    other.execute("ROLLBACK")
    assert len(RequestCache(path)) == 0  # usable once the lock is gone


def test_a_write_while_another_process_holds_the_lock_warns_and_goes_on(tmp_path, short_lock_wait):
    path = tmp_path / "r.sqlite"
    cache = RequestCache(path)
    cache.put("a", RESPONSE)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # a write transaction: reads go on, writes wait
    with pytest.warns(RuntimeWarning, match="cannot store a response") as record:
        cache.put("b", RESPONSE)
        cache.put("c", RESPONSE)
    assert len(record) == 1 and str(path) in str(record[0].message)  # warned once
    assert cache.get("a") == RESPONSE and cache.get("b") is None
    other.execute("ROLLBACK")
    cache.put("b", RESPONSE)
    assert cache.get("b") == RESPONSE


def test_a_file_another_process_is_creating_is_waited_for(tmp_path, held_until_first_retry):
    """Two runs starting together on one cache directory: SQLite refuses the switch to WAL mode at
    once ("database is locked", no busy wait) while the other holds the new file's lock, and one
    of the runs failed. The switch is retried; here the lock goes at the first retry."""
    path = tmp_path / "r.sqlite"
    waits = held_until_first_retry(path)
    cache = RequestCache(path)
    assert len(waits) == 1 and len(cache) == 0
    assert cache._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
