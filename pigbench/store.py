"""Per-run prediction store: what makes a killed run resume without loss or duplicates.

One SQLite file per run, named by the run key (evaluator, config hash, split fingerprint before
``--limit``, dataset options, swap), in WAL mode with ``synchronous=FULL``: each batch is one committed transaction, so
a process killed at any point (SIGKILL included) leaves exactly the batches that were committed. A
sample id is the primary key, so a prediction is never stored twice. A prediction that failed
(one with an ``error``: a server that was down, a file that could not be read) is not *done*: a
resumed run predicts it again, and the new prediction replaces it. A successful one is final.
The store records its run key: a store of another run copied or renamed to this run's path (a
synced or restored cache) is refused, never mixed in (its sample ids are this run's, its A/B
orders and references may not be). A store written before the key was recorded takes the key of
the run that opens it.
Runs of one config started together may share a store file: they create it together
(:mod:`pigbench.sqlite_wal`), a batch waits for the other run's write, and a sample both predict
keeps the first successful prediction.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator, Optional

from pigbench.protocol import Prediction
from pigbench.sqlite_wal import use_wal


def default_cache_dir() -> str:
    """The cache root where a run names none: ``$PIGBENCH_CACHE``, else ``.pigbench_cache``. It holds
    the prediction stores (``runs/``), the served request caches (``requests/``), PIGReward's user
    contexts and Pick-a-Pic's default image store (``images/``)."""
    return os.environ.get("PIGBENCH_CACHE", ".pigbench_cache")


def _failed(payload: str) -> str:
    """SQL: the prediction stored in column ``payload`` failed (it has an ``error``)."""
    return f"json_extract({payload}, '$.error') IS NOT NULL"


# an upsert clause: a new row for a stored sample id replaces the stored row only if that one failed
_REPLACE_FAILED = f"ON CONFLICT(sample_id) DO UPDATE SET payload = excluded.payload WHERE {_failed('predictions.payload')}"


class StoreError(RuntimeError):
    """A store file cannot be used: damaged, locked by another process, read-only, or on a full disk.
    The message names the file and what to do."""


@contextlib.contextmanager
def _errors_named(path: Path) -> Iterator[None]:
    """Turn SQLite's errors on ``path`` into a :class:`StoreError` naming the file and what to do."""
    try:
        yield
    except sqlite3.Error as exc:
        if "locked" in str(exc):
            hint = "another run is probably writing to it: wait for that run, or give this one another --cache-dir"
        elif "disk is full" in str(exc) or "disk I/O error" in str(exc):  # the file is fine: keep it
            hint = "the disk is full or failing; the batches committed so far are kept: free space and run again"
        elif "readonly" in str(exc):  # the file is fine: keep it
            hint = "the batches committed so far are kept: make the file and its folder writable and run again"
        else:
            hint = "move it aside or delete it, and its predictions are computed again"
        raise StoreError(f"{path}: cannot use this prediction store ({exc}); {hint}") from None


class PredictionStore:
    """Predictions of one run, keyed by sample id. Every SQLite error is a :class:`StoreError`."""

    def __init__(self, path: str | Path, run_key: Optional[str] = None) -> None:
        """Open (or create) the store at ``path``. With ``run_key``, a store recording another run's
        key is a :class:`StoreError`; one recording none (new, or from before keys were recorded)
        records this one."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _errors_named(self.path):
            self._db = sqlite3.connect(self.path)
            use_wal(self._db)
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("CREATE TABLE IF NOT EXISTS predictions (sample_id TEXT PRIMARY KEY, payload TEXT NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            self._db.commit()
            if run_key is not None:
                self._check_run_key(run_key)
        self._file_id = self._current_file_id()

    def _check_run_key(self, run_key: str) -> None:
        """Record ``run_key`` in a store that records none; StoreError if it records another."""
        query = "SELECT value FROM meta WHERE name = 'run_key'"
        row = self._db.execute(query).fetchone()
        if row is None:  # read first: a store that records the key opens read-only too
            with self._db:  # OR IGNORE: another run may record its key meanwhile
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('run_key', ?)", (run_key,))
            row = self._db.execute(query).fetchone()
        if row[0] != run_key:
            self._db.close()
            raise StoreError(f"{self.path}: this prediction store holds the predictions of another run (run key "
                             f"{row[0]}), not of this one; move it aside (it was copied or renamed to this run's "
                             "path) and run again")

    def _current_file_id(self) -> tuple[int, int] | None:
        """(device, inode) of the file at ``path``; None when there is none. StoreError when it cannot
        be checked (permissions changed, a stale network file handle)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot check the prediction store ({exc}); the batches committed so far "
                             "are kept: restore access to it and run the same command again") from None
        return st.st_dev, st.st_ino

    def done_ids(self) -> set[str]:
        """Sample ids with a successful prediction (failed ones are to be predicted again)."""
        with _errors_named(self.path):
            return {row[0] for row in self._db.execute(f"SELECT sample_id FROM predictions WHERE NOT {_failed('payload')}")}

    def add(self, predictions: Iterable[Prediction]) -> None:
        """Store a batch atomically; it replaces a failed prediction of the same sample, never a successful one.
        Raises :class:`StoreError` once the file was deleted or replaced (SQLite would write on, unseen, to
        the deleted file, and the run would end with its predictions missing)."""
        rows = [(p.sample_id, json.dumps(p.to_json(), sort_keys=True)) for p in predictions]
        if self._current_file_id() != self._file_id:
            raise StoreError(f"{self.path}: this prediction store was deleted or replaced while the run wrote to it, "
                             "so the predictions it held are gone; run the same command again to predict them")
        with _errors_named(self.path), self._db:
            self._db.executemany(f"INSERT INTO predictions VALUES (?, ?) {_REPLACE_FAILED}", rows)

    def absorb(self, path: str | Path) -> None:
        """Copy every prediction of another store file into this one, atomically, as :meth:`add` would."""
        with _errors_named(Path(path)):
            self._db.execute("ATTACH DATABASE ? AS other", (str(path),))
            try:
                with self._db:
                    self._db.execute(f"INSERT INTO predictions SELECT sample_id, payload FROM other.predictions WHERE true "
                                     f"{_REPLACE_FAILED}")
            finally:
                self._db.execute("DETACH DATABASE other")

    def load(self) -> dict[str, dict]:
        """Stored predictions as their JSON dicts (see :meth:`Prediction.to_json`), by sample id."""
        with _errors_named(self.path):
            return {sid: json.loads(p) for sid, p in self._db.execute("SELECT * FROM predictions")}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "PredictionStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
