"""Writing a whole file so that no reader ever sees part of it."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file of this write alone (pid, thread id and a
    random part: processes on hosts sharing the folder may have the same pid and thread id), then
    rename: concurrent writers of one file never see each other's temporary file, a reader never sees
    a partial file, and the file's mode follows the umask. A write that fails (a full disk) leaves no
    temporary file; its OSError is raised."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
