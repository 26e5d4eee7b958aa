"""The annotation database (SQLite, WAL, synchronous=FULL): every submission is durable when acknowledged.

Tables: ``meta`` (settings), ``sets`` (every set ever offered, with ``retired``: NULL while the set is kept, else
the time ``annotate init`` found it no longer kept; a retired set is never assigned again, an annotator's unranked
assignment of it leaves their list and is replaced (:meth:`AnnotationStore.top_up`), and rankings already given of
it stay), ``annotators`` (id and the SHA-256
of their invite code), ``sessions`` (SHA-256 of session tokens, with role annotator or admin and creation
time; a session expires ``session_days`` after it was created, and an expired one is deleted at the next sign-in;
sessions of an older database, which recorded their creation time too, expire by it),
``assignments`` (annotator, set, position, screen order, and ``replaced``: NULL, else the time a top-up gave the
annotator another set in place of this unranked one of a retired set, which then stays withdrawn from them even if
the set is kept again, so that their sets never outnumber their share) and ``rankings`` (one final ranking per
annotator and set, both in screen order and by variant index, with the SHA-256 of the four image
files ranked, by variant index, so that export can tell a ranking of images rendered again since;
NULL in rankings stored before this column existed). A database of an older version gets the columns it lacks
(:data:`ADDED_COLUMNS`, NULL in existing rows) the first time a store opens it; nothing is removed.
Secrets (invite codes, session and admin tokens) are stored only as hashes.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from pigbench.build.annotate.assignment import annotator_rng, display_order, least_covered, share_size
from pigbench.build.ranking import to_variant_order, validate_ranks
from pigbench.build.sets import ImageSet

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sets (
  set_id TEXT PRIMARY KEY, base_prompt TEXT NOT NULL, category TEXT NOT NULL, images TEXT NOT NULL,
  retired REAL);
CREATE TABLE IF NOT EXISTS annotators (
  annotator_id TEXT PRIMARY KEY, invite_hash TEXT UNIQUE, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
  token_hash TEXT PRIMARY KEY, role TEXT NOT NULL CHECK (role IN ('annotator', 'admin')),
  annotator_id TEXT REFERENCES annotators, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS assignments (
  annotator_id TEXT NOT NULL REFERENCES annotators, set_id TEXT NOT NULL REFERENCES sets,
  position INTEGER NOT NULL, display_order TEXT NOT NULL, assigned REAL NOT NULL, replaced REAL,
  PRIMARY KEY (annotator_id, set_id));
CREATE TABLE IF NOT EXISTS rankings (
  annotator_id TEXT NOT NULL, set_id TEXT NOT NULL, screen_ranks TEXT NOT NULL, ranks TEXT NOT NULL,
  display_order TEXT NOT NULL, elapsed_ms INTEGER, submitted REAL NOT NULL, images_sha256 TEXT,
  PRIMARY KEY (annotator_id, set_id), FOREIGN KEY (annotator_id, set_id) REFERENCES assignments);
"""
ADDED_COLUMNS = (("rankings", "images_sha256", "TEXT"), ("sets", "retired", "REAL"), ("assignments", "replaced", "REAL"))
"""Columns (table, name, type) added to the schema since its first version: an older database gets them on opening."""
ANNOTATOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DEFAULT_SETTINGS: dict[str, Any] = {"min_sets": 5, "max_sets": 15, "seed": 0, "open_signup": False}
"""The settings of a new database, for those ``annotate init`` is not given."""
DEFAULT_SESSION_DAYS = 14.0
# Whether an assignment (a) is withdrawn from its annotator: unranked (no r), and its set (s) retired or it replaced.
_WITHDRAWN = "(r.set_id IS NULL AND (s.retired IS NOT NULL OR a.replaced IS NOT NULL))"
# An annotator's assignments with their set's prompt, images and retirement, and their ranking if submitted.
_ASSIGNMENTS = ("SELECT a.*, s.base_prompt, s.images, s.retired, r.ranks FROM assignments a JOIN sets s USING (set_id) "
                "LEFT JOIN rankings r USING (annotator_id, set_id) WHERE a.annotator_id = ?")
