"""A JSON index (an object of entries) that grows by appending, safe for several processes at once.

``NAME.json`` holds the object, always written whole (temporary file, then rename:
:func:`~pigbench.atomic_file.write_atomic`); ``NAME.jsonl`` holds the entries added since, one
``{"key": entry}`` line each; ``NAME.lock`` (empty) is what adders lock.

Adding entries (:meth:`AppendIndex.add`) holds an exclusive ``fcntl.flock`` on the lock file and
appends the entries' lines to the log, so an addition costs its own lines and concurrent adders
lose nothing. When the log would grow past the main file, the adder compacts instead: it writes
main file + log + its entries as the new main file, then removes the log; each entry is thus
rewritten a bounded number of times on average, however many small additions there are.

Reading (:meth:`AppendIndex.read`) takes no lock: the log is read before the main file, and a
compaction writes the new main file before it removes the log (never truncating it), so every entry
added before the read began is in one or the other. A log line that does not parse or has no
entry's shape (the torn last line of an adder killed mid-write, or one still being written) is
ignored; a main file that does not parse or holds an entry of the wrong shape counts as empty and
is replaced at the next compaction. Later entries win: the log over the main file, a later line over
an earlier one.

Without ``fcntl`` (Windows) no lock is taken: two processes adding at once may lose one's
additions (compaction racing an append), as before this index had a lock.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from pigbench.atomic_file import write_atomic

try:
    import fcntl
except ImportError:  # Windows: adders go unlocked (see the module docstring)
    fcntl = None  # type: ignore[assignment]


class AppendIndex:
    """The index at ``path`` (``NAME.json``; its log and lock file beside it), whose entries are
    those ``entry_ok`` accepts; see the module docstring."""

    def __init__(self, path: Path, entry_ok: Callable[[Any], bool]) -> None:
        self.path = path
        self.log_path = path.with_suffix(".jsonl")
        self.lock_path = path.with_suffix(".lock")
        self.entry_ok = entry_ok

    def read(self) -> dict[str, Any]:
        """Every entry: the main file's (none if it is missing or damaged), updated by the log's lines."""
        added = self._read_log()  # before the main file: see the module docstring
        try:
            entries = json.loads(self.path.read_bytes())
            if not (isinstance(entries, dict) and all(self.entry_ok(e) for e in entries.values())):
                entries = {}
        except (OSError, ValueError):
            entries = {}
        entries.update(added)
        return entries

    def add(self, entries: Mapping[str, Any]) -> None:
        """Append ``entries`` to the log, or compact (main file + log + ``entries`` written as the main
        file, the log removed) when the log would outgrow the main file. Raises the OSError of a failed
        write; a partial log line it leaves is ignored by readers."""
        if not entries:
            return
        data = "".join(json.dumps({k: e}) + "\n" for k, e in entries.items()).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            logged = max(file_size(self.log_path), 0)
            if logged + len(data) > file_size(self.path):
                merged = self.read()
                merged.update(entries)
                write_atomic(self.path, json.dumps(merged).encode())
                self.log_path.unlink(missing_ok=True)
                return
            with self.log_path.open("ab+") as log:
                if logged > 0:  # an adder killed mid-line: start on a line of our own
                    log.seek(-1, os.SEEK_END)
                    if log.read(1) != b"\n":
                        data = b"\n" + data
                log.write(data)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the exclusive lock (read access to the lock file is enough); nothing without fcntl."""
        if fcntl is None:
            yield
            return
        fd = os.open(self.lock_path, os.O_RDONLY | os.O_CREAT, 0o666)  # mode: the umask's, as the other files
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _read_log(self) -> dict[str, Any]:
        added: dict[str, Any] = {}
        try:
            with self.log_path.open("rb") as log:
                for line in log:
                    with contextlib.suppress(ValueError):
                        row = json.loads(line)
                        if isinstance(row, dict) and all(self.entry_ok(e) for e in row.values()):
                            added.update(row)
        except OSError:  # no log (nothing added since the last compaction) or unreadable: nothing added
            pass
        return added


def file_size(path: Path) -> int:
    """The file's size; -1 if it is missing or unreadable (so that any addition compacts into a missing
    main file, and no recorded size matches a missing image)."""
    try:
        return path.stat().st_size
    except OSError:
        return -1
