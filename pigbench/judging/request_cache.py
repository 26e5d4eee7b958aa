"""An on-disk cache of API responses keyed by a hash of the request, so a resumed run pays for no
request twice. SQLite in WAL mode; safe to share between the threads of one process.

Only successful responses are stored. The key covers everything sent in the request body (model,
messages with their images, decoding parameters) and nothing else: not the server URL (the same
request answered by another replica of the same model is the same answer) and never the API key.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Union


def request_key(body: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a request body."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class RequestCache:
    """``get(key)`` / ``put(key, response)`` over one SQLite file, created on first use."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL)")

    def get(self, key: str) -> Optional[dict[str, Any]]:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, response: Mapping[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", (key, json.dumps(response), time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