MAX_ELAPSED_MS = 2**63 - 1  # SQLite's largest INTEGER; a larger (forged) time on a set is stored as unknown (NULL)


class AccessDenied(PermissionError):
    """The signed-in annotator may not touch this set or these data."""


class AlreadySubmitted(ValueError):
    """This annotator already submitted a ranking for this set; rankings are final."""


class SetRetired(ValueError):
    """The set was withdrawn from this annotator before they ranked it: retired (no longer kept in review), or
    retired and replaced (:meth:`AnnotationStore.top_up`)."""


@dataclass(frozen=True)
class SetChanges:
    """What :meth:`AnnotationStore.sync_sets` changed: sets added, retired and kept again, and sets offered now."""
    added: int
    retired: int
    restored: int
    offered: int


@dataclass(frozen=True)
class ProgressSummary:
    """The totals of :meth:`AnnotationStore.progress` that the admin page and ``annotate status`` both
    show: sets offered and retired, rankings submitted (those of retired sets too, which export leaves
    out, counted apart), and the fewest and most annotators assigned to and ranking an offered set."""
    annotators: int
    offered: int
    retired: int
    rankings: int
    retired_rankings: int
    assigned: tuple[int, int]  # (fewest, most) annotators assigned to an offered set; (0, 0) when none is
    ranked: tuple[int, int]  # (fewest, most) annotators who ranked an offered set; (0, 0) when none is

    @classmethod
    def of(cls, progress: dict[str, Any]) -> "ProgressSummary":
        offered = [s for s in progress["sets"] if not s["retired"]]
        assigned, ranked = [s["assigned"] for s in offered], [s["ranked"] for s in offered]
        rankings = sum(s["ranked"] for s in progress["sets"])
        return cls(len(progress["annotators"]), len(offered), len(progress["sets"]) - len(offered), rankings,
                   rankings - sum(ranked), (min(assigned, default=0), max(assigned, default=0)),
                   (min(ranked, default=0), max(ranked, default=0)))


