"""The on-disk cache of user contexts, one append-only JSON-lines file per reasoner configuration.

A user context depends on the reasoner (model, adapter, dtype, image budget, lengths, prompt
version, and the stamp of its local files: :meth:`PIGRewardConfig.reasoner_fingerprint`, which names the file) and on the user's ordered reference pairs (prompts and
image content hashes: :func:`context_key`). Each line is one user::

    {"key": "<sha256>", "user_id": "u17", "rationales": ["...", "..."], "context": "1. Prompt: ..."}

and, when a server said who wrote a rationale (another ``model`` than asked for, a
``system_fingerprint``: :attr:`~pigbench.judging.backend.Generation.served`), ``"served"``: one
record per rationale, in order (``{}`` for one it said nothing about).

Lines are appended (one ``write`` per batch, safe for concurrent ranks) and synced as each batch of users is done, so a killed run keeps every
finished context and a resumed run asks the reasoner only for the users it lacks. A truncated last
line (a kill mid-write) is ignored when loading.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from pigbench.protocol import ReferencePair


@dataclass(frozen=True)
class UserContext:
    """One user's rationales (one per reference pair, in order) and the context text built from them."""

    user_id: str
    rationales: tuple[str, ...]
    text: str
    served: tuple[dict[str, str], ...] = ()  # per rationale, the server's record; () when no server said anything


def context_key(user_id: str, references: Sequence[ReferencePair]) -> str:
    """Identifies a user's references: user id, and each pair's prompt and image content hashes."""
    payload = [user_id] + [[r.prompt, r.preferred.content_hash, r.rejected.content_hash] for r in references]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


class UserContextCache:
    """User contexts by :func:`context_key`; persisted under ``directory`` (memory only if None)."""

    def __init__(self, directory: Optional[Path], fingerprint: str) -> None:
        self.path = Path(directory) / f"{fingerprint}.jsonl" if directory is not None else None
        self._items: dict[str, UserContext] = {}
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        with path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                    self._items[row["key"]] = UserContext(row["user_id"], tuple(row["rationales"]), row["context"],
                                                       tuple(row.get("served", ())))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> Optional[UserContext]:
        return self._items.get(key)

    def put_many(self, items: Mapping[str, UserContext]) -> None:
        """Store and append to the file (flushed and synced before returning)."""
        self._items.update(items)
        if self.path is None or not items:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"key": k, "user_id": c.user_id, "rationales": list(c.rationales), "context": c.text,
                                    **({"served": list(c.served)} if c.served else {})}) + "\n" for k, c in items.items())
        data = lines.encode("utf-8")
        if self.path.exists() and self.path.stat().st_size > 0 and not self._ends_with_newline():
            data = b"\n" + data  # a previous kill left a partial line: keep it on its own line
        # One write() on an O_APPEND descriptor: ranks of a data-parallel run appending to the same
        # file never interleave their lines.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _ends_with_newline(self) -> bool:
        assert self.path is not None
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
