"""Switching an SQLite file to WAL mode when several processes may create it at the same time.

The prediction stores and the request caches are SQLite files in WAL mode, shared by the runs
that use the same cache directory. SQLite answers ``PRAGMA journal_mode=WAL`` with "database is
locked" at once, without waiting its busy timeout, when another connection holds the file's lock
while it switches: two runs of one config started together (or the ranks of a data-parallel run)
then failed one of them, about one start in five, though neither was writing yet.
"""

from __future__ import annotations

import sqlite3
from time import monotonic, sleep

RETRY_S = 0.05


def use_wal(db: sqlite3.Connection) -> None:
    """Put ``db``'s file in WAL mode (a no-op for a file in WAL mode already), retrying while another
    connection holds its lock for as long as ``db`` waits for any other lock (its busy timeout,
    ``sqlite3.connect``'s ``timeout``: 5 s by default); then the "database is locked" error, like
    any other :class:`sqlite3.Error`, is raised."""
    deadline = monotonic() + db.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or monotonic() >= deadline:
                raise
        sleep(RETRY_S)