@dataclass(frozen=True)
class Assignment:
    annotator_id: str
    set_id: str
    position: int
    display_order: tuple[int, ...]
    base_prompt: str
    images: tuple[str, ...]  # by variant index, relative to the workspace
    ranks: Optional[tuple[int, ...]]  # by variant index, once submitted
    retired: bool  # the set is no longer kept (see AnnotationStore.sync_sets)
    replaced: bool  # a top-up gave another set in its place while it was retired: withdrawn for good

    @property
    def withdrawn(self) -> bool:
        """Not ranked, and retired or replaced: out of the annotator's "Set k of n"."""
        return self.ranks is None and (self.retired or self.replaced)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class AnnotationStore:
    """All reads and writes of ``annotate.sqlite``. Safe to share between server threads. A session
    is valid for ``session_days`` after its sign-in; a lifetime that is not positive (NaN included) is a
    ``ValueError`` naming ``serve``'s ``--session-days``, which passes it here unchecked."""

    def __init__(self, path: Path, session_days: float = DEFAULT_SESSION_DAYS) -> None:
        if not session_days > 0:
            raise ValueError(f"--session-days (the sign-in lifetime) must be positive, got {session_days:g}")
        self.path = Path(path)
        self.session_seconds = session_days * 86400.0
        self._migrated = False
        self._migrate_lock = threading.Lock()

    @contextmanager
    def connect(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection; with ``write`` the block runs in one IMMEDIATE transaction, committed on exit.
        The first connection of a store adds the columns an older database lacks (:data:`ADDED_COLUMNS`)."""
        if not self._migrated:
            self._migrate()
        with self._connect(write) as conn:
            yield conn

    def _migrate(self) -> None:
        """Add the :data:`ADDED_COLUMNS` that an existing database lacks (NULL in its rows), in one transaction."""
        with self._migrate_lock:
            if self._migrated:
                return
            if self.path.is_file():
                with self._connect(write=True) as conn:
                    for table, column, kind in ADDED_COLUMNS:
                        have = {c["name"] for c in conn.execute(f"PRAGMA table_info({table})")}
                        if have and column not in have:  # no columns: the table is not created yet (initialize)
                            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            self._migrated = True

    @contextmanager
    def _connect(self, write: bool) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")
            if write:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            else:
                yield conn
        finally:
            conn.close()

    # -- set-up ---------------------------------------------------------------------------------------
    def initialize(self, min_sets: Optional[int] = None, max_sets: Optional[int] = None, seed: Optional[int] = None,
                   open_signup: Optional[bool] = None) -> Optional[str]:
        """Create the schema and settings; returns a new admin token on first creation, else None.

        A setting given as None keeps its stored value (:data:`DEFAULT_SETTINGS` on first creation), so
        running ``init`` again to add newly kept sets changes only the settings it is given."""
        given = {"min_sets": min_sets, "max_sets": max_sets, "seed": seed, "open_signup": open_signup}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)
        token = None
        with self.connect(write=True) as conn:
            settings = {**DEFAULT_SETTINGS, **self._settings(conn), **{k: v for k, v in given.items() if v is not None}}
            if not 1 <= settings["min_sets"] <= settings["max_sets"]:
                raise ValueError(f"need 1 <= min sets <= max sets, got {settings['min_sets']}, {settings['max_sets']}")
            if conn.execute("SELECT 1 FROM meta WHERE key = 'admin_token_hash'").fetchone() is None:
                token = secrets.token_urlsafe(24)
                conn.execute("INSERT INTO meta VALUES ('admin_token_hash', ?)", (_hash(token),))
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             [(k, json.dumps(v)) for k, v in settings.items()])
        return token

    def settings(self) -> dict[str, Any]:
        with self.connect() as conn:
            return self._settings(conn)

    @staticmethod
    def _settings(conn: sqlite3.Connection) -> dict[str, Any]:
        rows = conn.execute("SELECT key, value FROM meta WHERE key != 'admin_token_hash'")
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def sync_sets(self, sets: Sequence[ImageSet]) -> SetChanges:
        """Offer exactly these sets (the kept ones): new ones are added, a retired one among them is offered again,
        and an offered one not among them is retired (kept with its assignments and rankings, never assigned
        again). Nothing is deleted."""
        ids = {s.set_id for s in sets}
        now = time.time()
        with self.connect(write=True) as conn:
            known = {r["set_id"]: r["retired"] for r in conn.execute("SELECT set_id, retired FROM sets")}
            new = [s for s in sets if s.set_id not in known]
            conn.executemany("INSERT INTO sets (set_id, base_prompt, category, images) VALUES (?, ?, ?, ?)",
                             [(s.set_id, s.base_prompt, s.category, json.dumps(list(s.images))) for s in new])
            restored = [i for i in ids if known.get(i) is not None]
            conn.executemany("UPDATE sets SET retired = NULL WHERE set_id = ?", [(i,) for i in restored])
            retired = [i for i, when in known.items() if when is None and i not in ids]
            conn.executemany("UPDATE sets SET retired = ? WHERE set_id = ?", [(now, i) for i in retired])
        return SetChanges(len(new), len(retired), len(restored), len(ids))

    def create_invites(self, count: int, prefix: str = "annotator") -> list[tuple[str, str]]:
        """``count`` new annotators with secret invite codes: [(annotator id, code)]; ids already taken are skipped."""
        out = []
        with self.connect(write=True) as conn:
            i = conn.execute("SELECT COUNT(*) FROM annotators").fetchone()[0]
            while len(out) < count:
                i += 1
                annotator_id, code = f"{prefix}{i:03d}", secrets.token_urlsafe(9)
                if conn.execute("SELECT 1 FROM annotators WHERE annotator_id = ?", (annotator_id,)).fetchone():
                    continue  # an open sign-up already took this id
                conn.execute("INSERT INTO annotators VALUES (?, ?, ?)", (annotator_id, _hash(code), time.time()))
                out.append((annotator_id, code))
        return out

    def reset_admin_token(self) -> str:
        token = secrets.token_urlsafe(24)
        with self.connect(write=True) as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('admin_token_hash', ?)", (_hash(token),))
        return token

    # -- sessions -------------------------------------------------------------------------------------
    def sign_in(self, credential: str) -> Optional[str]:
        """A session token for the annotator with this invite code (or, with open sign-up, this id unless an
        invited annotator has it), after filling their share of sets (:meth:`_assign`); None if refused."""
        credential = credential.strip()
        if not credential:
            return None
        with self.connect(write=True) as conn:
            row = conn.execute("SELECT annotator_id FROM annotators WHERE invite_hash = ?",
                               (_hash(credential),)).fetchone()
            if row is None and self._settings(conn).get("open_signup") and ANNOTATOR_ID.fullmatch(credential):
                taken = conn.execute("SELECT invite_hash FROM annotators WHERE annotator_id = ?", (credential,)).fetchone()
                if taken is None or taken["invite_hash"] is None:  # an invited annotator signs in with their code only
                    conn.execute("INSERT OR IGNORE INTO annotators VALUES (?, NULL, ?)", (credential, time.time()))
                    row = {"annotator_id": credential}
            if row is None:
                return None
            self._assign(conn, row["annotator_id"])
            return self._new_session(conn, "annotator", row["annotator_id"])

    def admin_sign_in(self, token: str) -> Optional[str]:
        with self.connect(write=True) as conn:
            stored = conn.execute("SELECT value FROM meta WHERE key = 'admin_token_hash'").fetchone()
            if stored is None or not secrets.compare_digest(stored["value"], _hash(token.strip())):
                return None
            return self._new_session(conn, "admin", None)

    def session(self, token: Optional[str], role: str) -> Optional[str]:
        """The annotator id (or "admin") of a valid session token of ``role``, else None (also when
        the session expired)."""
        if not token:
            return None
        with self.connect() as conn:
            row = conn.execute("SELECT role, annotator_id, created FROM sessions WHERE token_hash = ?",
                               (_hash(token),)).fetchone()
        if row is None or row["role"] != role or row["created"] < time.time() - self.session_seconds:
            return None
        return row["annotator_id"] or "admin"

    def sign_out(self, token: str) -> None:
        with self.connect(write=True) as conn:
            conn.execute("DELETE FROM sessions WHERE token_hash = ?", (_hash(token),))

    def _new_session(self, conn: sqlite3.Connection, role: str, annotator_id: Optional[str]) -> str:
        """A new session, valid for ``session_days`` from now; expired sessions are deleted."""
        token, now = secrets.token_urlsafe(32), time.time()
        conn.execute("DELETE FROM sessions WHERE created < ?", (now - self.session_seconds,))
        conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (_hash(token), role, annotator_id, now))
        return token

    # -- assignment and rankings ----------------------------------------------------------------------
    def top_up(self, annotator_id: str) -> int:
        """Give the annotator sets until their share is full again (see :meth:`_assign`); returns how many were added."""
        with self.connect(write=True) as conn:
            return self._assign(conn, annotator_id)

    def _assign(self, conn: sqlite3.Connection, annotator_id: str) -> int:
        """Fill the annotator's share, inside the caller's write transaction; returns how many sets were added.

        Their share is k sets, k uniform in [min_sets, max_sets] drawn from their generator (so the same k each
        time while the settings stay). Their sets are those of "Set k of n" (:meth:`assignments`: offered, or
        ranked); while fewer than k, they get the least covered offered sets they do not have yet
        (:func:`~pigbench.build.annotate.assignment.least_covered`): all k at first sign-in, and replacements of
        unranked sets retired since. A set they have (ranked, withdrawn or not) is never assigned to them again. Each
        set added replaces one of their withdrawn, not yet replaced assignments (first in position order) for good,
        so a retired set kept again comes back to their list only where that keeps them within k."""
        settings = self._settings(conn)
        rng = annotator_rng(settings["seed"], annotator_id)
        share = share_size(settings["min_sets"], settings["max_sets"], rng)
        held = [_assignment(r) for r in conn.execute(_ASSIGNMENTS + " ORDER BY a.position", (annotator_id,))]
        missing = share - sum(not a.withdrawn for a in held)
        if missing <= 0:
            return 0
        if held:  # a top-up: a generator of its own, so it does not repeat the first assignment's draws
            rng = annotator_rng(settings["seed"], annotator_id, len(held))
        load = {r["set_id"]: r["n"] for r in conn.execute(  # annotators who may rank it (none it was replaced for)
            "SELECT s.set_id, COUNT(a.annotator_id) AS n FROM sets s "
            "LEFT JOIN assignments a ON a.set_id = s.set_id AND a.replaced IS NULL "
            "WHERE s.retired IS NULL AND s.set_id NOT IN (SELECT set_id FROM assignments WHERE annotator_id = ?) "
            "GROUP BY s.set_id ORDER BY s.set_id", (annotator_id,))}
        start = max((a.position for a in held), default=-1) + 1
        now = time.time()
        chosen = least_covered(load, missing, rng)
        for position, set_id in enumerate(chosen, start=start):
            conn.execute("INSERT INTO assignments (annotator_id, set_id, position, display_order, assigned) "
                         "VALUES (?, ?, ?, ?, ?)", (annotator_id, set_id, position, json.dumps(display_order(rng)), now))
        stood_in_for = [a.set_id for a in held if a.withdrawn and not a.replaced][:len(chosen)]
        conn.executemany("UPDATE assignments SET replaced = ? WHERE annotator_id = ? AND set_id = ?",
                         [(now, annotator_id, set_id) for set_id in stood_in_for])
        return len(chosen)

    def assignments(self, annotator_id: str, withdrawn: bool = False) -> list[Assignment]:
        """This annotator's sets in presentation order, with their rankings once submitted: those not withdrawn (see
        :attr:`Assignment.withdrawn`; the retired ones they ranked stay), their "Set k of n". ``withdrawn``: instead,
        their withdrawn assignments (of sets retired before they ranked them, or replaced)."""
        return self.assignments_and_withdrawn(annotator_id)[1 if withdrawn else 0]

    def assignments_and_withdrawn(self, annotator_id: str) -> tuple[list[Assignment], list[Assignment]]:
        """:meth:`assignments` and ``assignments(withdrawn=True)`` from one read of the database."""
        with self.connect() as conn:
            rows = conn.execute(_ASSIGNMENTS + " ORDER BY a.position", (annotator_id,)).fetchall()
        kept, withdrawn = [], []
        for a in map(_assignment, rows):
            (withdrawn if a.withdrawn else kept).append(a)
        return kept, withdrawn

    def assignment(self, annotator_id: str, set_id: str) -> Assignment:
        """The annotator's assignment of ``set_id``, retired or not; :class:`AccessDenied` if the set is not theirs."""
        with self.connect() as conn:
            row = conn.execute(_ASSIGNMENTS + " AND a.set_id = ?", (annotator_id, set_id)).fetchone()
        if row is None:
            raise AccessDenied("this set is not assigned to you")
        return _assignment(row)

    def submit(self, annotator_id: str, set_id: str, screen_ranks: Any, elapsed_ms: Optional[int] = None,
               images_sha256: Optional[Sequence[Optional[str]]] = None) -> tuple[int, ...]:
        """Validate and store a ranking given in screen order; returns it by variant index.
        ``images_sha256``: the SHA-256 of the four image files ranked, by variant index (None: not known).

        Raises :class:`AccessDenied` (set not assigned to this annotator), :class:`AlreadySubmitted`,
        :class:`SetRetired` (not stored: the set was retired before this ranking, or replaced while it was)
        or :class:`~pigbench.build.ranking.InvalidRanking`.
        """
        screen = validate_ranks(screen_ranks)
        with self.connect(write=True) as conn:
            row = conn.execute("SELECT a.display_order, a.replaced, s.retired FROM assignments a JOIN sets s USING (set_id) "
                               "WHERE a.annotator_id = ? AND a.set_id = ?", (annotator_id, set_id)).fetchone()
            if row is None:
                raise AccessDenied("this set is not assigned to you")
            done = conn.execute("SELECT 1 FROM rankings WHERE annotator_id = ? AND set_id = ?", (annotator_id, set_id))
            if done.fetchone():
                raise AlreadySubmitted("you already ranked this set")
            if row["retired"] is not None:
                raise SetRetired("this set was withdrawn from the study before you ranked it; it is not needed")
            if row["replaced"] is not None:
                raise SetRetired("this set was withdrawn from you before you ranked it, and another given in its "
                                 "place; it is not needed")
            order = json.loads(row["display_order"])
            ranks = to_variant_order(screen, order)
            conn.execute("INSERT INTO rankings (annotator_id, set_id, screen_ranks, ranks, display_order, elapsed_ms, "
                         "submitted, images_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (annotator_id, set_id, json.dumps(screen), json.dumps(ranks), json.dumps(order),
                          elapsed_ms if type(elapsed_ms) is int and 0 <= elapsed_ms <= MAX_ELAPSED_MS else None,
                          time.time(),
                          None if images_sha256 is None else json.dumps(list(images_sha256))))
        return ranks

    def own_rankings(self, annotator_id: str) -> list[dict[str, Any]]:
        with self.connect() as conn:
            rows = conn.execute("SELECT * FROM rankings WHERE annotator_id = ? ORDER BY submitted", (annotator_id,))
            return [_ranking_json(r) for r in rows]

    def all_rankings(self) -> list[dict[str, Any]]:
        """Every submitted ranking (admin and export only)."""
        with self.connect() as conn:
            return [_ranking_json(r) for r in conn.execute("SELECT * FROM rankings ORDER BY annotator_id, submitted")]

    def progress(self) -> dict[str, Any]:
        """Per annotator: assigned and done as in their "Set k of n" (see :meth:`assignments`), ``withdrawn`` (sets
        retired before they ranked them, or replaced), last submission; per set: assigned (annotators who may rank it:
        not those it was replaced for), ranked, ``retired`` (bool)."""
        with self.connect() as conn:
            annotators = [dict(r) for r in conn.execute(
                f"SELECT n.annotator_id, COUNT(CASE WHEN NOT {_WITHDRAWN} THEN a.set_id END) "
                "AS assigned, COUNT(r.set_id) AS done, "
                f"COUNT(CASE WHEN {_WITHDRAWN} THEN a.set_id END) AS withdrawn, "
                "MAX(r.submitted) AS last "
                "FROM annotators n LEFT JOIN assignments a USING (annotator_id) LEFT JOIN sets s USING (set_id) "
                "LEFT JOIN rankings r ON r.annotator_id = a.annotator_id AND r.set_id = a.set_id "
                "GROUP BY n.annotator_id ORDER BY n.annotator_id")]
            sets = [{**dict(r), "retired": bool(r["retired"])} for r in conn.execute(
                "SELECT s.set_id, s.category, s.base_prompt, COUNT(CASE WHEN a.replaced IS NULL THEN a.annotator_id END) "
                "AS assigned, "
                "COUNT(r.annotator_id) AS ranked, s.retired IS NOT NULL AS retired "
                "FROM sets s LEFT JOIN assignments a USING (set_id) "
                "LEFT JOIN rankings r ON r.annotator_id = a.annotator_id AND r.set_id = a.set_id "
                "GROUP BY s.set_id ORDER BY s.set_id")]
        return {"annotators": annotators, "sets": sets}


def _assignment(row: sqlite3.Row) -> Assignment:
    return Assignment(row["annotator_id"], row["set_id"], row["position"], tuple(json.loads(row["display_order"])),
                      row["base_prompt"], tuple(json.loads(row["images"])),
                      tuple(json.loads(row["ranks"])) if row["ranks"] else None, row["retired"] is not None,
                      row["replaced"] is not None)


def _ranking_json(row: sqlite3.Row) -> dict[str, Any]:
    return {"annotator_id": row["annotator_id"], "set_id": row["set_id"], "ranks": json.loads(row["ranks"]),
            "screen_ranks": json.loads(row["screen_ranks"]), "display_order": json.loads(row["display_order"]),
            "elapsed_ms": row["elapsed_ms"], "submitted": row["submitted"],
            "images_sha256": json.loads(row["images_sha256"])
            if "images_sha256" in row.keys() and row["images_sha256"] is not None else None}
