"""Writing a whole file so that no reader ever sees part of it, and removing the temporary files
of writers that were killed mid-write."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
"""This host, as temporary file names carry it: a writer's pid is checked only on its own host."""
STALE_AGE = 24 * 3600.0
"""Seconds after its last change when a temporary file is stale whoever wrote it (a writer of another
host, whose pid cannot be checked here, or a pid reused since)."""
TEMP_NAME = re.compile(r"\..+\.(?P<host>[0-9a-f]{8})\.(?P<pid>[0-9]+)\.[0-9]+\.[0-9a-f]{12}\.tmp")
"""The temporary files of :func:`write_atomic`."""


def temp_path(path: Path) -> Path:
    """A temporary name next to ``path`` for this write alone: host, pid, thread id and a random part
    (processes on hosts sharing the folder may have the same pid and thread id)."""
    return path.with_name(f".{path.name}.{HOST}.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:12]}.tmp")


def write_atomic(path: Path, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file of this write alone (:func:`temp_path`),
    then rename: concurrent writers of one file never see each other's temporary file, a reader never
    sees a partial file, and the file's mode follows the umask; with ``fsync`` the bytes reach the
    disk before the rename (a power loss leaves the old file or the new one). A write that fails (a
    full disk) leaves no temporary file; its OSError is raised. A killed writer leaves its temporary
    file, which :func:`remove_stale_temps` removes."""
    tmp = temp_path(path)
    try:
        tmp.write_bytes(data)
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temps(directory: Path, *patterns: re.Pattern[str]) -> list[str]:
    """Remove the temporary files in ``directory`` (names that one of ``patterns``, by default
    :data:`TEMP_NAME`, fully matches; its group ``pid`` and, if it matched, ``host`` name the writer)
    that no live writer holds: written on this host by a process that is gone, or not changed for
    :data:`STALE_AGE` seconds. One listing of the folder;
    returns the names removed. Never fails: a folder that is missing or unreadable, or a file removed or
    renamed meanwhile, is skipped."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    removed = []
    now = time.time()
    patterns = patterns or (TEMP_NAME,)
    for entry in entries:
        match = next((m for pattern in patterns if (m := pattern.fullmatch(entry.name))), None)
        if not match:
            continue
        try:
            here = match.groupdict().get("host") == HOST
            if (here and not _alive(int(match.group("pid")))) or now - entry.stat().st_mtime >= STALE_AGE:
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (assumed where it cannot be checked)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":  # os.kill(pid, 0) would send CTRL_C_EVENT on Windows
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):  # no such pid can exist
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True
