"""An on-disk cache of API responses keyed by a hash of the request, so a resumed run pays for no
request twice. SQLite in WAL mode; safe to share between the threads of one process.

Only successful responses are stored. The key covers everything sent in the request body (model,
messages with their images, decoding parameters) and nothing else: not the server URL (the same
request answered by another replica of the same model is the same answer) and never the API key.

A stored entry that is not a JSON object (damaged on disk) is dropped and counts as not cached, so
its request is sent again. A file that is not a usable SQLite database, or that another process keeps
locked, is a :class:`RequestCacheError` naming it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from pigbench.evaluator import RequirementError
from pigbench.sqlite_wal import use_wal


def request_key(body: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a request body."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class RequestCacheError(RequirementError):
    """The request cache file cannot be used; the message names it and says what to do."""


class RequestCache:
    """``get(key)`` / ``put(key, response)`` over one SQLite file, created on first use.

    Opening checks the whole file (``PRAGMA quick_check``): a damaged or locked file raises
    :class:`RequestCacheError` then, not one sample at a time."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._warned = False
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            use_wal(self._db)
            self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL)")
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                # its first problem, in one line (an index or page problem comes as several)
                raise sqlite3.DatabaseError(f"database disk image is malformed: {'; '.join(problems[0].splitlines())}")
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error(exc) from None

    def get(self, key: str) -> Optional[dict[str, Any]]:
        """The stored response, or None. An entry that is not a JSON object (damaged) is deleted and
        counts as not cached; a file that fails to read raises :class:`RequestCacheError`."""
        try:
            with self._lock:
                row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        if row is None:
            return None
        try:
            response = json.loads(row[0])
        except ValueError:
            response = None
        if isinstance(response, dict):
            return response
        with self._lock, contextlib.suppress(sqlite3.Error):  # if this fails, put() replaces the entry
            self._db.execute("DELETE FROM responses WHERE key = ? AND response = ?", (key, row[0]))
        return None

    def put(self, key: str, response: Mapping[str, Any]) -> None:
        """Store ``response``. A failed write (the file locked by another process, a full disk) only
        leaves it uncached, to be requested again on a rerun; the first failure is a warning."""
        try:
            with self._lock:
                self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                                 (key, json.dumps(response), time.time()))
        except sqlite3.Error as exc:
            if not self._warned:
                self._warned = True
                warnings.warn(f"request cache {self.path}: cannot store a response ({exc}); responses not "
                              "stored are requested again on a rerun", RuntimeWarning, stacklevel=2)

    def _error(self, exc: sqlite3.Error) -> RequestCacheError:
        """The one-line error for ``exc``, raised by this cache's file."""
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return RequestCacheError(f"request cache {self.path} is locked by another process ({exc}); "
                                     "wait for it to finish, or pass another --cache-dir")
        return RequestCacheError(f"request cache {self.path} cannot be read ({exc}); "
                                 "delete it; its responses will be requested again")

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
