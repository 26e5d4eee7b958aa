"""pigbench/sqlite_wal.use_wal: a locked file is retried for the connection's busy timeout, no longer;
any other SQLite error is raised at once."""

import sqlite3
import time

import pytest

from pigbench.sqlite_wal import use_wal


def test_a_lock_held_past_the_busy_timeout_is_raised_after_that_timeout_not_a_thousand_times_it(tmp_path):
    path = tmp_path / "new.sqlite"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    db = sqlite3.connect(path, timeout=0.2)  # busy_timeout 200 ms
    start = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(db)
    assert 0.2 <= time.monotonic() - start < 3
    other.execute("ROLLBACK")
    use_wal(db)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


class FailingConnection:
    """A connection whose switch to WAL mode fails with ``error``, counting the tries."""

    def __init__(self, error: str) -> None:
        self.error, self.tries = error, 0

    def execute(self, sql: str):
        if sql == "PRAGMA busy_timeout":
            return sqlite3.connect(":memory:", timeout=5).execute(sql)
        self.tries += 1
        raise sqlite3.OperationalError(self.error)


def test_an_error_other_than_a_lock_is_raised_at_once_not_retried_for_the_busy_timeout():
    db = FailingConnection("disk I/O error")
    start = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        use_wal(db)
    assert db.tries == 1 and time.monotonic() - start < 1
